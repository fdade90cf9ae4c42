import BrokerModel

/// What a broker needs to start. `petrel serve` fills it from flags, environment and defaults.
public struct BrokerConfiguration: Sendable {
    public var dataDirectory: String = "./data"
    public var nodeID = NodeID(1)
    /// Host and port clients use to reach this broker (shown in `/v1/cluster`).
    public var advertisedHost = "127.0.0.1"
    public var advertisedPort = 8082
    public var limits = Limits.defaults
    /// Configs a new topic starts from (before the request's own `configs`).
    public var topicDefaults = TopicConfig()
    /// How often retention runs over every partition.
    public var retentionCheckIntervalMilliseconds: Int64 = 60_000
    public var version = "0.1.0"
    /// Open files this process may hold (RLIMIT_NOFILE), if known. Each partition holds at least
    /// three (log, offset index, time index of its active segment); topic creation and growth that
    /// would not fit, next to the HTTP connections, are refused rather than failing half-way.
    public var openFilesMax: Int?

    public init() {}
}

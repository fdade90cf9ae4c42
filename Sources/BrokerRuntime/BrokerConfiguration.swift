import ClusterState
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
    /// Bounds on consumer groups (members, groups, assignment and commit sizes).
    public var groupLimits = GroupLimits.defaults
    /// REST Proxy v2 consumer instances expire after this long without a request (Confluent's
    /// consumer.instance.timeout.ms, 5 minutes).
    public var restProxyInstanceTimeoutMilliseconds: Int64 = 300_000
    /// How often retention runs over every partition.
    public var retentionCheckIntervalMilliseconds: Int64 = 60_000
    public var version = "0.1.0"
    /// Open files this process may hold (RLIMIT_NOFILE), if known. Each partition holds at least
    /// three (log, offset index, time index of its active segment); topic creation and growth that
    /// would not fit, next to the HTTP connections, are refused rather than failing half-way.
    public var openFilesMax: Int?
    /// Set to run as one broker of a cluster (partitions and metadata replicated by Raft).
    public var cluster: ClusterConfiguration?

    public init() {}
}

/// Cluster mode: present when the broker runs with `--members`. Absent = the single-node broker.
public struct ClusterConfiguration: Sendable {
    /// Every initial member's internal address (`host:port`), this node included. They are the
    /// voters of the metadata log.
    public var members: [NodeID: String]
    /// This node's internal address as peers reach it.
    public var internalAddress: String
    public var rack: String?
    /// One Raft tick on the monotonic clock. Election timeout = `electionTicks` ..< 2 × that.
    public var tickMilliseconds = 100
    public var electionTicks = 10
    /// How long an acks=all/acks=1 produce waits for replication before it is answered 503 (outcome unknown).
    public var produceTimeoutMilliseconds: Int64 = 10_000
    /// How long a request forwarded to another broker may take beyond its own wait.
    public var forwardTimeoutMilliseconds = 15_000
    /// How long a broker may stay silent before the controller fences it (not alive, no new replicas).
    public var fenceAfterMilliseconds: Int64 = 6_000

    public init(members: [NodeID: String], internalAddress: String, rack: String? = nil) {
        self.members = members
        self.internalAddress = internalAddress
        self.rack = rack
    }
}

import BrokerModel
import LogStorage

/// A topic's settings, validated. Names and meanings are Kafka's so a Kafka or Redpanda user
/// recognises them; unknown names are rejected (422) rather than silently ignored.
public struct TopicConfig: Sendable, Equatable, Codable {
    public var retentionMilliseconds: Int64 = 7 * 24 * 3600 * 1000
    public var retentionBytes: Int64 = -1
    public var segmentBytes: Int = 1 << 30
    public var segmentMilliseconds: Int64 = 7 * 24 * 3600 * 1000
    /// Largest record batch the topic accepts (Kafka's default, 1 MiB + batch overhead).
    public var maxMessageBytes: Int = 1_048_588
    public var cleanupPolicy: String = "delete"

    public init() {}

    public static let names = ["cleanup.policy", "max.message.bytes", "retention.bytes", "retention.ms", "segment.bytes", "segment.ms"]

    /// Smallest segment that still holds one maximal batch; Kafka's floor is 14 bytes, which only
    /// produces a file per record. A 1 MiB floor keeps a misconfigured topic from creating millions of files.
    public static let segmentBytesMin = 1 << 20
    public static let segmentMillisecondsMin: Int64 = 1_000

    /// Applies `changes` (config name → value as text) on top of `self`. Throws `.invalidConfig`
    /// naming the first bad entry.
    public func applying(_ changes: [(String, String)]) throws(BrokerError) -> TopicConfig {
        var config = self
        for (name, value) in changes {
            func integer(min: Int64, max: Int64 = .max) throws(BrokerError) -> Int64 {
                guard let v = Int64(value), v >= min, v <= max else {
                    throw .invalidConfig("config '\(name)' must be an integer in \(min)...\(max), got '\(value)'")
                }
                return v
            }
            switch name {
            case "retention.ms": config.retentionMilliseconds = try integer(min: -1)
            case "retention.bytes": config.retentionBytes = try integer(min: -1)
            case "segment.bytes": config.segmentBytes = Int(try integer(min: Int64(TopicConfig.segmentBytesMin), max: Int64(Int32.max)))
            case "segment.ms": config.segmentMilliseconds = try integer(min: TopicConfig.segmentMillisecondsMin)
            case "max.message.bytes": config.maxMessageBytes = Int(try integer(min: 1024, max: 64 << 20))
            case "cleanup.policy":
                switch value {
                case "delete": config.cleanupPolicy = value
                case "compact", "compact,delete", "delete,compact":
                    throw .invalidConfig("cleanup.policy '\(value)' is not supported yet; only 'delete' is")
                default: throw .invalidConfig("cleanup.policy must be 'delete', got '\(value)'")
                }
            default:
                throw .invalidConfig("unknown config '\(name)'; known configs: \(TopicConfig.names.joined(separator: ", "))")
            }
        }
        return config
    }

    /// The configs as Kafka-style name → value text, sorted by name.
    public var entries: [(name: String, value: String)] {
        [
            ("cleanup.policy", cleanupPolicy),
            ("max.message.bytes", String(maxMessageBytes)),
            ("retention.bytes", String(retentionBytes)),
            ("retention.ms", String(retentionMilliseconds)),
            ("segment.bytes", String(segmentBytes)),
            ("segment.ms", String(segmentMilliseconds)),
        ]
    }

    var logConfig: LogConfig {
        var c = LogConfig()
        c.segmentBytes = segmentBytes
        c.segmentMilliseconds = segmentMilliseconds
        c.retentionMilliseconds = retentionMilliseconds
        c.retentionBytes = retentionBytes
        return c
    }
}

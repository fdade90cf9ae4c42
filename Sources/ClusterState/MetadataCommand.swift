import BrokerModel

/// What a client or the controller's own failure detector asks of the cluster metadata.
/// ``decide(_:state:seed:limits:)`` validates a command against the current state and turns it into
/// records; only those records change the state.
public enum MetadataCommand: Equatable, Sendable {
    /// A broker starts (or restarts) and announces itself.
    case registerBroker(id: NodeID, rack: String?, publicAddress: String, internalAddress: String)
    /// Forget a broker that hosts no replicas (typically after it was decommissioned).
    case unregisterBroker(NodeID)
    /// The controller stopped hearing from the broker (idempotent).
    case fenceBroker(NodeID)
    /// The controller hears from a fenced broker again (idempotent).
    case unfenceBroker(NodeID)
    /// `replicationFactor` nil = min(3, eligible brokers). `configs` are opaque except
    /// `min.insync.replicas` (1...replicationFactor; default a majority).
    case createTopic(name: TopicName, partitions: Int32, replicationFactor: Int?, configs: [String: String])
    case deleteTopic(TopicName)
    /// Sets and removes config keys; a key may not be in both.
    case alterConfigs(topic: TopicName, set: [String: String], remove: [String])
    /// Grows the topic to `totalCount` partitions (partitions never shrink, as in Kafka).
    case createPartitions(topic: TopicName, totalCount: Int32)
    /// Explicit target replica lists (order = preference). Changing the replica count is allowed, down
    /// to the topic's `min.insync.replicas`.
    case reassignPartitions(topic: TopicName, targets: [PartitionID: [NodeID]])
    /// The runtime saw every adding replica catch up: the partition drops its removing replicas.
    case completeReassignment(topic: TopicName, partition: PartitionID)
    /// Abandons a running reassignment: the adding replicas are dropped, the removing ones stay.
    case cancelReassignment(topic: TopicName, partition: PartitionID)
    /// Marks the broker decommissioning and plans a move of each of its replicas to another broker.
    case decommissionBroker(NodeID)
    /// Plans the fewest replica moves that even out replica counts over alive brokers (e.g. after
    /// adding a broker), then reorders replica lists (no data moves) to even out preferred leaders.
    case balanceReplicas
}

/// Why a command was refused. Nothing was changed.
public enum MetadataError: Error, Equatable, Sendable, CustomStringConvertible {
    case unknownBroker(NodeID)
    case brokerDecommissioned(NodeID)
    case brokerHostsReplicas(NodeID)
    case topicExists(TopicName)
    case unknownTopic(TopicName)
    case unknownPartition(topic: TopicName, partition: PartitionID)
    case invalidPartitionCount(String)
    case invalidReplicationFactor(String)
    case invalidReplicas(String)
    case invalidConfig(String)
    case invalidBroker(String)
    case reassignmentInProgress(topic: TopicName, partition: PartitionID)
    case noReassignmentInProgress(topic: TopicName, partition: PartitionID)
    case cannotMoveReplicas(String)
    case limitExceeded(String)

    public var description: String {
        switch self {
        case .unknownBroker(let id): "unknown broker \(id)"
        case .brokerDecommissioned(let id): "broker \(id) is decommissioned; unregister it before it joins again"
        case .brokerHostsReplicas(let id): "broker \(id) still hosts replicas; decommission it first"
        case .topicExists(let name): "topic \(name) already exists"
        case .unknownTopic(let name): "unknown topic \(name)"
        case .unknownPartition(let topic, let partition): "unknown partition \(topic)-\(partition)"
        case .invalidPartitionCount(let why): "invalid partition count: \(why)"
        case .invalidReplicationFactor(let why): "invalid replication factor: \(why)"
        case .invalidReplicas(let why): "invalid replicas: \(why)"
        case .invalidConfig(let why): "invalid config: \(why)"
        case .invalidBroker(let why): "invalid broker: \(why)"
        case .reassignmentInProgress(let topic, let partition): "partition \(topic)-\(partition) is already being reassigned"
        case .noReassignmentInProgress(let topic, let partition): "partition \(topic)-\(partition) is not being reassigned"
        case .cannotMoveReplicas(let why): "cannot move replicas: \(why)"
        case .limitExceeded(let why): "limit exceeded: \(why)"
        }
    }

    /// The same error in the broker-wide vocabulary (HTTP status and error code).
    public var brokerError: BrokerError {
        switch self {
        case .unknownTopic(let name): .unknownTopic(name.rawValue)
        case .unknownPartition(let topic, let partition):
            .notFound("unknown partition \(topic)-\(partition)")
        case .unknownBroker: .notFound(description)
        case .topicExists(let name): .topicExists(name.rawValue)
        case .brokerDecommissioned, .brokerHostsReplicas, .reassignmentInProgress, .noReassignmentInProgress:
            .conflict(description)
        case .invalidConfig: .invalidConfig(description)
        case .limitExceeded: .unprocessable(description)
        case .invalidPartitionCount, .invalidReplicationFactor, .invalidReplicas, .invalidBroker, .cannotMoveReplicas:
            .unprocessable(description)
        }
    }
}

/// Bounds on the metadata (STYLE.md #7). Also bound what the decoder accepts from hostile bytes.
public struct MetadataLimits: Sendable, Equatable {
    public var brokersMax: Int = 1_024
    public var topicsMax: Int = 10_000
    public var partitionsPerTopicMax: Int32 = 10_000
    /// Replicas of one partition (including ones being added and removed during a reassignment).
    public var replicasPerPartitionMax: Int = 32
    public var configEntriesPerTopicMax: Int = 256
    /// Config keys and values, rack names and addresses.
    public var stringBytesMax: Int = 4_096

    public init() {}
    public static let defaults = MetadataLimits()
}

/// A leadership transfer the runtime should ask `from`'s Raft group to make.
public struct LeadershipTransfer: Equatable, Sendable, CustomStringConvertible {
    public var topic: TopicName
    public var partition: PartitionID
    public var from: NodeID
    public var to: NodeID
    public init(topic: TopicName, partition: PartitionID, from: NodeID, to: NodeID) {
        self.topic = topic
        self.partition = partition
        self.from = from
        self.to = to
    }
    public var description: String { "\(topic)-\(partition): \(from) -> \(to)" }
}

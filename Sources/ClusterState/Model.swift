import BrokerModel

/// A topic's stable identity. Assigned by the metadata state machine from a counter that never goes
/// back, so a topic that is deleted and created again under the same name gets a new id — the runtime
/// can name log directories by id and never confuse the old topic's data with the new one's.
public struct TopicID: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public init(_ value: UInt64) { self.rawValue = value }
    public static func < (a: TopicID, b: TopicID) -> Bool { a.rawValue < b.rawValue }
    public var description: String { String(rawValue) }
}

/// Where a broker stands in the cluster's life cycle.
///
/// - `alive`: registered and heartbeating; may receive new replicas and lead partitions.
/// - `fenced`: the controller stopped hearing from it; keeps its replicas (it may come back) but
///   receives no new ones and is not chosen as a leader.
/// - `decommissioning`: an operator asked to drain it; its replicas are being moved off.
/// - `decommissioned`: it holds no replicas any more and can be unregistered and switched off.
public enum BrokerStatus: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case alive = 0
    case fenced = 1
    case decommissioning = 2
    case decommissioned = 3

    public var description: String {
        switch self {
        case .alive: "alive"
        case .fenced: "fenced"
        case .decommissioning: "decommissioning"
        case .decommissioned: "decommissioned"
        }
    }
}

/// One registered broker. Addresses are opaque strings (`host:port`) checked by the edge.
public struct BrokerInfo: Equatable, Sendable {
    public var id: NodeID
    /// Failure domain. `nil` means "unknown": placement then treats the broker as its own domain.
    public var rack: String?
    public var publicAddress: String
    public var internalAddress: String
    public var status: BrokerStatus
    /// Increases with every registration, cluster-wide, so a message from a previous incarnation of a
    /// broker (same id, older epoch) can be recognised and dropped.
    public var registrationEpoch: Int64

    public init(
        id: NodeID, rack: String?, publicAddress: String, internalAddress: String, status: BrokerStatus,
        registrationEpoch: Int64
    ) {
        self.id = id
        self.rack = rack
        self.publicAddress = publicAddress
        self.internalAddress = internalAddress
        self.status = status
        self.registrationEpoch = registrationEpoch
    }

    /// Only alive brokers receive new replicas or become preferred leaders.
    public var isEligibleForNewReplicas: Bool { status == .alive }
}

/// The replicas of one partition.
///
/// `replicas` is the partition's Raft voter set, in preference order: the first replica that is not
/// being added is the preferred leader. While a reassignment runs (Kafka's KIP-455 shape),
/// `replicas` = the target replicas in target order followed by the replicas being removed;
/// `addingReplicas` ⊆ `replicas` are catching up, `removingReplicas` ⊆ `replicas` leave when it
/// completes. Outside a reassignment both sets are empty.
public struct PartitionAssignment: Equatable, Sendable {
    public var partition: PartitionID
    public var replicas: [NodeID]
    public var addingReplicas: [NodeID]
    public var removingReplicas: [NodeID]

    public init(partition: PartitionID, replicas: [NodeID], addingReplicas: [NodeID] = [], removingReplicas: [NodeID] = []) {
        self.partition = partition
        self.replicas = replicas
        self.addingReplicas = addingReplicas
        self.removingReplicas = removingReplicas
    }

    public var isReassigning: Bool { !addingReplicas.isEmpty || !removingReplicas.isEmpty }

    /// The replica set once the running reassignment completes (or the current set if none runs).
    public var targetReplicas: [NodeID] { replicas.filter { !removingReplicas.contains($0) } }

    /// The replica that should lead when it is alive: the first target replica that has caught up.
    public var preferredLeader: NodeID? { targetReplicas.first { !addingReplicas.contains($0) } }
}

/// One topic: identity, opaque configs and its partitions (index = partition number).
public struct Topic: Equatable, Sendable {
    public var name: TopicName
    public var id: TopicID
    /// The replication factor new partitions get (`createPartitions`). A reassignment may change one
    /// partition's replica count; this stays what the topic was created with.
    public var replicationFactor: Int
    /// Opaque here (validated by the edge) except ``Topic/minInSyncReplicasKey``.
    public var configs: [String: String]
    public var partitions: [PartitionAssignment]

    public static let minInSyncReplicasKey = "min.insync.replicas"

    public init(name: TopicName, id: TopicID, replicationFactor: Int, configs: [String: String], partitions: [PartitionAssignment]) {
        self.name = name
        self.id = id
        self.replicationFactor = replicationFactor
        self.configs = configs
        self.partitions = partitions
    }

    /// `min.insync.replicas`: the configured value, or a majority of the replication factor.
    public var minInSyncReplicas: Int {
        if let text = configs[Topic.minInSyncReplicasKey], let value = Int(text) { return value }
        return Topic.majority(of: replicationFactor)
    }

    public static func majority(of replicaCount: Int) -> Int { replicaCount / 2 + 1 }
}

/// The whole cluster metadata: what the `__cluster` Raft group replicates.
///
/// Changes only by ``apply(_:)`` of ``MetadataRecord``s (STYLE.md #5): recovery (replaying the log or
/// loading a snapshot) and live operation share one path. Equatable so tests can check that a replay
/// reproduces the state exactly.
public struct MetadataState: Equatable, Sendable {
    public internal(set) var brokers: [NodeID: BrokerInfo] = [:]
    public internal(set) var topics: [TopicName: Topic] = [:]
    /// The next topic id to hand out; never decreases, so ids are never reused.
    public internal(set) var nextTopicID: TopicID = TopicID(1)
    /// The next registration epoch to hand out; never decreases.
    public internal(set) var nextRegistrationEpoch: Int64 = 1
    /// Offset of the last record applied (-1 before the first), and the Raft epoch it was written in.
    public internal(set) var lastAppliedOffset: Offset = Offset(-1)
    public internal(set) var lastAppliedEpoch: Term = .zero

    public init() {}

    /// Brokers sorted by id (dictionary order is random per process; decisions must not depend on it).
    public var sortedBrokers: [BrokerInfo] { brokers.keys.sorted().map { brokers[$0]! } }
    public var sortedTopics: [Topic] { topics.keys.sorted().map { topics[$0]! } }

    public func topic(id: TopicID) -> Topic? { topics.values.first { $0.id == id } }

    /// Brokers that may receive new replicas, by id.
    public var eligibleBrokers: [BrokerInfo] { sortedBrokers.filter(\.isEligibleForNewReplicas) }

    /// Replicas per broker, counting every replica in `replicas` (including ones being added or removed).
    public func replicaCounts() -> [NodeID: Int] {
        var counts: [NodeID: Int] = [:]
        for topic in topics.values {
            for partition in topic.partitions {
                for replica in partition.replicas { counts[replica, default: 0] += 1 }
            }
        }
        return counts
    }

    /// Replicas per broker once every running reassignment completes.
    public func targetReplicaCounts() -> [NodeID: Int] {
        var counts: [NodeID: Int] = [:]
        for topic in topics.values {
            for partition in topic.partitions {
                for replica in partition.targetReplicas { counts[replica, default: 0] += 1 }
            }
        }
        return counts
    }

    /// Partitions per broker for which that broker is the preferred leader.
    public func preferredLeaderCounts() -> [NodeID: Int] {
        var counts: [NodeID: Int] = [:]
        for topic in topics.values {
            for partition in topic.partitions {
                if let leader = partition.preferredLeader { counts[leader, default: 0] += 1 }
            }
        }
        return counts
    }

    /// Partitions per broker for which that broker will be the preferred leader once every running
    /// reassignment completes (the first target replica). Placement balances this, not the transient view.
    public func targetPreferredLeaderCounts() -> [NodeID: Int] {
        var counts: [NodeID: Int] = [:]
        for topic in topics.values {
            for partition in topic.partitions {
                if let leader = partition.targetReplicas.first { counts[leader, default: 0] += 1 }
            }
        }
        return counts
    }

    /// Whether any partition (in any role) lists `broker` among its replicas.
    public func hostsReplicas(_ broker: NodeID) -> Bool {
        topics.values.contains { $0.partitions.contains { $0.replicas.contains(broker) } }
    }

    /// Every partition of every topic, sorted by topic name then partition.
    public var allPartitions: [(topic: TopicName, assignment: PartitionAssignment)] {
        sortedTopics.flatMap { topic in topic.partitions.map { (topic.name, $0) } }
    }
}

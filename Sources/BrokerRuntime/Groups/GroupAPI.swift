import BrokerModel
import ClusterState

// The consumer-group part of the `Broker` façade: what the HTTP layer sends and gets back. The
// group state machine itself is `ClusterState`'s (`decideGroup`, `GroupsState.apply`); these names
// let BrokerHTTP use its small enums without importing a core.
public typealias GroupAssignor = ClusterState.GroupAssignor
public typealias AutoOffsetReset = ClusterState.AutoOffsetReset
public typealias CommittedOffsetEntry = ClusterState.CommittedOffsetEntry
public typealias GroupLimits = ClusterState.GroupLimits

/// Join a group (Kafka's JoinGroup + SyncGroup in one call: the coordinator assigns).
public struct JoinGroupRequest: Sendable, Codable {
    public var group: GroupID
    /// nil: the coordinator names the member. Given (REST Proxy v2 instance names): 409 if taken.
    public var memberName: MemberID?
    public var clientID: String
    public var topics: [TopicName]
    /// Kafka's assign mode: exactly these partitions, no rebalancing.
    public var manualPartitions: [TopicPartition]?
    public var sessionTimeoutMilliseconds: Int64
    public var autoOffsetReset: AutoOffsetReset
    public var autoCommit: Bool
    public var assignor: GroupAssignor
    public var properties: [String: String]

    public init(group: GroupID, memberName: MemberID? = nil, clientID: String = "", topics: [TopicName], manualPartitions: [TopicPartition]? = nil,
                sessionTimeoutMilliseconds: Int64 = 30_000, autoOffsetReset: AutoOffsetReset = .latest, autoCommit: Bool = true,
                assignor: GroupAssignor = .sticky, properties: [String: String] = [:]) {
        self.group = group
        self.memberName = memberName
        self.clientID = clientID
        self.topics = topics
        self.manualPartitions = manualPartitions
        self.sessionTimeoutMilliseconds = sessionTimeoutMilliseconds
        self.autoOffsetReset = autoOffsetReset
        self.autoCommit = autoCommit
        self.assignor = assignor
        self.properties = properties
    }
}

/// A member's view of its group: who it is, which generation, what it owns.
public struct GroupMembership: Sendable, Codable, Equatable {
    public var group: GroupID
    public var member: MemberID
    public var generation: Int32
    public var assignment: [TopicPartition]
    public var topics: [TopicName]
    public var manualPartitions: [TopicPartition]?
    public var sessionTimeoutMilliseconds: Int64
    public var autoCommit: Bool
    public var properties: [String: String]
}

/// One long-poll over the member's assigned partitions. It also keeps the member alive.
public struct GroupPollRequest: Sendable, Codable {
    public var group: GroupID
    public var member: MemberID
    public var maxRecords: Int
    public var maxBytes: Int
    public var waitMilliseconds: Int

    public init(group: GroupID, member: MemberID, maxRecords: Int, maxBytes: Int, waitMilliseconds: Int) {
        self.group = group
        self.member = member
        self.maxRecords = maxRecords
        self.maxBytes = maxBytes
        self.waitMilliseconds = waitMilliseconds
    }
}

public struct GroupPollResult: Sendable {
    public var membership: GroupMembership
    /// One result per partition that returned records (possibly none).
    public var reads: [ReadResult]
}

public struct GroupCommitRequest: Sendable, Codable {
    public var group: GroupID
    public var member: MemberID?
    public var generation: Int32?
    /// Empty with a member: commit everything delivered to it so far (REST Proxy v2's empty commit).
    public var offsets: [CommittedOffsetEntry]

    public init(group: GroupID, member: MemberID?, generation: Int32?, offsets: [CommittedOffsetEntry]) {
        self.group = group
        self.member = member
        self.generation = generation
        self.offsets = offsets
    }
}

public struct GroupOffset: Sendable, Codable, Equatable {
    public var partition: TopicPartition
    /// nil: nothing committed for this partition.
    public var offset: Offset?
    public var metadata: String
}

/// Where `resetGroupOffsets` moves a group's offsets (Kafka's kafka-consumer-groups --reset-offsets).
public enum OffsetResetTarget: Sendable, Codable, Equatable {
    case earliest
    case latest
    /// The first offset whose timestamp is at or after this time (the log end when none is).
    case timestamp(Int64)
    case exact([CommittedOffsetEntry])
}

/// Where a member's next poll reads a partition from (REST Proxy v2 `positions`).
public struct MemberSeek: Sendable, Codable, Equatable {
    public var partition: TopicPartition
    public var position: SeekPosition

    public init(partition: TopicPartition, position: SeekPosition) {
        self.partition = partition
        self.position = position
    }
}

public enum SeekPosition: Sendable, Codable, Equatable {
    case beginning, end
    case offset(Offset)
    case timestamp(Int64)
}

public struct GroupMemberDescription: Sendable, Codable, Equatable {
    public var member: MemberID
    public var clientID: String
    public var topics: [TopicName]
    public var isManual: Bool
    public var assignment: [TopicPartition]
    public var sessionTimeoutMilliseconds: Int64
    /// Milliseconds since the coordinator last heard from the member (nil right after a failover).
    public var idleMilliseconds: Int64?
}

public struct GroupPartitionDescription: Sendable, Codable, Equatable {
    public var partition: TopicPartition
    public var owner: MemberID?
    public var committedOffset: Offset?
    public var highWatermark: Offset?
    /// high watermark - committed offset (nil when either is unknown).
    public var lag: Int64?
}

public struct GroupDescription: Sendable, Codable, Equatable {
    public var group: GroupID
    public var state: String
    public var generation: Int32
    public var assignor: GroupAssignor
    public var coordinator: NodeID
    public var members: [GroupMemberDescription]
    public var partitions: [GroupPartitionDescription]
}

public struct GroupSummary: Sendable, Codable, Equatable {
    public var group: GroupID
    public var state: String
    public var memberCount: Int
    public var coordinator: NodeID
}

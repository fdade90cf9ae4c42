import BrokerModel

// The consumer-group state machine's vocabulary (issue #5). One `GroupsState` per coordinator
// partition (`__consumer_offsets`-p); every replica of that partition applies the same committed
// `GroupRecord`s, so a new coordinator knows every member, generation, assignment and offset.
//
// What is NOT here, on purpose: member liveness (last poll time) and each member's read position.
// Kafka does not replicate heartbeats either; the shell keeps them in memory on the coordinator and
// turns an expired session into a `.expireMembers` command.

/// How the partitions of the subscribed topics are spread over the members.
public enum GroupAssignor: String, Sendable, CaseIterable {
    /// Per topic, consecutive ranges of partitions to members in member-id order (Kafka's RangeAssignor).
    case range
    /// All partitions (topic, partition order) dealt round-robin over the members that subscribe to them.
    case roundrobin
    /// Keeps every partition with its current owner where that is still valid and balanced; moves as
    /// few partitions as possible (Kafka's StickyAssignor goal). The default.
    case sticky
}

/// Where a member starts reading a partition that has no committed offset (Kafka's auto.offset.reset).
public enum AutoOffsetReset: String, Sendable, CaseIterable {
    case earliest, latest, none
}

/// One member of a group, as replicated.
public struct GroupMember: Equatable, Sendable {
    public var id: MemberID
    /// Free text from the client (shown in describe); at most `GroupLimits.clientIDBytesMax` bytes.
    public var clientID: String
    /// Subscribed topics, sorted, no duplicates. Empty when `manualPartitions` is set.
    public var topics: [TopicName]
    /// Kafka's assign mode: the member reads exactly these partitions and takes no part in
    /// rebalancing. nil = subscription (dynamic) member.
    public var manualPartitions: [TopicPartition]?
    public var sessionTimeoutMilliseconds: Int64
    public var autoOffsetReset: AutoOffsetReset
    public var autoCommit: Bool
    /// Opaque settings the shell keeps with the member (the REST Proxy v2 dialect stores the
    /// instance's format and dialect here). Keys and values are bounded by `GroupLimits`.
    public var properties: [String: String]

    public init(id: MemberID, clientID: String, topics: [TopicName], manualPartitions: [TopicPartition]?, sessionTimeoutMilliseconds: Int64,
                autoOffsetReset: AutoOffsetReset, autoCommit: Bool, properties: [String: String]) {
        self.id = id
        self.clientID = clientID
        self.topics = topics
        self.manualPartitions = manualPartitions
        self.sessionTimeoutMilliseconds = sessionTimeoutMilliseconds
        self.autoOffsetReset = autoOffsetReset
        self.autoCommit = autoCommit
        self.properties = properties
    }
}

/// A committed offset: the next offset the group will read (Kafka's meaning).
public struct CommittedOffset: Equatable, Sendable {
    public var offset: Offset
    /// Client metadata stored with the commit (Kafka's OffsetAndMetadata), bounded by `GroupLimits`.
    public var metadata: String
    public var commitMilliseconds: Int64

    public init(offset: Offset, metadata: String, commitMilliseconds: Int64) {
        self.offset = offset
        self.metadata = metadata
        self.commitMilliseconds = commitMilliseconds
    }
}

/// One consumer group. A group exists while it has members or committed offsets.
public struct ConsumerGroup: Equatable, Sendable {
    public var id: GroupID
    /// Bumped by every rebalance; commits carrying another generation are stale (409).
    public var generation: Int32
    public var assignor: GroupAssignor
    public var members: [MemberID: GroupMember]
    /// The current assignment, per member, each list sorted by (topic, partition). Manual members'
    /// entries equal their `manualPartitions`.
    public var assignment: [MemberID: [TopicPartition]]
    public var offsets: [TopicPartition: CommittedOffset]
    /// Counter for generated member ids (decided, written into records, never chosen by `apply`).
    public var nextMemberNumber: Int64

    public init(id: GroupID, assignor: GroupAssignor) {
        self.id = id
        self.generation = 0
        self.assignor = assignor
        self.members = [:]
        self.assignment = [:]
        self.offsets = [:]
        self.nextMemberNumber = 1
    }

    /// Kafka's group states, reduced to what a server-side assignor needs: there is no
    /// "preparing rebalance" window — a rebalance is one record.
    public var stateName: String { members.isEmpty ? "Empty" : "Stable" }
}

/// All groups of one coordinator partition.
public struct GroupsState: Equatable, Sendable {
    public var groups: [GroupID: ConsumerGroup]
    /// Offset of the last applied `__consumer_offsets` record (set by `apply(_:offset:)`; not part
    /// of what the records replicate).
    public var appliedOffset: Offset

    public init() {
        groups = [:]
        appliedOffset = Offset(-1)
    }
}

/// Bounds on everything a group holds (TigerBeetle style: a limit on everything).
public struct GroupLimits: Sendable, Equatable {
    public var membersPerGroupMax: Int
    /// Groups one coordinator partition holds.
    public var groupsMax: Int
    /// Partitions in one group's assignment (all members together) and in one manual assignment.
    public var assignmentPartitionsMax: Int
    public var topicsPerMemberMax: Int
    public var commitOffsetsMax: Int
    public var clientIDBytesMax: Int
    public var metadataBytesMax: Int
    public var propertiesMax: Int
    public var propertyBytesMax: Int
    public var sessionTimeoutMillisecondsRange: ClosedRange<Int64>

    public init(membersPerGroupMax: Int = 1_000, groupsMax: Int = 10_000, assignmentPartitionsMax: Int = 10_000,
                topicsPerMemberMax: Int = 100, commitOffsetsMax: Int = 10_000, clientIDBytesMax: Int = 255,
                metadataBytesMax: Int = 4_096, propertiesMax: Int = 16, propertyBytesMax: Int = 255,
                sessionTimeoutMillisecondsRange: ClosedRange<Int64> = 1_000...3_600_000) {
        self.membersPerGroupMax = membersPerGroupMax
        self.groupsMax = groupsMax
        self.assignmentPartitionsMax = assignmentPartitionsMax
        self.topicsPerMemberMax = topicsPerMemberMax
        self.commitOffsetsMax = commitOffsetsMax
        self.clientIDBytesMax = clientIDBytesMax
        self.metadataBytesMax = metadataBytesMax
        self.propertiesMax = propertiesMax
        self.propertyBytesMax = propertyBytesMax
        self.sessionTimeoutMillisecondsRange = sessionTimeoutMillisecondsRange
    }

    public static let defaults = GroupLimits()
}

/// What a client, or the coordinator's session timer, asks of a group.
public enum GroupCommand: Equatable, Sendable {
    /// A member joins (creates the group when it does not exist). `memberName` nil = the coordinator
    /// generates an id from `nonce` and the group's counter; else the id is the name (409 if taken).
    /// Dynamic members (manualPartitions nil) trigger a rebalance; a manual member does not.
    /// `assignor` applies when the join creates the group (or the group has no members); later joins
    /// with another assignor are refused (Kafka: INCONSISTENT_GROUP_PROTOCOL).
    case join(group: GroupID, memberName: MemberID?, nonce: UInt64, clientID: String, topics: [TopicName],
              manualPartitions: [TopicPartition]?, sessionTimeoutMilliseconds: Int64, autoOffsetReset: AutoOffsetReset,
              autoCommit: Bool, assignor: GroupAssignor, properties: [String: String])
    /// A member leaves (a dynamic member's leaving rebalances the rest).
    case leave(group: GroupID, member: MemberID)
    /// The coordinator saw these members' sessions expire. Members no longer present are ignored
    /// (idempotent; an unknown group too: no records, generation 0); the rest are removed with one
    /// rebalance.
    case expireMembers(group: GroupID, members: [MemberID])
    /// A member changes its subscription (REST Proxy v2 `subscription`), or switches between
    /// subscription and manual assignment. Rebalances when the dynamic picture changes.
    case updateSubscription(group: GroupID, member: MemberID, topics: [TopicName], manualPartitions: [TopicPartition]?)
    /// Commit offsets (next offset to read). `member` nil = a commit from outside the group's
    /// membership (assign mode): refused with 409 while the group has dynamic members. With a member:
    /// it must exist (404); `generation`, when given, must be the current one (409 stale); without a
    /// generation every partition must be in the member's current assignment (409).
    case commit(group: GroupID, member: MemberID?, generation: Int32?, offsets: [CommittedOffsetEntry], nowMilliseconds: Int64)
    /// Set offsets while the group has no members (409 otherwise): the shell has resolved
    /// earliest/latest/timestamp into exact offsets.
    case resetOffsets(group: GroupID, offsets: [CommittedOffsetEntry], nowMilliseconds: Int64)
    /// Delete a group that has no members (409 otherwise; 404 when unknown): members, offsets, all.
    case deleteGroup(GroupID)
    /// The partition counts of subscribed topics changed (topic grown, created or deleted):
    /// recompute the assignment with the counts in the context; a rebalance only if it changes.
    case refreshAssignment(group: GroupID)
}

public struct CommittedOffsetEntry: Equatable, Sendable {
    public var partition: TopicPartition
    public var offset: Offset
    public var metadata: String

    public init(partition: TopicPartition, offset: Offset, metadata: String = "") {
        self.partition = partition
        self.offset = offset
        self.metadata = metadata
    }
}

/// What `decide` needs to know besides the state: the partition count of every topic a command or
/// a rebalance may touch (a topic missing from the map has no partitions — unknown or deleted).
public struct GroupContext: Sendable, Equatable {
    public var partitionCounts: [TopicName: Int32]
    public var limits: GroupLimits

    public init(partitionCounts: [TopicName: Int32], limits: GroupLimits = .defaults) {
        self.partitionCounts = partitionCounts
        self.limits = limits
    }
}

/// The replicated facts. Every decision (member ids, generations, assignments) is written into a
/// record; `apply` never chooses.
public enum GroupRecord: Equatable, Sendable {
    case memberJoined(group: GroupID, member: GroupMember, assignor: GroupAssignor, nextMemberNumber: Int64)
    case memberUpdated(group: GroupID, member: GroupMember)
    case memberRemoved(group: GroupID, member: MemberID)
    /// A new generation and the whole assignment of the group: every member, manual members with
    /// their own `manualPartitions`.
    case rebalanced(group: GroupID, generation: Int32, assignment: [MemberID: [TopicPartition]])
    case offsetCommitted(group: GroupID, partition: TopicPartition, offset: CommittedOffset)
    case groupDeleted(GroupID)
}

/// The answer to a command, besides its records.
public enum GroupReply: Equatable, Sendable {
    case joined(member: MemberID, generation: Int32, assignment: [TopicPartition])
    /// leave, expireMembers, updateSubscription, refreshAssignment: the generation after the command.
    case updated(generation: Int32)
    case committed(count: Int)
    case deleted
}

/// Why a command was refused. Nothing was changed.
public enum GroupError: Error, Equatable, Sendable, CustomStringConvertible {
    case unknownGroup(GroupID)
    case unknownMember(group: GroupID, member: MemberID)
    case memberExists(group: GroupID, member: MemberID)
    case staleGeneration(group: GroupID, given: Int32, current: Int32)
    case notAssigned(group: GroupID, member: MemberID, partition: TopicPartition)
    case groupNotEmpty(GroupID)
    /// Commit from outside the membership while the group has dynamic members.
    case groupHasMembers(GroupID)
    case inconsistentAssignor(group: GroupID, current: GroupAssignor, given: GroupAssignor)
    case unknownTopicPartition(TopicPartition)
    case invalid(String)
    case limitExceeded(String)

    public var description: String {
        switch self {
        case .unknownGroup(let g): "unknown consumer group \(g)"
        case .unknownMember(let g, let m): "unknown member \(m) of group \(g) (it left, or its session expired: join again)"
        case .memberExists(let g, let m): "group \(g) already has a member named \(m)"
        case .staleGeneration(let g, let given, let current): "generation \(given) of group \(g) is stale; the current generation is \(current) (poll again to learn the new assignment)"
        case .notAssigned(let g, let m, let p): "partition \(p) is not assigned to member \(m) of group \(g)"
        case .groupNotEmpty(let g): "group \(g) has active members"
        case .groupHasMembers(let g): "group \(g) has active members: commit as one of them (member_id and generation)"
        case .inconsistentAssignor(let g, let current, let given): "group \(g) uses the \(current.rawValue) assignor, not \(given.rawValue)"
        case .unknownTopicPartition(let p): "unknown partition \(p)"
        case .invalid(let why): why
        case .limitExceeded(let why): why
        }
    }
}

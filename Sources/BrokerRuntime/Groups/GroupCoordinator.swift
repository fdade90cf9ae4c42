import BrokerModel
import ClusterState
import Dispatch
import Logging
import Synchronization

/// What the coordinator needs from the broker around it (single node or cluster).
protocol GroupCoordinatorHost: Sendable {
    var nodeID: NodeID { get }
    /// Writes `records` to `__consumer_offsets`-`partition` with acks=all and answers the last
    /// offset written. The host hands the committed records to `GroupCoordinator.apply` (a cluster
    /// does so on every replica, from Raft's committed entries; a single node right after the fsync).
    func appendGroupRecords(_ partition: Int32, _ records: [GroupRecord], completion: @escaping @Sendable (Result<Offset, BrokerError>) -> Void)
    /// Whether this broker may coordinate the groups of `partition` now.
    func coordinatorStatus(_ partition: Int32, applied: Offset) -> CoordinatorStatus
    /// Confirms that this broker still leads `partition` as of now (a majority acknowledged it after
    /// the call: a leader paused or cut off since cannot pass) and answers the commit offset the
    /// state must have applied before serving.
    func confirmLeadership(_ partition: Int32, completion: @escaping @Sendable (Result<Offset, BrokerError>) -> Void)
    func partitionCount(_ topic: TopicName) -> Int32?
    func read(_ request: ReadRequest, completion: @escaping @Sendable (Result<ReadResult, BrokerError>) -> Void)
    func partitionOffsets(_ partition: TopicPartition) throws(BrokerError) -> PartitionOffsets
    func offset(_ partition: TopicPartition, forTimestamp: Int64) throws(BrokerError) -> Offset?
    func monotonicMilliseconds() -> Int64
    func wallMilliseconds() -> Int64
}

enum CoordinatorStatus: Equatable {
    case ready
    /// Leader, but the records of earlier leaders are not all applied yet.
    case loading
    case notLeader(NodeID?)
}

/// The group coordinator of one broker: for every `__consumer_offsets` partition this broker leads,
/// it decides group commands against the replicated `GroupsState` and writes the resulting records;
/// it keeps what is not replicated (member liveness, read positions, parked polls) in memory.
///
/// Commands are decided in batches, one batch in flight per coordinator partition: the batch is
/// decided against the fully applied state (every record of every earlier leader included — the
/// controller's rule), each command seeing the records of the ones before it, and written as one
/// entry. Replies wait until the records are applied here, so a request that follows its answer
/// (a poll after a join) sees the change.
///
/// Thread-safety: `partitions` sits behind a Mutex; completions and the host are called outside it.
final class GroupCoordinator: Sendable {
    let host: any GroupCoordinatorHost
    let partitionCount: Int32
    let limits: GroupLimits
    let logger: Logger
    let partitions: Mutex<[Int32: CoordinatorPartition]>
    let pollCounter = Atomic<UInt64>(0)
    static let batchCommandsMax = 256
    static let queueMax = 10_000

    init(host: any GroupCoordinatorHost, partitionCount: Int32, limits: GroupLimits, logger: Logger) {
        self.host = host
        self.partitionCount = partitionCount
        self.limits = limits
        self.logger = logger
        var initial: [Int32: CoordinatorPartition] = [:]
        for p in 0..<partitionCount { initial[p] = CoordinatorPartition() }
        partitions = Mutex(initial)
    }

    /// The coordinator partition of a group: murmur2 of its id, as Kafka picks a partition for a key.
    static func partition(of group: GroupID, count: Int32) -> Int32 {
        Murmur2.partition(forKey: Array(group.rawValue.utf8), partitionCount: count).rawValue
    }

    func partition(of group: GroupID) -> Int32 { Self.partition(of: group, count: partitionCount) }

    struct CoordinatorPartition: Sendable {
        var groups = GroupsState()
        var queue: [PendingGroupCommand] = []
        var inFlight = false
        /// Replies of a written batch, answered once the batch is applied.
        var waiting: [(offset: Offset, replies: [@Sendable () -> Void])] = []
        var sessions: [GroupID: [MemberID: MemberSession]] = [:]
        var wasReady = false
    }

    struct PendingGroupCommand: Sendable {
        var command: GroupCommand
        var completion: @Sendable (Result<GroupReply, BrokerError>) -> Void
    }

    /// What the coordinator knows of a member besides the replicated facts.
    struct MemberSession: Sendable {
        var lastSeenMilliseconds: Int64
        var activePolls = 0
        /// Next offset to read, per assigned partition (dropped when the partition moves away).
        var positions: [TopicPartition: Offset] = [:]
        /// Positions after records delivered and not yet auto-committed.
        var delivered: [TopicPartition: Offset] = [:]
        /// Parked polls, ended early by a rebalance or the member's removal.
        var wakers: [UInt64: @Sendable () -> Void] = [:]
        var expiryQueued = false

        init(now: Int64) { lastSeenMilliseconds = now }
    }

    // MARK: - commands

    /// Queues `command` for its group's coordinator partition (which this broker must lead).
    func submit(_ command: GroupCommand, group: GroupID, completion: @escaping @Sendable (Result<GroupReply, BrokerError>) -> Void) {
        let p = partition(of: group)
        let accepted = partitions.withLock { s -> Bool in
            guard s[p]!.queue.count < Self.queueMax else { return false }
            s[p]!.queue.append(PendingGroupCommand(command: command, completion: completion))
            return true
        }
        guard accepted else { return completion(.failure(.overloaded("too many group requests are queued on this coordinator; retry later"))) }
        runQueue(p)
    }

    func status(_ p: Int32) -> CoordinatorStatus {
        let applied = partitions.withLock { $0[p]!.groups.appliedOffset }
        return host.coordinatorStatus(p, applied: applied)
    }

    typealias Reply = (completion: @Sendable (Result<GroupReply, BrokerError>) -> Void, reply: GroupReply)

    /// Decides the queued commands of `p` as one batch, if none is in flight and the state is caught up.
    func runQueue(_ p: Int32) {
        let status = status(p)
        enum Step { case none, failAll([PendingGroupCommand], BrokerError), write([GroupRecord], [@Sendable () -> Void], [Reply]) }
        let step = partitions.withLock { all -> Step in
            guard !all[p]!.inFlight, !all[p]!.queue.isEmpty else { return .none }
            switch status {
            case .loading: return .none
            case .notLeader(let leader):
                defer { all[p]!.queue.removeAll() }
                return .failAll(all[p]!.queue, .notLeader("this broker does not coordinate these groups", leader: leader))
            case .ready: break
            }
            let batch = Array(all[p]!.queue.prefix(Self.batchCommandsMax))
            all[p]!.queue.removeFirst(batch.count)
            var scratch = all[p]!.groups
            var records: [GroupRecord] = []
            var replies: [Reply] = []
            var refused: [@Sendable () -> Void] = []
            for pending in batch {
                let context = GroupContext(partitionCounts: partitionCounts(for: pending.command, in: scratch), limits: limits)
                switch decideGroup(pending.command, state: scratch, context: context) {
                case .failure(let error):
                    let e = error.brokerError
                    refused.append { pending.completion(.failure(e)) }
                case .success(let decision):
                    for r in decision.records { scratch.apply(r) }
                    records += decision.records
                    replies.append((pending.completion, decision.reply))
                }
            }
            if records.isEmpty {
                return .write([], refused + replies.map { r in { r.completion(.success(r.reply)) } }, [])
            }
            all[p]!.inFlight = true
            return .write(records, refused, replies)
        }
        switch step {
        case .none: return
        case .failAll(let pending, let error):
            for c in pending { c.completion(.failure(error)) }
        case .write(let records, let now, let later):
            for c in now { c() }
            if records.isEmpty { return runQueue(p) }
            host.appendGroupRecords(p, records) { [self] result in
                let answerNow = partitions.withLock { all -> [Reply] in
                    all[p]!.inFlight = false
                    guard case .success(let last) = result else { return [] }
                    if all[p]!.groups.appliedOffset >= last { return later }
                    all[p]!.waiting.append((last, later.map { r in { r.completion(.success(r.reply)) } }))
                    return []
                }
                if case .failure(let error) = result {
                    // Whatever becomes of the records (a new leader may still commit them), the
                    // state is only ever what was applied from the log; the callers learn that the
                    // outcome is unknown, as a producer would.
                    logger.warning("group write on __consumer_offsets-\(p) failed: \(error)")
                    let e: BrokerError = if case .notLeader = error { error } else { .unavailable("the group change may or may not have been written: \(error.message)") }
                    for r in later { r.completion(.failure(e)) }
                }
                for r in answerNow { r.completion(.success(r.reply)) }
                runQueue(p)
            }
        }
    }

    /// The partition counts a command may need: every topic its group's members subscribe to or
    /// own, and the topics the command names.
    func partitionCounts(for command: GroupCommand, in state: GroupsState) -> [TopicName: Int32] {
        var topics = Set<TopicName>()
        let group: GroupID
        switch command {
        case .join(let g, _, _, _, let t, let manual, _, _, _, _, _):
            group = g
            topics.formUnion(t)
            topics.formUnion((manual ?? []).map(\.topic))
        case .leave(let g, _), .expireMembers(let g, _), .refreshAssignment(let g): group = g
        case .deleteGroup(let g): group = g
        case .updateSubscription(let g, _, let t, let manual):
            group = g
            topics.formUnion(t)
            topics.formUnion((manual ?? []).map(\.topic))
        case .commit(let g, _, _, let offsets, _), .resetOffsets(let g, let offsets, _):
            group = g
            topics.formUnion(offsets.map(\.partition.topic))
        }
        if let g = state.groups[group] {
            for m in g.members.values {
                topics.formUnion(m.topics)
                topics.formUnion((m.manualPartitions ?? []).map(\.topic))
            }
        }
        var counts: [TopicName: Int32] = [:]
        for t in topics { if let n = host.partitionCount(t) { counts[t] = n } }
        return counts
    }

    /// Runs `body` once this broker is confirmed as the coordinator of `p` and has applied
    /// everything committed when it was confirmed: what it then serves is never older than a
    /// change some other broker already acknowledged (no stale reads from a deposed coordinator).
    func whenConfirmed(_ p: Int32, failure: @escaping @Sendable (BrokerError) -> Void, _ body: @escaping @Sendable () -> Void) {
        host.confirmLeadership(p) { [self] result in
            switch result {
            case .failure(let e): failure(e)
            case .success(let commit):
                let now = partitions.withLock { all -> Bool in
                    if all[p]!.groups.appliedOffset >= commit { return true }
                    all[p]!.waiting.append((commit, [body]))
                    return false
                }
                if now { body() }
            }
        }
    }

    // MARK: - applying the log

    /// Forgets everything about `p` (a replica of it was opened anew and replays its log).
    func resetPartition(_ p: Int32) {
        guard p >= 0 && p < partitionCount else { return }
        let wake = partitions.withLock { all -> [@Sendable () -> Void] in
            let old = all[p]!
            all[p] = CoordinatorPartition()
            all[p]!.queue = old.queue
            return old.sessions.values.flatMap { $0.values.flatMap { $0.wakers.values } }
        }
        for w in wake { w() }
    }

    /// Committed records of `__consumer_offsets`-`p`, in log order, with each record's offset.
    func apply(_ p: Int32, _ records: [(Offset, GroupRecord)], through last: Offset) {
        guard p >= 0 && p < partitionCount else { return }
        var wake: [@Sendable () -> Void] = []
        partitions.withLock { all in
            var part = all[p]!
            for (offset, record) in records where offset > part.groups.appliedOffset {
                if let problem = part.groups.problem(applying: record) {
                    // Every replica refuses the same record the same way: skip it, loudly.
                    logger.error("group record at __consumer_offsets-\(p)@\(offset) does not apply: \(problem)")
                    continue
                }
                part.groups.apply(record)
                Self.noteApplied(record, in: &part, wake: &wake)
            }
            part.groups.appliedOffset = max(part.groups.appliedOffset, last)
            let applied = part.groups.appliedOffset
            part.waiting.removeAll { w in
                guard w.offset <= applied else { return false }
                wake += w.replies
                return true
            }
            all[p] = part
        }
        for w in wake { w() }
        runQueue(p)
    }

    /// Keeps the in-memory sessions in step with an applied record: a member whose partitions moved
    /// forgets their positions, and its parked poll ends so it learns the new assignment at once.
    private static func noteApplied(_ record: GroupRecord, in part: inout CoordinatorPartition, wake: inout [@Sendable () -> Void]) {
        switch record {
        case .rebalanced(let g, _, let assignment):
            guard var sessions = part.sessions[g] else { return }
            for (m, var s) in sessions {
                let owned = Set(assignment[m] ?? [])
                s.positions = s.positions.filter { owned.contains($0.key) }
                s.delivered = s.delivered.filter { owned.contains($0.key) }
                wake += s.wakers.values
                s.wakers.removeAll()
                sessions[m] = s
            }
            part.sessions[g] = sessions
        case .memberRemoved(let g, let m):
            if let s = part.sessions[g]?[m] { wake += s.wakers.values }
            part.sessions[g]?[m] = nil
        case .groupDeleted(let g):
            for s in (part.sessions[g] ?? [:]).values { wake += s.wakers.values }
            part.sessions[g] = nil
        case .memberJoined, .memberUpdated, .offsetCommitted:
            break
        }
    }

    // MARK: - time

    /// Every few hundred milliseconds: expire members whose session ran out, follow partition counts
    /// of subscribed topics, and forget what was only in memory when leadership moved away.
    func tick() {
        let now = host.monotonicMilliseconds()
        for p in 0..<partitionCount {
            let status = status(p)
            var expire: [(GroupID, [MemberID])] = []
            var refresh: [GroupID] = []
            var dropped: [PendingGroupCommand] = []
            var wake: [@Sendable () -> Void] = []
            let ready = status == .ready
            let subscriptions = partitions.withLock { all -> [(GroupID, Set<TopicName>, Set<TopicPartition>)] in
                var part = all[p]!
                defer { all[p] = part }
                if !ready && part.wasReady {
                    // Another broker coordinates now: positions and liveness start over there.
                    for sessions in part.sessions.values { for s in sessions.values { wake += s.wakers.values } }
                    part.sessions.removeAll()
                    if case .notLeader = status {
                        dropped = part.queue
                        part.queue.removeAll()
                    }
                }
                part.wasReady = ready
                guard ready else { return [] }
                var out: [(GroupID, Set<TopicName>, Set<TopicPartition>)] = []
                for (g, group) in part.groups.groups {
                    var sessions = part.sessions[g] ?? [:]
                    var expired: [MemberID] = []
                    for (m, member) in group.members {
                        // A member the coordinator has not met yet (it took over) gets a full session.
                        var s = sessions[m] ?? MemberSession(now: now)
                        if s.activePolls == 0 && !s.expiryQueued && now - s.lastSeenMilliseconds > member.sessionTimeoutMilliseconds {
                            s.expiryQueued = true
                            expired.append(m)
                        }
                        sessions[m] = s
                    }
                    part.sessions[g] = sessions
                    if !expired.isEmpty { expire.append((g, expired.sorted())) }
                    let dynamic = group.members.values.filter { $0.manualPartitions == nil }
                    if !dynamic.isEmpty {
                        let topics = Set(dynamic.flatMap(\.topics))
                        let owned = Set(dynamic.flatMap { group.assignment[$0.id] ?? [] })
                        out.append((g, topics, owned))
                    }
                }
                return out
            }
            for (g, topics, owned) in subscriptions {
                var expected = Set<TopicPartition>()
                for t in topics {
                    for i in 0..<(host.partitionCount(t) ?? 0) { expected.insert(TopicPartition(t, PartitionID(i))) }
                }
                if expected != owned { refresh.append(g) }
            }
            for w in wake { w() }
            for d in dropped { d.completion(.failure(.notLeader("this broker no longer coordinates these groups", leader: nil))) }
            for (g, members) in expire {
                logger.info("group \(g): session of \(members.map(\.rawValue).joined(separator: ", ")) expired")
                submit(.expireMembers(group: g, members: members), group: g) { [self] result in
                    if case .failure(let e) = result {
                        logger.debug("expiring members of \(g) failed: \(e)")
                        partitions.withLock { all in
                            for m in members { all[p]!.sessions[g]?[m]?.expiryQueued = false }
                        }
                    }
                }
            }
            for g in refresh where !partitions.withLock({ all in all[p]!.queue.contains { if case .refreshAssignment(let q) = $0.command { q == g } else { false } } }) {
                submit(.refreshAssignment(group: g), group: g) { _ in }
            }
            if ready { runQueue(p) }
        }
    }

    /// Marks the member alive now (a poll, heartbeat or join).
    func touch(_ p: Int32, _ g: GroupID, _ m: MemberID, in all: inout [Int32: CoordinatorPartition]) {
        // Only members the state knows have a session (a poll that ends after its member was
        // removed must not leave one behind).
        guard all[p]!.groups.groups[g]?.members[m] != nil else { return }
        let now = host.monotonicMilliseconds()
        var s = all[p]!.sessions[g]?[m] ?? MemberSession(now: now)
        s.lastSeenMilliseconds = now
        s.expiryQueued = false
        all[p]!.sessions[g, default: [:]][m] = s
    }
}

extension GroupError {
    var brokerError: BrokerError {
        switch self {
        case .unknownGroup: .unknownGroup(description)
        case .unknownMember: .unknownMember(description)
        case .memberExists: .conflict(description)
        case .staleGeneration: .staleGeneration(description)
        case .notAssigned, .groupNotEmpty, .groupHasMembers, .inconsistentAssignor: .illegalState(description)
        case .unknownTopicPartition, .invalid: .unprocessable(description)
        // A request past a limit cannot succeed by being sent again: 422, not 429.
        case .limitExceeded: .unprocessable(description)
        }
    }
}

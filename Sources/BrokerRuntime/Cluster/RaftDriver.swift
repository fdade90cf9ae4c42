import BrokerModel
import Consensus
import Dispatch
import Foundation
import LogStorage
import Synchronization

/// The one thread that drives every Raft group on this broker, in rounds (group commit across groups):
///
/// 1. for each scheduled replica, under its lock: feed the inbox to the node, take `ready()`, write
///    the snapshot/entries/hard state (Ready steps 1–3) and prepare the fsync;
/// 2. without any lock: fsync every replica written in this round (step 4);
/// 3. only now send the round's messages, one frame per destination broker (step 5);
/// 4. under each lock again: `advance`, move the high watermark to commit + 1, collect the producers
///    and readers that can now be answered; apply committed metadata (step 6–7);
/// 5. outside the locks: answer them.
///
/// Inputs that arrive during a round schedule the replica for the next round.
final class RaftDriver: Sendable {
    private let queue = Mutex<[Replica]>([])
    private let wakeup = DispatchSemaphore(value: 0)
    private let stopping = Atomic<Bool>(false)
    private let stopped = DispatchSemaphore(value: 0)
    /// Inputs one replica may hold between rounds; beyond it proposals get 429 and messages are dropped
    /// (Raft retransmits).
    static let inboxMax = 50_000
    private let host: Mutex<(any RaftDriverHost)?>

    init() { host = Mutex(nil) }

    func start(host: any RaftDriverHost) {
        self.host.withLock { $0 = host }
        let thread = Thread { [self] in run() }
        thread.name = "petrel-raft"
        thread.start()
    }

    func stop() {
        stopping.store(true, ordering: .releasing)
        wakeup.signal()
        stopped.wait()
    }

    /// Adds an input for `replica` and schedules it. A proposal that cannot be queued fails at once.
    func submit(_ input: ReplicaInput, to replica: Replica) {
        var rejected: Proposal?
        var rejectedCheck: LeadershipCheck?
        var closed: BrokerError?
        let enqueue = replica.state.withLock { s -> Bool in
            if let reason = s.closedReason {
                if case .propose(let p) = input { rejected = p; closed = reason }
                if case .confirmLeadership(let c) = input { rejectedCheck = c; closed = reason }
                return false
            }
            if s.inbox.count >= Self.inboxMax {
                if case .propose(let p) = input { rejected = p }
                if case .confirmLeadership(let c) = input { rejectedCheck = c }
                return false
            }
            s.inbox.append(input)
            if s.isScheduled { return false }
            s.isScheduled = true
            return true
        }
        if let rejected {
            rejected.completion(.failure(closed ?? .overloaded("too many writes are queued for \(replica.group); retry later")))
            return
        }
        if let rejectedCheck {
            rejectedCheck.completion(.failure(closed ?? .overloaded("too many requests are queued for \(replica.group); retry later")))
            return
        }
        if enqueue { schedule(replica) }
    }

    /// Queues `replica` for the next round. Call only after flipping `isScheduled` to true.
    func schedule(_ replica: Replica) {
        queue.withLock { $0.append(replica) }
        wakeup.signal()
    }

    private func run() {
        while true {
            wakeup.wait()
            if stopping.load(ordering: .acquiring) { break }
            let batch = queue.withLock { q -> [Replica] in
                defer { q.removeAll(keepingCapacity: true) }
                return q
            }
            if batch.isEmpty { continue }
            guard let host = host.withLock({ $0 }) else { continue }
            round(batch, host: host)
        }
        stopped.signal()
    }

    private struct Work {
        var replica: Replica
        var ready: Ready
        var sync: PendingSync?
        var syncFailure: BrokerError?
        /// A leader's appends and heartbeats of a Ready that changes no term or vote: they may leave
        /// before the leader's own fsync (Raft dissertation §10.2.1 — the leader counts itself only
        /// once durable, followers acknowledge only what they made durable). Saves one fsync of latency.
        var sendEarly = false
    }

    private func round(_ batch: [Replica], host: any RaftDriverHost) {
        let now = host.nowMilliseconds()
        var works: [Work] = []
        var failures: [(@Sendable (Result<Offset, BrokerError>) -> Void, BrokerError)] = []
        var answers: [(@Sendable (Result<Offset, BrokerError>) -> Void, Offset)] = []

        // 1. inputs, ready, write
        for replica in batch {
            replica.state.withLock { s in
                s.isScheduled = false
                let inputs = s.inbox
                s.inbox.removeAll(keepingCapacity: true)
                if s.closedReason != nil {
                    for case .propose(let p) in inputs { failures.append((p.completion, s.closedReason!)) }
                    for case .confirmLeadership(let c) in inputs { failures.append((c.completion, s.closedReason!)) }
                    return
                }
                for input in inputs {
                    switch input {
                    case .tick: s.node.tick()
                    case .step(let e): s.node.step(e)
                    case .transfer(let target): try? s.node.transferLeadership(to: target)
                    // Refused while another change is pending: the caller asks again on a later tick.
                    case .membership(let change): _ = try? s.node.proposeMembershipChange(change)
                    case .retention:
                        // Between advance and ready: the node reads committed batches after
                        // `applied` from storage, so retention stops there.
                        do {
                            let removed = try s.storage.enforceRetention(nowMilliseconds: now, commit: min(s.node.commit, s.node.applied))
                            if removed > 0 { s.highWatermark = max(s.highWatermark, s.log.logStartOffset) }
                        } catch {
                            s.closedReason = .storage("retention on \(replica.group) failed: \(error)")
                        }
                    case .propose(let p): Self.propose(p, in: &s, now: now, failures: &failures, answers: &answers)
                    case .confirmLeadership(let check):
                        do throws(ProposalError) {
                            try s.node.readIndex(context: check.id)
                            s.leadershipChecks[check.id] = check
                        } catch {
                            let e: BrokerError = switch error {
                            case .notLeader(let leader): .notLeader("this broker does not lead \(replica.group)", leader: leader)
                            case .pendingReadsLimit: .overloaded("too many reads are waiting for \(replica.group) to confirm its leader; retry later")
                            default: .notLeader("the leader of \(replica.group) is not ready yet (\(error)); retry", leader: nil)
                            }
                            failures.append((check.completion, e))
                        }
                    }
                }
                // A check whose heartbeats were never acknowledged (a deposed or cut-off leader)
                // fails after its deadline; the caller retries elsewhere.
                for (id, check) in s.leadershipChecks where check.deadline <= now {
                    s.leadershipChecks[id] = nil
                    failures.append((check.completion, .notLeader("\(replica.group): a majority did not confirm this leader in time", leader: nil)))
                }
                guard s.closedReason == nil, s.node.hasReady else { return }
                let ready = s.node.ready()
                do {
                    try s.storage.write(ready, nowMilliseconds: now)
                    let early = s.node.role == .leader && ready.softState == nil && ready.snapshot == nil
                        && (ready.hardState.map { $0.term == s.term && $0.vote == s.node.vote } ?? true)
                    works.append(Work(replica: replica, ready: ready, sync: s.storage.beginSync(), sendEarly: early))
                } catch {
                    works.append(Work(replica: replica, ready: ready, sync: nil, syncFailure: .storage("writing \(replica.group) failed: \(error)")))
                }
            }
        }
        for (c, e) in failures { c(.failure(e)) }
        for (c, o) in answers { c(.success(o)) }
        failures.removeAll()
        answers.removeAll()

        // 2a. a leader's replication traffic goes out while its own disk works
        var early: [NodeID: [GroupEnvelope]] = [:]
        for w in works where w.syncFailure == nil && w.sendEarly {
            for m in w.ready.messages { early[m.to, default: []].append(GroupEnvelope(group: w.replica.group, envelope: m)) }
        }
        for (to, envelopes) in early { host.send(envelopes, to: to) }

        // 2. fsync, no lock held
        for i in works.indices where works[i].syncFailure == nil {
            do { try works[i].sync?.perform() } catch {
                works[i].syncFailure = .storage("fsync of \(works[i].replica.group) failed: \(error)")
            }
        }

        // 3. send — only what is durable (a failed write or fsync sends nothing)
        var outgoing: [NodeID: [GroupEnvelope]] = [:]
        for w in works where w.syncFailure == nil && !w.sendEarly {
            for m in w.ready.messages { outgoing[m.to, default: []].append(GroupEnvelope(group: w.replica.group, envelope: m)) }
        }
        for (to, envelopes) in outgoing { host.send(envelopes, to: to) }

        // 4. advance, high watermark, waiters
        var readers: [(Replica, ReadWaiter)] = []
        var applies: [(Replica, [RecordBatch])] = []
        var changes: [(Replica, SoftState)] = []
        for w in works {
            let replica = w.replica
            let reschedule = replica.state.withLock { s -> Bool in
                if let failure = w.syncFailure {
                    // The durable content of the files is unknown: stop serving this replica (Kafka
                    // takes the log dir offline) rather than acknowledge or vote on anything more.
                    s.closedReason = failure
                    for a in s.appendWaiters { failures.append((a.completion, failure)) }
                    s.appendWaiters.removeAll()
                    for r in s.readWaiters { readers.append((replica, r)) }
                    s.readWaiters.removeAll()
                    return false
                }
                if let sync = w.sync { s.storage.completeSync(sync) }
                s.node.advance(w.ready)
                var becameLeader = false
                if let soft = w.ready.softState {
                    becameLeader = soft.role == .leader && s.role != .leader
                    if becameLeader { s.leaderTermStart = s.log.logEndOffset - 1 }
                    if soft.role != .leader { s.leaderTermStart = Offset(Int64.max) }
                    s.role = soft.role
                    s.leader = soft.leader
                    s.term = soft.term
                    changes.append((replica, soft))
                }
                s.noteCaughtUp(now: now, becameLeader: becameLeader)
                let newHighWatermark = max(s.node.commit + 1, s.log.logStartOffset)
                // Acknowledge what the acks level allows, fail what can no longer be known.
                let isLeader = s.role == .leader
                let durable = s.storage.durableOffset
                s.appendWaiters.removeAll { a in
                    if !isLeader || a.term != s.term {
                        failures.append((a.completion, .unavailable("leadership of \(replica.group) moved before the write was acknowledged; it may or may not have been written")))
                        return true
                    }
                    let done = a.acks == .all ? a.lastOffset < newHighWatermark : a.lastOffset <= durable
                    if done {
                        answers.append((a.completion, a.baseOffset))
                        return true
                    }
                    if a.deadline <= now {
                        failures.append((a.completion, .unavailable("timed out waiting for replication of \(replica.group); the write may or may not be committed")))
                        return true
                    }
                    return false
                }
                if newHighWatermark > s.highWatermark {
                    s.highWatermark = newHighWatermark
                    s.readWaiters.removeAll { r in
                        if r.from < newHighWatermark {
                            readers.append((replica, r))
                            return true
                        }
                        return false
                    }
                }
                for r in w.ready.readStates {
                    if let check = s.leadershipChecks.removeValue(forKey: r.context) { answers.append((check.completion, r.offset)) }
                }
                if s.role != .leader {
                    for check in s.leadershipChecks.values { failures.append((check.completion, .notLeader("\(replica.group) changed leader", leader: s.leader))) }
                    s.leadershipChecks.removeAll()
                }
                if !w.ready.committedEntries.isEmpty { applies.append((replica, w.ready.committedEntries)) }
                if let failure = s.storage.readFailure {
                    // A query the node made could not read the log: its answers can no longer be
                    // trusted. Stop serving; a restart reopens and recovers the replica.
                    s.closedReason = .storage("reading \(replica.group) failed: \(failure)")
                    for a in s.appendWaiters { failures.append((a.completion, s.closedReason!)) }
                    s.appendWaiters.removeAll()
                    return false
                }
                guard s.node.hasReady || !s.inbox.isEmpty, !s.isScheduled else { return false }
                s.isScheduled = true
                return true
            }
            if reschedule { schedule(replica) }
        }
        for (c, e) in failures { c(.failure(e)) }
        for (c, o) in answers { c(.success(o)) }
        for (replica, entries) in applies { host.apply(entries, from: replica) }
        for (replica, soft) in changes { host.softStateChanged(replica, soft) }
        for (replica, r) in readers { host.serve(r, on: replica) }
        for w in works where !w.ready.events.isEmpty { host.log(events: w.ready.events, of: w.replica) }
    }

    private static func propose(_ p: Proposal, in s: inout ReplicaState, now: Int64,
                                failures: inout [(@Sendable (Result<Offset, BrokerError>) -> Void, BrokerError)],
                                answers: inout [(@Sendable (Result<Offset, BrokerError>) -> Void, Offset)]) {
        guard s.node.role == .leader else {
            failures.append((p.completion, .notLeader("this broker does not lead the partition", leader: s.node.leader)))
            return
        }
        if p.acks == .all {
            let inSync = s.inSyncReplicas(now: now).count
            if inSync < s.minInSyncReplicas {
                failures.append((p.completion, .notEnoughReplicas("\(inSync) replicas are in sync, fewer than min.insync.replicas=\(s.minInSyncReplicas); acks=all writes are refused (nothing was written)")))
                return
            }
        }
        let position: LogPosition
        do {
            position = try s.node.propose(p.batch)
        } catch {
            let e: BrokerError = switch error {
            case .notLeader(let leader): .notLeader("this broker does not lead the partition", leader: leader)
            case .uncommittedBytesLimit: .overloaded("too many uncommitted bytes on the leader; retry later (nothing was written)")
            case .leadershipTransferInProgress: .notLeader("leadership is being transferred (nothing was written); retry", leader: s.node.transferee)
            default: .unavailable("the proposal was refused: \(error)")
            }
            failures.append((p.completion, e))
            return
        }
        let base = position.offset - Int64(p.batch.lastOffsetDelta)
        if p.acks == .none {
            answers.append((p.completion, base))
            return
        }
        s.appendWaiters.append(AppendWaiter(lastOffset: position.offset, baseOffset: base, term: position.term, acks: p.acks, deadline: p.deadline, completion: p.completion))
    }
}

/// What the driver needs from the broker around it.
protocol RaftDriverHost: Sendable {
    func nowMilliseconds() -> Int64
    func send(_ envelopes: [GroupEnvelope], to peer: NodeID)
    /// Committed entries of a group with a state machine (the metadata log), in order.
    func apply(_ entries: [RecordBatch], from replica: Replica)
    func softStateChanged(_ replica: Replica, _ soft: SoftState)
    func serve(_ waiter: ReadWaiter, on replica: Replica)
    func log(events: [RaftEvent], of replica: Replica)
}

import BrokerModel
import ClusterState
import Dispatch
import Synchronization

/// A member's long-poll over its assigned partitions.
///
/// 1. Auto-commit: what the previous polls delivered is committed first (at-least-once: a crash
///    before this commit re-delivers those records to whoever owns the partition next).
/// 2. Every assigned partition is read at the member's position (the committed offset, else
///    `auto_offset_reset`) without waiting; if any has records, they are the answer.
/// 3. Otherwise every partition is read again with the wait; the first with records answers. A
///    rebalance or the member's removal ends the wait at once.
/// 4. Before answering, the coordinator checks that the generation did not change while the reads
///    ran: records of a partition the member may no longer own are never handed out (its position
///    does not move, so they are not lost either).
extension GroupCoordinator {
    func poll(_ r: GroupPollRequest, _ p: Int32, _ completion: @escaping Answer) {
        let started = partitions.withLock { all -> Bool in
            guard all[p]!.groups.groups[r.group]?.members[r.member] != nil else { return false }
            touch(p, r.group, r.member, in: &all)
            all[p]!.sessions[r.group]?[r.member]?.activePolls += 1
            return true
        }
        guard started else { return completion(.failure(unknownMember(r.group, r.member))) }
        let done = Once<Result<GroupAnswer, BrokerError>> { [self] result in
            partitions.withLock { all in
                touch(p, r.group, r.member, in: &all)
                if let n = all[p]!.sessions[r.group]?[r.member]?.activePolls, n > 0 { all[p]!.sessions[r.group]?[r.member]?.activePolls = n - 1 }
            }
            completion(result)
        }
        if let (generation, entries) = autoCommitEntries(r.group, r.member, p) {
            let commit = GroupCommitRequest(group: r.group, member: r.member, generation: generation, offsets: entries)
            handle(.commit(commit)) { [self] result in
                if case .failure(let e) = result { logger.debug("auto-commit of \(r.member) in \(r.group) failed: \(e)") }
                read(r, p, waiting: false, done)
            }
        } else {
            read(r, p, waiting: false, done)
        }
    }

    private struct Plan {
        var generation: Int32
        var reads: [ReadRequest]
        var reset: AutoOffsetReset
    }

    private func plan(_ r: GroupPollRequest, _ p: Int32, wait: Int) -> Result<Plan, BrokerError> {
        partitions.withLock { all -> Result<Plan, BrokerError> in
            guard let group = all[p]!.groups.groups[r.group], let member = group.members[r.member] else { return .failure(unknownMember(r.group, r.member)) }
            let assigned = group.assignment[r.member] ?? []
            let session = all[p]!.sessions[r.group]?[r.member]
            let share = max(1, r.maxRecords / max(1, assigned.count))
            let bytes = max(1, r.maxBytes / max(1, assigned.count))
            var reads: [ReadRequest] = []
            for tp in assigned {
                let spec: OffsetSpec
                if let o = session?.positions[tp] ?? group.offsets[tp]?.offset {
                    spec = .exact(o)
                } else {
                    switch member.autoOffsetReset {
                    case .earliest: spec = .earliest
                    case .latest: spec = .latest
                    case .none: return .failure(.illegalState("no committed offset for \(tp) in group \(r.group) and auto_offset_reset is none: commit or reset offsets first"))
                    }
                }
                reads.append(ReadRequest(topic: tp.topic, partition: tp.partition, offset: spec, maxRecords: share, maxBytes: bytes, waitMilliseconds: wait))
            }
            return .success(Plan(generation: group.generation, reads: reads, reset: member.autoOffsetReset))
        }
    }

    private func read(_ r: GroupPollRequest, _ p: Int32, waiting: Bool, _ done: Once<Result<GroupAnswer, BrokerError>>) {
        let wait = waiting ? r.waitMilliseconds : 0
        let plan: Plan
        switch self.plan(r, p, wait: wait) {
        case .failure(let e): return done.call(.failure(e))
        case .success(let x): plan = x
        }
        let pollID = pollCounter.wrappingAdd(1, ordering: .relaxed).oldValue
        if waiting {
            // A rebalance (or the member's removal) ends the wait: the member learns its new
            // assignment now instead of after wait_ms.
            let registered = partitions.withLock { all -> Bool in
                guard all[p]!.sessions[r.group]?[r.member] != nil else { return false }
                all[p]!.sessions[r.group]?[r.member]?.wakers[pollID] = { [self] in finish(r, p, plan.generation, [], done) }
                return true
            }
            if !registered { return finish(r, p, plan.generation, [], done) }
            if plan.reads.isEmpty {
                // Nothing assigned (more members than partitions): wait for a rebalance or the timeout.
                DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(wait)) { [self] in finish(r, p, plan.generation, [], done, pollID) }
                return
            }
        }
        if plan.reads.isEmpty { return read(r, p, waiting: true, done) }
        let gather = PollGather(count: plan.reads.count)
        for request in plan.reads {
            readOne(request, reset: plan.reset) { [self] result in
                let records: ReadResult?
                switch result {
                case .success(let x): records = x
                case .failure(let e):
                    // A partition that cannot be read now (no leader, topic deleted) does not hold
                    // up the others; its position stays where it was.
                    logger.debug("group poll read of \(request.topic)-\(request.partition) failed: \(e)")
                    records = nil
                }
                let (hasData, finished, all) = gather.add(records)
                if waiting {
                    if hasData { finish(r, p, plan.generation, all.filter { $0.nextOffset > $0.fromOffset }, done, pollID) }
                    else if finished { finish(r, p, plan.generation, all, done, pollID) }
                } else if finished {
                    if all.contains(where: { $0.nextOffset > $0.fromOffset }) || r.waitMilliseconds <= 0 {
                        finish(r, p, plan.generation, all, done, pollID)
                    } else {
                        // Nothing yet: resolve positions (earliest/latest) from these answers, then wait.
                        finishPositions(r, p, plan.generation, all)
                        self.read(r, p, waiting: true, done)
                    }
                }
            }
        }
    }

    /// One partition read; an offset that retention (or a re-created topic) left behind falls back
    /// to `auto_offset_reset`, as Kafka's consumer does.
    private func readOne(_ request: ReadRequest, reset: AutoOffsetReset, _ completion: @escaping @Sendable (Result<ReadResult, BrokerError>) -> Void) {
        host.read(request) { [self] result in
            guard case .failure(.offsetOutOfRange) = result, case .exact = request.offset, reset != .none else { return completion(result) }
            var again = request
            again.offset = reset == .earliest ? .earliest : .latest
            host.read(again, completion: completion)
        }
    }

    /// Records positions from reads that returned nothing, so `latest` means "from now on" once.
    private func finishPositions(_ r: GroupPollRequest, _ p: Int32, _ generation: Int32, _ reads: [ReadResult]) {
        partitions.withLock { all in
            guard all[p]!.groups.groups[r.group]?.generation == generation else { return }
            for x in reads { all[p]!.sessions[r.group]?[r.member]?.positions[TopicPartition(x.topic, x.partition)] = x.nextOffset }
        }
    }

    private func finish(_ r: GroupPollRequest, _ p: Int32, _ generation: Int32, _ reads: [ReadResult],
                        _ done: Once<Result<GroupAnswer, BrokerError>>, _ pollID: UInt64? = nil) {
        let outcome = partitions.withLock { all -> (@Sendable (Result<GroupAnswer, BrokerError>) -> Void, Result<GroupAnswer, BrokerError>)? in
            if let pollID { all[p]!.sessions[r.group]?[r.member]?.wakers[pollID] = nil }
            // Claimed under the lock: the answer that moves positions is the one the client gets.
            guard let answer = done.claim() else { return nil }
            guard let view = membership(all[p]!.groups, r.group, r.member) else { return (answer, .failure(unknownMember(r.group, r.member))) }
            // A rebalance while the reads ran: hand out nothing (positions stay, nothing is lost).
            guard view.generation == generation else { return (answer, .success(.poll(membership: view, reads: []))) }
            var delivered: [ReadResult] = []
            // Reads of several partitions may together pass max_records: the answer (and the
            // positions) end at the record that reaches it.
            var budget = r.maxRecords
            for var x in reads {
                guard budget > 0 else { break }
                var count = 0
                var cut: Offset?
                try? x.forEachRecordView { (v: RecordView) throws(DecodeError) -> Bool in
                    if count == budget {
                        cut = v.offset
                        return false
                    }
                    count += 1
                    return true
                }
                if let cut { x.nextOffset = cut }
                budget -= count
                let tp = TopicPartition(x.topic, x.partition)
                all[p]!.sessions[r.group]?[r.member]?.positions[tp] = x.nextOffset
                if x.nextOffset > x.fromOffset {
                    all[p]!.sessions[r.group]?[r.member]?.delivered[tp] = x.nextOffset
                    delivered.append(x)
                }
            }
            return (answer, .success(.poll(membership: view, reads: delivered)))
        }
        if let (answer, result) = outcome { answer(result) }
    }
}

/// Collects the answers of one poll's partition reads.
final class PollGather: Sendable {
    private let state: Mutex<(expected: Int, results: [ReadResult], answered: Int)>
    init(count: Int) { state = Mutex((count, [], 0)) }

    /// Returns whether this answer has records, whether all answers are in, and all results so far.
    func add(_ result: ReadResult?) -> (Bool, Bool, [ReadResult]) {
        state.withLock { s in
            s.answered += 1
            if let result { s.results.append(result) }
            let hasData = result.map { $0.nextOffset > $0.fromOffset } ?? false
            return (hasData, s.answered == s.expected, s.results)
        }
    }
}

import BrokerModel
import ClusterState
import Consensus
import Dispatch
import LogStorage
import Synchronization

/// Produce and read in a cluster: done here when this broker leads the partition, forwarded to the
/// leader otherwise. A forwarded request is served by the receiver or refused with `notLeader`
/// (never forwarded twice); the sender then retries at the leader named in the refusal, a bounded
/// number of times — so the client cannot tell which broker it reached.
extension ClusterNode {
    static let forwardAttemptsMax = 8
    static let silentPeerMilliseconds: Int64 = 3_000

    // MARK: - produce

    func produce(topic: TopicName, records: [ProduceRecord], acks: Acks,
                 completion: @escaping @Sendable (Result<[RecordPlacement], BrokerError>) -> Void) {
        do throws(BrokerError) {
            guard !isStopping.load(ordering: .relaxed) else { throw .shuttingDown }
            try ProducePlan.checkCount(records, limits: configuration.limits)
            guard let t = state.withLock({ $0.metadata.topics[topic] }) else { throw unknownTopic(topic) }
            let config = topicConfig(t)
            let partitionCount = Int32(t.partitions.count)
            let sticky = PartitionID(Int32(stickyCounter.wrappingAdd(1, ordering: .relaxed).oldValue & 0x3fff_ffff) % partitionCount)
            let byPartition = try ProducePlan(topic: topic, records: records, partitionCount: partitionCount, sticky: sticky,
                                              now: clock(), maxMessageBytes: config.maxMessageBytes, limits: configuration.limits).byPartition
            let tracker = ClusterProduceTracker(count: records.count, partitions: byPartition.count, completion: completion)
            metrics.recordsProduced.wrappingAdd(records.count, ordering: .relaxed)
            for (p, items) in byPartition.sorted(by: { $0.key < $1.key }) {
                let batches = ProducePlan.batches(items.map(\.record), maxBatchBytes: config.maxMessageBytes)
                let group = TopicPartition(topic, PartitionID(p))
                route(group, batches: batches, acks: acks, attempt: 0) { result in
                    switch result {
                    case .failure(let e): tracker.fail(e)
                    case .success(let bases):
                        var placed: [(Int, RecordPlacement)] = []
                        var k = 0
                        for (batch, base) in zip(batches, bases) {
                            for i in 0..<Int(batch.recordCount) {
                                let item = items[k]
                                placed.append((item.index, RecordPlacement(partition: PartitionID(p), offset: acks == .none ? nil : base + Int64(i), timestamp: item.record.timestamp)))
                                k += 1
                            }
                        }
                        tracker.partitionDone(placed)
                    }
                }
            }
        } catch {
            completion(.failure(error))
        }
    }

    /// The broker most likely to lead `group`: this one if its replica leads, else the freshest report,
    /// else what this broker's replica believes, else the first replica in the assignment.
    func leaderGuess(_ group: TopicPartition, hint: NodeID? = nil) -> NodeID? {
        if let hint { return hint }
        if let r = replica(group) {
            let (role, leader) = r.state.withLock { ($0.role, $0.leader) }
            if role == .leader { return nodeID }
            if let leader { return leader }
        }
        let now = monotonicMilliseconds()
        return state.withLock { s -> NodeID? in
            if let r = s.reports[group], now - r.receivedMilliseconds < 3_000 { return r.report.leader }
            return s.metadata.topics[group.topic]?.partitions.first { $0.partition == group.partition }?.replicas.first
        }
    }

    /// Retries after `notLeader` (nothing was written, so a retry cannot duplicate), waiting a little
    /// when no leader is known yet (an election is running). Any other outcome is final.
    func retrying<T: Sendable>(_ group: TopicPartition, attempt: Int, hint: NodeID? = nil, idempotent: Bool,
                                _ operation: @escaping @Sendable (NodeID, @escaping @Sendable (Result<T, BrokerError>) -> Void) -> Void,
                                completion: @escaping @Sendable (Result<T, BrokerError>) -> Void) {
        guard let target = leaderGuess(group, hint: hint) else {
            return completion(.failure(.notLeader("no leader is known for \(group)", leader: nil)))
        }
        // A broker silent for seconds is not sent anything: waiting out a produce timeout against
        // it would only delay the 503 (a cut-off broker). Nothing is sent, so retrying is safe.
        let silence = target == nodeID ? 0 : (transport.millisecondsSinceContact(target) ?? Int64.max)
        let isSilent = silence > Self.silentPeerMilliseconds
        let run: @Sendable (NodeID, @escaping @Sendable (Result<T, BrokerError>) -> Void) -> Void
        if isSilent {
            run = { target, done in
                done(.failure(.notLeader("broker \(target) has not been heard from for more than \(ClusterNode.silentPeerMilliseconds) ms (nothing was sent)", leader: nil)))
            }
        } else {
            run = operation
        }
        run(target) { [self] raw in
            var result = raw
            // A refused connection is retried elsewhere only for reads. A produce may not be: libcurl
            // silently re-sends a request whose reused connection died, so "couldn't connect" can be
            // the second attempt of a request the dead leader had already received and replicated —
            // retrying it on the new leader wrote it twice (found by test_leader_kills).
            if idempotent, case .failure(.unavailable(let m)) = raw, target != nodeID, m.contains("Couldn't connect") {
                result = .failure(.notLeader(m, leader: nil))
            }
            guard case .failure(.notLeader(let message, let leader)) = result, attempt + 1 < Self.forwardAttemptsMax,
                  !isStopping.load(ordering: .relaxed) else {
                if case .failure(.notLeader(let message, _)) = result {
                    return completion(.failure(.notLeader("no leader for \(group) after \(attempt + 1) attempts (\(message)); retry", leader: nil)))
                }
                return completion(result)
            }
            _ = message
            let next: NodeID? = (leader != nil && leader != target) ? leader : nil
            // Without a named leader an election or a transfer is under way: 25, 50, 100 ... ms.
            // A named leader is tried at once, but not twice in a row without a pause: during a
            // transfer the old and the new leader may each name the other for a moment.
            let delay = next == nil || attempt >= 2 ? 25 << attempt : 0
            DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(delay)) {
                self.retrying(group, attempt: attempt + 1, hint: next, idempotent: idempotent, operation, completion: completion)
            }
        }
    }

    func route(_ group: TopicPartition, batches: [RecordBatch], acks: Acks, attempt: Int,
               completion: @escaping @Sendable (Result<[Offset], BrokerError>) -> Void) {
        retrying(group, attempt: attempt, idempotent: false, { [self] target, done in
            if target == nodeID { return produceLocally(group, batches: batches, acks: acks, completion: done) }
            let body = PeerCall.Produce(group: group, acks: acks, batches: batches).encode()
            transport.call(target, method: PeerCall.produce, body: body, timeoutMilliseconds: Int(cluster.produceTimeoutMilliseconds) + cluster.forwardTimeoutMilliseconds) { result in
                done(result.flatMap { bytes in
                    guard let o = try? PeerCall.decodeOffsets(bytes), o.count == batches.count else { return .failure(.unavailable("bad produce answer from broker \(target); the write may or may not have happened")) }
                    return .success(o)
                })
            }
        }, completion: completion)
    }

    /// Proposes `batches` to this broker's replica of `group`, which must lead. Answers each batch's
    /// base offset once `acks` is satisfied.
    func produceLocally(_ group: TopicPartition, batches: [RecordBatch], acks: Acks,
                        completion: @escaping @Sendable (Result<[Offset], BrokerError>) -> Void) {
        guard let r = replica(group), group != Self.metadataGroup else {
            return completion(.failure(.notLeader("this broker has no replica of \(group)", leader: nil)))
        }
        let (role, leader) = r.state.withLock { ($0.role, $0.leader) }
        guard role == .leader else { return completion(.failure(.notLeader("broker \(nodeID) does not lead \(group)", leader: leader))) }
        let collector = BatchCollector(count: batches.count, completion: completion)
        let deadline = clock() + cluster.produceTimeoutMilliseconds
        for (i, b) in batches.enumerated() {
            driver.submit(.propose(Proposal(batch: b, acks: acks, deadline: deadline) { collector.done(i, $0) }), to: r)
        }
    }

    // MARK: - read

    func read(_ request: ReadRequest, local: Bool, completion: @escaping @Sendable (Result<ReadResult, BrokerError>) -> Void) {
        do throws(BrokerError) {
            guard !isStopping.load(ordering: .relaxed) else { throw .shuttingDown }
            let group = TopicPartition(request.topic, request.partition)
            try checkPartition(group)
            let limits = configuration.limits
            var normalized = request
            normalized.maxRecords = min(max(request.maxRecords, 1), limits.readRecordsMax)
            normalized.maxBytes = min(max(request.maxBytes, 1), limits.readBytesMax)
            normalized.waitMilliseconds = min(max(request.waitMilliseconds, 0), limits.waitMillisecondsMax)
            if local { return readLocally(normalized, allowFollower: true, completion: completion) }
            let forwarded = normalized
            retrying(group, attempt: 0, idempotent: true, { [self] target, done in
                if target == nodeID { return readLocally(forwarded, allowFollower: false, completion: done) }
                transport.call(target, method: PeerCall.read, body: PeerCall.encode(forwarded),
                               timeoutMilliseconds: forwarded.waitMilliseconds + cluster.forwardTimeoutMilliseconds) { result in
                    done(result.flatMap { bytes in
                        do { return .success(try PeerCall.decodeReadResult(bytes, topic: request.topic, partition: request.partition)) } catch {
                            return .failure(.unavailable("bad read answer from broker \(target): \(error)"))
                        }
                    })
                }
            }, completion: { [self] result in
                if case .success(let r) = result { metrics.recordsRead.wrappingAdd(Int(r.nextOffset - r.fromOffset), ordering: .relaxed) }
                completion(result)
            })
        } catch {
            completion(.failure(error))
        }
    }

    func checkPartition(_ group: TopicPartition) throws(BrokerError) {
        guard let t = state.withLock({ $0.metadata.topics[group.topic] }) else { throw unknownTopic(group.topic) }
        guard group.partition.rawValue >= 0 && Int(group.partition.rawValue) < t.partitions.count else {
            throw .unknownPartition(topic: group.topic.rawValue, partition: group.partition.rawValue, partitionCount: Int32(t.partitions.count))
        }
    }

    /// Reads this broker's replica. Only the leader answers forwarded reads (a follower's high
    /// watermark lags); `allowFollower` serves `?local=true` from any replica, up to its own high watermark.
    func readLocally(_ request: ReadRequest, allowFollower: Bool, completion: @escaping @Sendable (Result<ReadResult, BrokerError>) -> Void) {
        let group = TopicPartition(request.topic, request.partition)
        guard let r = replica(group), group != Self.metadataGroup else {
            return completion(.failure(allowFollower ? .notFound("broker \(nodeID) holds no replica of \(group)") : .notLeader("this broker has no replica of \(group)", leader: nil)))
        }
        enum Outcome { case answer(ReadResult), park(Offset) }
        let outcome = r.state.withLock { s -> Result<Outcome, BrokerError> in
            do throws(BrokerError) {
                if let reason = s.closedReason { throw reason }
                guard allowFollower || s.role == .leader else { throw .notLeader("broker \(nodeID) does not lead \(group)", leader: s.leader) }
                let from: Offset
                switch request.offset {
                case .earliest: from = s.log.logStartOffset
                case .latest: from = s.highWatermark
                case .exact(let o):
                    guard o >= s.log.logStartOffset && o <= s.log.logEndOffset else {
                        throw .offsetOutOfRange(requested: o.rawValue, logStart: s.log.logStartOffset.rawValue, logEnd: s.log.logEndOffset.rawValue)
                    }
                    from = o
                }
                if from < s.highWatermark || request.waitMilliseconds == 0 {
                    return .success(.answer(try s.log.readCommitted(from: from, maxRecords: request.maxRecords, maxBytes: request.maxBytes,
                                                                      highWatermark: s.highWatermark, topic: request.topic, partition: request.partition)))
                }
                return .success(.park(from))
            } catch {
                return .failure(error)
            }
        }
        switch outcome {
        case .failure(let e): completion(.failure(e))
        case .success(.answer(let result)): completion(.success(result))
        case .success(.park(let from)): park(request, from: from, on: r, completion: completion)
        }
    }

    private func park(_ request: ReadRequest, from: Offset, on replica: Replica, completion: @escaping @Sendable (Result<ReadResult, BrokerError>) -> Void) {
        guard parked.wrappingAdd(1, ordering: .relaxed).newValue <= configuration.limits.parkedRequestsMax else {
            parked.wrappingSubtract(1, ordering: .relaxed)
            return completion(.failure(.overloaded("too many requests are waiting (\(configuration.limits.parkedRequestsMax)); retry later or with a shorter wait_ms")))
        }
        let waiter = ReadWaiter(request: request, from: from) { [self] result in
            parked.wrappingSubtract(1, ordering: .relaxed)
            completion(result)
        }
        let alreadyThere = replica.state.withLock { s -> Bool in
            if s.closedReason != nil || from < s.highWatermark { return true }
            s.readWaiters.append(waiter)
            return false
        }
        if alreadyThere { return serve(waiter, on: replica) }
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(request.waitMilliseconds)) { [weak self, weak replica] in
            guard let self, let replica else { return waiter.claim()?(.failure(.shuttingDown)) ?? () }
            replica.state.withLock { s in s.readWaiters.removeAll { $0 === waiter } }
            self.serve(waiter, on: replica)
        }
    }

    /// Answers a parked reader with whatever is committed now (possibly nothing).
    func serve(_ waiter: ReadWaiter, on replica: Replica) {
        guard let completion = waiter.claim() else { return }
        let r = waiter.request
        let result = replica.state.withLock { s -> Result<ReadResult, BrokerError> in
            if let reason = s.closedReason {
                if case .shuttingDown = reason {
                    return .success(ReadResult(topic: r.topic, partition: r.partition, batches: [], fromOffset: waiter.from, nextOffset: waiter.from,
                                               highWatermark: s.highWatermark, logStartOffset: s.log.logStartOffset, logEndOffset: s.log.logEndOffset))
                }
                return .failure(reason)
            }
            do throws(BrokerError) {
                let from = max(waiter.from, s.log.logStartOffset)
                return .success(try s.log.readCommitted(from: from, maxRecords: r.maxRecords, maxBytes: r.maxBytes, highWatermark: s.highWatermark,
                                                        topic: r.topic, partition: r.partition))
            } catch {
                return .failure(error)
            }
        }
        completion(result)
    }

    // MARK: - offsets

    func localLeaderOffsets(_ group: TopicPartition) throws(BrokerError) -> PartitionOffsets {
        guard let r = replica(group), group != Self.metadataGroup else { throw .notLeader("this broker has no replica of \(group)", leader: nil) }
        let result = r.state.withLock { s -> Result<PartitionOffsets, BrokerError> in
            if let reason = s.closedReason { return .failure(reason) }
            guard s.role == .leader else { return .failure(.notLeader("broker \(nodeID) does not lead \(group)", leader: s.leader)) }
            return .success(s.offsets)
        }
        return try result.get()
    }

    /// Offsets as the leader sees them: exact here when this broker leads, else from the leader's
    /// latest report (at most half a second old).
    func offsets(_ group: TopicPartition) throws(BrokerError) -> PartitionOffsets {
        try checkPartition(group)
        if let o = try? localLeaderOffsets(group) { return o }
        let now = monotonicMilliseconds()
        if let report = state.withLock({ $0.reports[group] }), now - report.receivedMilliseconds < 3_000 { return report.report.offsets }
        throw .notLeader("no leader is known for \(group); retry", leader: nil)
    }

    func offset(_ group: TopicPartition, forTimestamp timestamp: Int64) throws(BrokerError) -> Offset? {
        try checkPartition(group)
        guard let r = replica(group) else { throw .unavailable("broker \(nodeID) holds no replica of \(group); ask a broker that does (see GET /v1/topics/\(group.topic))") }
        let result = r.state.withLock { s -> Result<Offset?, BrokerError> in
            if let reason = s.closedReason { return .failure(reason) }
            do { return .success(try s.log.firstOffset(atOrAfter: timestamp, below: s.highWatermark)) } catch {
                return .failure(.storage("timestamp lookup on \(group) failed: \(error)"))
            }
        }
        return try result.get()
    }
}

/// Collects the base offsets of one partition's batches; answers when all are in, or at the first failure.
final class BatchCollector: Sendable {
    private struct State {
        var offsets: [Offset?]
        var remaining: Int
        var completion: (@Sendable (Result<[Offset], BrokerError>) -> Void)?
    }
    private let state: Mutex<State>
    init(count: Int, completion: @escaping @Sendable (Result<[Offset], BrokerError>) -> Void) {
        state = Mutex(State(offsets: Array(repeating: nil, count: count), remaining: count, completion: completion))
    }
    func done(_ index: Int, _ result: Result<Offset, BrokerError>) {
        let answer = state.withLock { s -> ((@Sendable (Result<[Offset], BrokerError>) -> Void), Result<[Offset], BrokerError>)? in
            guard let c = s.completion else { return nil }
            switch result {
            case .failure(let e):
                s.completion = nil
                return (c, .failure(e))
            case .success(let o):
                s.offsets[index] = o
                s.remaining -= 1
                guard s.remaining == 0 else { return nil }
                s.completion = nil
                return (c, .success(s.offsets.map { $0! }))
            }
        }
        if let (c, r) = answer { c(r) }
    }
}

/// One produce request over several partitions: answers when every partition answered, or at the
/// first failure (the other partitions' writes may still happen: the client sees 503 "unknown").
final class ClusterProduceTracker: Sendable {
    private struct State {
        var placements: [RecordPlacement?]
        var remaining: Int
        var completion: (@Sendable (Result<[RecordPlacement], BrokerError>) -> Void)?
    }
    private let state: Mutex<State>
    init(count: Int, partitions: Int, completion: @escaping @Sendable (Result<[RecordPlacement], BrokerError>) -> Void) {
        state = Mutex(State(placements: Array(repeating: nil, count: count), remaining: partitions, completion: completion))
    }
    func partitionDone(_ placed: [(Int, RecordPlacement)]) {
        let answer = state.withLock { s -> ((@Sendable (Result<[RecordPlacement], BrokerError>) -> Void), [RecordPlacement])? in
            guard let c = s.completion else { return nil }
            for (i, p) in placed { s.placements[i] = p }
            s.remaining -= 1
            guard s.remaining == 0 else { return nil }
            s.completion = nil
            return (c, s.placements.map { $0! })
        }
        if let (c, p) = answer { c(.success(p)) }
    }
    func fail(_ error: BrokerError) {
        let c = state.withLock { s in
            defer { s.completion = nil }
            return s.completion
        }
        c?(.failure(error))
    }
}

import BrokerModel
import ClusterState
import Dispatch
import Foundation
import Synchronization

/// The internal topic that holds every group's records (Kafka's name, so tools recognise it).
public enum GroupsTopic {
    public static let name = TopicName("__consumer_offsets")!
    /// Coordinator partitions. Fixed: a group's coordinator partition is murmur2(group) mod this,
    /// so it may never change on a running cluster (Kafka's offsets.topic.num.partitions, default 50;
    /// fewer here because every partition is a Raft group).
    public static let partitionCount: Int32 = 8
    /// Never deleted by retention: the records are the groups (there is no compaction yet, so the
    /// log grows with every commit; see the README).
    static let configs: [String: String] = ["retention.ms": "-1", "retention.bytes": "-1"]
}

// MARK: - the façade's group calls (single node and cluster)

extension Broker {
    func groupCall(_ call: GroupCall, completion: @escaping @Sendable (Result<GroupAnswer, BrokerError>) -> Void) {
        if let c = clusterNode { return c.groupCall(call, completion: completion) }
        guard let coordinator = groupCoordinator else { return completion(.failure(.shuttingDown)) }
        if case .list = call {
            // One node: every coordinator partition is here.
            let all = Mutex<[GroupSummary]>([])
            let left = Atomic<Int>(Int(GroupsTopic.partitionCount))
            for p in 0..<GroupsTopic.partitionCount {
                coordinator.handle(.list(partition: p)) { result in
                    if case .success(.list(let s)) = result { all.withLock { $0 += s } }
                    if left.wrappingSubtract(1, ordering: .acquiringAndReleasing).newValue == 0 {
                        completion(.success(.list(all.withLock { $0 }.sorted { $0.group < $1.group })))
                    }
                }
            }
            return
        }
        coordinator.handle(call, completion: completion)
    }

    private func expect<T: Sendable>(_ call: GroupCall, _ completion: @escaping @Sendable (Result<T, BrokerError>) -> Void,
                                     _ extract: @escaping @Sendable (GroupAnswer) -> T?) {
        groupCall(call) { result in
            completion(result.flatMap { answer in
                extract(answer).map { .success($0) } ?? .failure(.unavailable("unexpected answer from the group coordinator"))
            })
        }
    }

    /// Joins (or creates) a group; the answer carries the member id, generation and assignment.
    public func joinGroup(_ request: JoinGroupRequest, completion: @escaping @Sendable (Result<GroupMembership, BrokerError>) -> Void) {
        expect(.join(request), completion) { if case .membership(let m) = $0 { m } else { nil } }
    }

    public func leaveGroup(_ group: GroupID, member: MemberID, completion: @escaping @Sendable (Result<Void, BrokerError>) -> Void) {
        expect(.leave(group: group, member: member), completion) { if case .done = $0 { () } else { nil } }
    }

    /// Keeps a member alive without reading; answers its current generation and assignment.
    public func heartbeat(_ group: GroupID, member: MemberID, completion: @escaping @Sendable (Result<GroupMembership, BrokerError>) -> Void) {
        expect(.heartbeat(group: group, member: member), completion) { if case .membership(let m) = $0 { m } else { nil } }
    }

    public func pollGroup(_ request: GroupPollRequest, completion: @escaping @Sendable (Result<GroupPollResult, BrokerError>) -> Void) {
        var normalized = request
        let limits = configuration.limits
        normalized.maxRecords = min(max(request.maxRecords, 1), limits.readRecordsMax)
        normalized.maxBytes = min(max(request.maxBytes, 1), limits.readBytesMax)
        normalized.waitMilliseconds = min(max(request.waitMilliseconds, 0), limits.waitMillisecondsMax)
        expect(.poll(normalized), completion) { if case .poll(let m, let reads) = $0 { GroupPollResult(membership: m, reads: reads) } else { nil } }
    }

    /// Commits offsets (the next offset to read); answers how many were stored.
    public func commitGroupOffsets(_ request: GroupCommitRequest, completion: @escaping @Sendable (Result<Int, BrokerError>) -> Void) {
        expect(.commit(request), completion) { if case .committed(let n) = $0 { n } else { nil } }
    }

    /// Committed offsets of `partitions`, of the member's assignment, or (both nil) of the whole group.
    public func groupOffsets(_ group: GroupID, member: MemberID?, partitions: [TopicPartition]?,
                             completion: @escaping @Sendable (Result<[GroupOffset], BrokerError>) -> Void) {
        expect(.fetchOffsets(group: group, member: member, partitions: partitions), completion) { if case .offsets(let o) = $0 { o } else { nil } }
    }

    public func describeGroup(_ group: GroupID, completion: @escaping @Sendable (Result<GroupDescription, BrokerError>) -> Void) {
        expect(.describe(group), completion) { if case .description(let d) = $0 { d } else { nil } }
    }

    public func listGroups(completion: @escaping @Sendable (Result<[GroupSummary], BrokerError>) -> Void) {
        expect(.list(partition: 0), completion) { if case .list(let l) = $0 { l } else { nil } }
    }

    public func deleteGroup(_ group: GroupID, completion: @escaping @Sendable (Result<Void, BrokerError>) -> Void) {
        expect(.delete(group), completion) { if case .done = $0 { () } else { nil } }
    }

    /// Moves a group's offsets while it has no members; answers the offsets set.
    public func resetGroupOffsets(_ group: GroupID, topics: [TopicName], to target: OffsetResetTarget,
                                  completion: @escaping @Sendable (Result<[GroupOffset], BrokerError>) -> Void) {
        expect(.reset(group: group, topics: topics, target: target), completion) { if case .offsets(let o) = $0 { o } else { nil } }
    }

    /// Changes a member's subscription (or switches it to a manual assignment); rebalances.
    public func updateSubscription(_ group: GroupID, member: MemberID, topics: [TopicName], manualPartitions: [TopicPartition]?,
                                   completion: @escaping @Sendable (Result<GroupMembership, BrokerError>) -> Void) {
        expect(.subscribe(group: group, member: member, topics: topics, manualPartitions: manualPartitions), completion) {
            if case .membership(let m) = $0 { m } else { nil }
        }
    }

    /// Sets where the member's next poll reads its assigned partitions from.
    public func seekMember(_ group: GroupID, member: MemberID, positions: [MemberSeek], completion: @escaping @Sendable (Result<Void, BrokerError>) -> Void) {
        expect(.seek(group: group, member: member, positions: positions), completion) { if case .done = $0 { () } else { nil } }
    }

    /// The member's read positions (the offsets its next poll starts at).
    public func memberPositions(_ group: GroupID, member: MemberID, completion: @escaping @Sendable (Result<[GroupOffset], BrokerError>) -> Void) {
        expect(.positions(group: group, member: member), completion) { if case .offsets(let o) = $0 { o } else { nil } }
    }
}

// MARK: - the single-node host

/// A single node coordinates every group: `__consumer_offsets` is an ordinary local topic, its
/// records are applied once fsynced (one batch in flight per partition, so in log order), and on
/// start the whole log is replayed.
struct LocalGroupHost: GroupCoordinatorHost {
    /// Strong: the broker lets go of its coordinator on shutdown, which ends the cycle.
    let broker: Broker

    var nodeID: NodeID { broker.configuration.nodeID }

    func appendGroupRecords(_ partition: Int32, _ records: [GroupRecord], completion: @escaping @Sendable (Result<Offset, BrokerError>) -> Void) {
        do throws(BrokerError) {
            try broker.ensureGroupsTopic()
        } catch {
            return completion(.failure(error))
        }
        let now = broker.nowMilliseconds()
        let produce = records.map { ProduceRecord(partition: PartitionID(partition), key: GroupCodec.key(of: $0), value: GroupCodec.encode($0), timestamp: now) }
        broker.produceUnchecked(topic: GroupsTopic.name, records: produce, acks: .all) { [broker] result in
            switch result {
            case .failure(let e): completion(.failure(e))
            case .success(let placements):
                let offsets = placements.compactMap(\.offset)
                guard offsets.count == records.count, let last = offsets.last else { return completion(.failure(.unavailable("group records were not placed"))) }
                broker.groupCoordinator?.apply(partition, Array(zip(offsets, records)), through: last)
                completion(.success(last))
            }
        }
    }

    func coordinatorStatus(_ partition: Int32, applied: Offset) -> CoordinatorStatus { broker.isReady ? .ready : .notLeader(nil) }

    /// One node leads everything it has, and applies each record before answering its write.
    func confirmLeadership(_ partition: Int32, completion: @escaping @Sendable (Result<Offset, BrokerError>) -> Void) {
        completion(.success(Offset(-1)))
    }

    func partitionCount(_ topic: TopicName) -> Int32? { try? Int32(broker.describeTopic(topic).partitions.count) }

    func read(_ request: ReadRequest, completion: @escaping @Sendable (Result<ReadResult, BrokerError>) -> Void) { broker.read(request, completion: completion) }

    func partitionOffsets(_ partition: TopicPartition) throws(BrokerError) -> PartitionOffsets {
        try broker.offsets(topic: partition.topic, partition: partition.partition)
    }

    func offset(_ partition: TopicPartition, forTimestamp: Int64) throws(BrokerError) -> Offset? {
        try broker.offset(topic: partition.topic, partition: partition.partition, forTimestamp: forTimestamp)
    }

    func monotonicMilliseconds() -> Int64 { Int64(DispatchTime.now().uptimeNanoseconds / 1_000_000) }
    func wallMilliseconds() -> Int64 { broker.nowMilliseconds() }
}

extension Broker {
    /// Starts the single node's coordinator: replays `__consumer_offsets` if it exists, then ticks.
    func startGroupCoordinator() throws(BrokerError) {
        let coordinator = GroupCoordinator(host: LocalGroupHost(broker: self), partitionCount: GroupsTopic.partitionCount,
                                           limits: configuration.groupLimits, logger: logger)
        groupsBox.withLock { $0 = coordinator }
        if (try? describeTopic(GroupsTopic.name)) != nil {
            for p in 0..<GroupsTopic.partitionCount { try replayGroups(p, into: coordinator) }
        }
        scheduleGroupTick()
    }

    private func replayGroups(_ p: Int32, into coordinator: GroupCoordinator) throws(BrokerError) {
        let tp = TopicPartition(GroupsTopic.name, PartitionID(p))
        var next = try offsets(topic: tp.topic, partition: tp.partition).logStartOffset
        let end = try offsets(topic: tp.topic, partition: tp.partition).highWatermark
        var count = 0
        while next < end {
            let result = Mutex<Result<ReadResult, BrokerError>?>(nil)
            // The records are there (below the high watermark), so the read answers at once.
            read(ReadRequest(topic: tp.topic, partition: tp.partition, offset: .exact(next), maxRecords: 10_000, maxBytes: 8 << 20, waitMilliseconds: 0)) { r in
                result.withLock { $0 = r }
            }
            guard let answer = result.withLock({ $0 }) else { throw .storage("replaying \(tp) did not answer at once") }
            let read = try answer.get()
            var records: [(Offset, GroupRecord)] = []
            do {
                try read.forEachRecord { (r: StoredRecord) throws(DecodeError) in
                    guard let value = r.record.value else { return }
                    do { records.append((r.offset, try GroupCodec.decodeRecord(value))) } catch {
                        logger.error("undecodable group record at \(tp)@\(r.offset): \(error)")
                    }
                }
            } catch {
                throw .storage("replaying \(tp) failed: \(error)")
            }
            guard read.nextOffset > next else { break }
            coordinator.apply(p, records, through: read.nextOffset - 1)
            count += records.count
            next = read.nextOffset
        }
        if count > 0 { logger.info("replayed \(count) group records of \(tp)") }
    }

    private func scheduleGroupTick() {
        groupTimer.asyncAfter(deadline: .now() + .milliseconds(200)) { [weak self] in
            guard let self, !self.isStopping.load(ordering: .relaxed), let c = self.groupCoordinator else { return }
            c.tick()
            self.scheduleGroupTick()
        }
    }

    /// Creates `__consumer_offsets` on first use (single node).
    func ensureGroupsTopic() throws(BrokerError) {
        if (try? describeTopic(GroupsTopic.name)) != nil { return }
        do {
            _ = try createTopicUnchecked(name: GroupsTopic.name, partitions: GroupsTopic.partitionCount, configs: GroupsTopic.configs.sorted { $0.key < $1.key })
        } catch .topicExists {
            return
        }
    }
}

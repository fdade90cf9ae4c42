import BrokerModel
import ClusterState
import Consensus
import Dispatch
import Synchronization

/// Consumer groups in a cluster. `__consumer_offsets` is a replicated topic like any other, except
/// that its replicas hand their committed entries to the group coordinator (every replica, leader or
/// follower, applies them), so the broker that takes over a partition's leadership already holds
/// every group of it. Group requests are served by the leader of the group's partition; any other
/// broker forwards them there (`PeerCall.group`), retrying at the named leader as produce does.
extension ClusterNode {
    var groupCoordinator: GroupCoordinator? { groupsBox.withLock { $0 } }

    func startGroupCoordinator() {
        let coordinator = GroupCoordinator(host: ClusterGroupHost(node: self), partitionCount: GroupsTopic.partitionCount,
                                           limits: configuration.groupLimits, logger: logger)
        groupsBox.withLock { $0 = coordinator }
    }

    /// Committed `__consumer_offsets` batches of one replica, in order, on the driver thread.
    func applyGroupEntries(_ entries: [RecordBatch], from replica: Replica) {
        guard let coordinator = groupCoordinator else { return }
        let p = replica.group.partition.rawValue
        var records: [(Offset, GroupRecord)] = []
        var last = Offset(-1)
        for batch in entries {
            last = max(last, batch.lastOffset)
            guard !batch.isControl else { continue }
            do {
                try batch.forEachRecord { (r: StoredRecord) throws(DecodeError) in
                    guard let value = r.record.value else { return }
                    do { records.append((r.offset, try GroupCodec.decodeRecord(value))) } catch {
                        logger.error("undecodable group record at \(replica.group)@\(r.offset): \(error)")
                    }
                }
            } catch {
                logger.error("undecodable group batch at \(replica.group)@\(batch.baseOffset): \(error)")
            }
        }
        coordinator.apply(p, records, through: last)
    }

    /// Routes a group request to its coordinator (here or forwarded). `list` asks every coordinator.
    func groupCall(_ call: GroupCall, completion: @escaping @Sendable (Result<GroupAnswer, BrokerError>) -> Void) {
        ensureGroupsTopic { [self] result in
            if case .failure(let e) = result { return completion(.failure(e)) }
            if case .list = call { return listGroups(completion) }
            guard let group = call.group else { return completion(.failure(.badRequest("group call without a group"))) }
            route(call, partition: GroupCoordinator.partition(of: group, count: GroupsTopic.partitionCount), completion: completion)
        }
    }

    private func route(_ call: GroupCall, partition p: Int32, completion: @escaping @Sendable (Result<GroupAnswer, BrokerError>) -> Void) {
        let group = TopicPartition(GroupsTopic.name, PartitionID(p))
        // A join sent twice would create two members (the first expires); everything else may be
        // asked again after a lost connection.
        var isJoin = false
        if case .join = call { isJoin = true }
        retrying(group, attempt: 0, idempotent: !isJoin, { [self] target, done in
            if target == nodeID {
                guard let coordinator = groupCoordinator else { return done(.failure(.shuttingDown)) }
                return coordinator.handle(call, completion: done)
            }
            transport.call(target, method: PeerCall.group, body: GroupWire.encode(call),
                           timeoutMilliseconds: call.waitMilliseconds + cluster.forwardTimeoutMilliseconds) { result in
                done(result.flatMap { bytes in
                    do throws(BrokerError) {
                        return .success(try GroupAnswer(GroupWire.decode(GroupAnswer.Wire.self, bytes)))
                    } catch {
                        return .failure(error)
                    }
                })
            }
        }, completion: completion)
    }

    private func listGroups(_ completion: @escaping @Sendable (Result<GroupAnswer, BrokerError>) -> Void) {
        let all = Mutex<(summaries: [GroupSummary], left: Int, failure: BrokerError?)>(([], Int(GroupsTopic.partitionCount), nil))
        for p in 0..<GroupsTopic.partitionCount {
            route(.list(partition: p), partition: p) { result in
                let done = all.withLock { s -> Bool in
                    switch result {
                    case .success(.list(let l)): s.summaries += l
                    case .success: break
                    case .failure(let e): s.failure = e
                    }
                    s.left -= 1
                    return s.left == 0
                }
                guard done else { return }
                let (summaries, _, failure) = all.withLock { $0 }
                // A partial list would hide groups: fail rather than answer it.
                if let failure { return completion(.failure(failure)) }
                completion(.success(.list(summaries.sorted { $0.group < $1.group })))
            }
        }
    }

    /// Creates `__consumer_offsets` through the controller on first use.
    func ensureGroupsTopic(_ completion: @escaping @Sendable (Result<Void, BrokerError>) -> Void) {
        if state.withLock({ $0.metadata.topics[GroupsTopic.name] != nil }) { return completion(.success(())) }
        let command = MetadataCommand.createTopic(name: GroupsTopic.name, partitions: GroupsTopic.partitionCount, replicationFactor: nil, configs: GroupsTopic.configs)
        submit(command) { [self] result in
            switch result {
            case .success, .failure(.topicExists):
                whenLeadersKnown(GroupsTopic.name, attempt: 0) { completion(.success(())) }
            case .failure(let e) where state.withLock({ $0.metadata.topics[GroupsTopic.name] != nil }):
                logger.debug("creating \(GroupsTopic.name): \(e) (it exists now)")
                completion(.success(()))
            case .failure(let e):
                completion(.failure(e))
            }
        }
    }
}

/// The cluster as the coordinator sees it.
struct ClusterGroupHost: GroupCoordinatorHost {
    /// Strong: the node lets go of its coordinator on shutdown, which ends the cycle.
    let node: ClusterNode

    var nodeID: NodeID { node.nodeID }

    func appendGroupRecords(_ partition: Int32, _ records: [GroupRecord], completion: @escaping @Sendable (Result<Offset, BrokerError>) -> Void) {
        let group = TopicPartition(GroupsTopic.name, PartitionID(partition))
        guard let replica = node.replica(group) else { return completion(.failure(.notLeader("this broker holds no replica of \(group)", leader: nil))) }
        let now = node.clock()
        let batch = RecordBatch.encode(records: records.map { Record(key: GroupCodec.key(of: $0), value: GroupCodec.encode($0), timestamp: now) })
        let count = Int64(records.count)
        node.driver.submit(.propose(Proposal(batch: batch, acks: .all, deadline: now + node.cluster.produceTimeoutMilliseconds) { result in
            completion(result.map { base in base + (count - 1) })
        }), to: replica)
    }

    func coordinatorStatus(_ partition: Int32, applied: Offset) -> CoordinatorStatus {
        let group = TopicPartition(GroupsTopic.name, PartitionID(partition))
        guard let replica = node.replica(group) else { return .notLeader(node.leaderGuess(group)) }
        return replica.state.withLock { s -> CoordinatorStatus in
            guard s.closedReason == nil, s.role == .leader else { return .notLeader(s.leader) }
            // Every record of earlier leaders is below this leader's first entry: once that is
            // applied, the state holds every group (the controller's rule).
            return applied >= s.leaderTermStart ? .ready : .loading
        }
    }

    func confirmLeadership(_ partition: Int32, completion: @escaping @Sendable (Result<Offset, BrokerError>) -> Void) {
        let group = TopicPartition(GroupsTopic.name, PartitionID(partition))
        guard let replica = node.replica(group) else { return completion(.failure(.notLeader("this broker holds no replica of \(group)", leader: nil))) }
        let once = Once(completion)
        let timeout = 3_000
        let check = LeadershipCheck(id: UInt64.random(in: 1...UInt64.max), deadline: node.clock() + Int64(timeout), completion: { once.call($0) })
        node.driver.submit(.confirmLeadership(check), to: replica)
        // The driver fails a check past its deadline on the replica's next round; this covers a
        // replica that has no more rounds (closed, or the broker stopping).
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(timeout + 1_000)) {
            once.call(.failure(.notLeader("\(group): leadership was not confirmed in time", leader: nil)))
        }
    }

    func partitionCount(_ topic: TopicName) -> Int32? {
        node.state.withLock { s in s.metadata.topics[topic].map { Int32($0.partitions.count) } }
    }

    func read(_ request: ReadRequest, completion: @escaping @Sendable (Result<ReadResult, BrokerError>) -> Void) {
        node.read(request, local: false, completion: completion)
    }

    func partitionOffsets(_ partition: TopicPartition) throws(BrokerError) -> PartitionOffsets { try node.offsets(partition) }

    func offset(_ partition: TopicPartition, forTimestamp: Int64) throws(BrokerError) -> Offset? { try node.offset(partition, forTimestamp: forTimestamp) }

    func monotonicMilliseconds() -> Int64 { node.monotonicMilliseconds() }
    func wallMilliseconds() -> Int64 { node.clock() }
}

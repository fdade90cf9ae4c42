import BrokerModel
import Synchronization
import ClusterState
import Consensus
import Dispatch
import LogStorage

/// A metadata command waiting for the controller.
struct PendingCommand: Sendable {
    var command: MetadataCommand
    var completion: @Sendable (Result<Offset, BrokerError>) -> Void
}

/// The controller's queue. Commands are decided one at a time against a state that includes every
/// record in the log (the previous command's records are committed and applied first), so a decision
/// never rests on a state that is about to change (KRaft decides against its whole log for the same reason).
struct ControllerState: Sendable {
    var queue: [PendingCommand] = []
    var inFlight = false
    var leaderSinceMilliseconds: Int64 = 0
    static let queueMax = 1_000
}

extension ClusterNode {
    // MARK: - applying the metadata log

    /// Committed metadata batches, in order, on the driver thread.
    func apply(_ entries: [RecordBatch], from replica: Replica) {
        if replica.group.topic == GroupsTopic.name { return applyGroupEntries(entries, from: replica) }
        guard replica === metadataReplica else { return }
        var changed = false
        state.withLock { s in
            for batch in entries where batch.lastOffset > s.metadataApplied {
                defer { s.metadataApplied = batch.lastOffset }
                guard !batch.isControl else { continue }
                do {
                    try batch.forEachRecord { (r: StoredRecord) throws(DecodeError) in
                        guard let value = r.record.value else { return }
                        let record = try MetadataCodec.decodeRecord(value)
                        if let problem = s.metadata.problem(applying: record) {
                            // Every voter refuses the same record the same way: skip, loudly.
                            logger.error("metadata record at \(r.offset) does not apply: \(problem)")
                            return
                        }
                        s.metadata.apply(record, offset: r.offset, epoch: batch.term)
                        changed = true
                    }
                } catch {
                    logger.error("undecodable metadata batch at \(batch.baseOffset): \(error)")
                }
            }
        }
        if changed { reconcile() }
        // On the driver thread, after reconcile: no replica is being created concurrently.
        sweepOrphans()
        let ready = state.withLock { s -> [@Sendable (Result<Void, BrokerError>) -> Void] in
            var done: [@Sendable (Result<Void, BrokerError>) -> Void] = []
            s.applyWaiters.removeAll { w in
                guard w.offset <= s.metadataApplied else { return false }
                done.append(w.completion)
                return true
            }
            return done
        }
        for c in ready { c(.success(())) }
    }

    /// Calls `completion` once this broker has applied the metadata log through `offset` (or after
    /// `timeoutMilliseconds` with 503).
    func whenApplied(_ offset: Offset, timeoutMilliseconds: Int = 10_000, completion: @escaping @Sendable (Result<Void, BrokerError>) -> Void) {
        let once = Once(completion)
        let already = state.withLock { s -> Bool in
            if s.metadataApplied >= offset { return true }
            s.applyWaiters.append((offset, { once.call($0) }))
            return false
        }
        if already { return once.call(.success(())) }
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(timeoutMilliseconds)) {
            once.call(.failure(.unavailable("this broker has not caught up with the cluster metadata yet; retry")))
        }
    }

    func directory(for group: TopicPartition, topicID: TopicID) -> String {
        "\(configuration.dataDirectory)/topics/\(group.topic.rawValue).\(topicID.rawValue)/\(group.partition.rawValue)"
    }

    /// Makes the local replicas match the metadata: opens the ones assigned here, closes and deletes
    /// the ones no longer assigned (topic deleted). Runs on the driver thread after metadata applies.
    func reconcile() {
        let brokers = state.withLock { $0.metadata.brokers }
        for (id, b) in brokers where id != nodeID && cluster.members[id] != b.internalAddress {
            transport.setPeerAddress(id, b.internalAddress)
        }
        let (wanted, existing) = state.withLock { s -> ([TopicPartition: (Topic, PartitionAssignment)], [TopicPartition: Replica]) in
            var wanted: [TopicPartition: (Topic, PartitionAssignment)] = [:]
            for topic in s.metadata.topics.values {
                for a in topic.partitions where a.replicas.contains(nodeID) || a.addingReplicas.contains(nodeID) {
                    wanted[TopicPartition(topic.name, a.partition)] = (topic, a)
                }
            }
            return (wanted, s.replicas)
        }
        for (group, replica) in existing {
            if let (topic, _) = wanted[group], topic.id.rawValue == replica.topicID { continue }
            state.withLock { _ = $0.replicas.removeValue(forKey: group) }
            let waiters = replica.state.withLock { s -> ([AppendWaiter], [ReadWaiter]) in
                s.closedReason = .unknownTopic(group.topic.rawValue)
                defer {
                    s.appendWaiters.removeAll()
                    s.readWaiters.removeAll()
                }
                try? s.storage.delete()
                return (s.appendWaiters, s.readWaiters)
            }
            for a in waiters.0 { a.completion(.failure(.unknownTopic(group.topic.rawValue))) }
            for r in waiters.1 { r.claim()?(.failure(.unknownTopic(group.topic.rawValue))) }
            // The replica removed its partition directory; the topic's directory goes with its last partition.
            let topicDirectory = "\(configuration.dataDirectory)/topics/\(group.topic.rawValue).\(replica.topicID)"
            if (try? fileSystem.listDirectory(topicDirectory))?.isEmpty == true { try? fileSystem.removeDirectory(topicDirectory) }
            logger.info("replica \(group) removed")
        }
        for (group, (topic, assignment)) in wanted where existing[group].map({ $0.topicID != topic.id.rawValue }) ?? true {
            do {
                let replica = try openReplica(group, topic: topic, assignment: assignment)
                state.withLock { $0.replicas[group] = replica }
                driver.submit(.tick, to: replica)
            } catch {
                logger.error("cannot open replica \(group): \(error)")
            }
        }
    }

    /// Once per start, when this broker is caught up: removes partition directories the metadata no
    /// longer assigns here — topics deleted, or replicas moved away, while this broker was down.
    /// Every directory under `topics/` was created by a reconcile of applied metadata, so one the
    /// caught-up metadata does not name is garbage (never a replica still being created).
    func sweepOrphans() {
        guard isReady, !state.withLock({ $0.orphansSwept }) else { return }
        let (topics, local) = state.withLock { s in (s.metadata.topics, Set(s.replicas.keys)) }
        let root = "\(configuration.dataDirectory)/topics"
        for entry in (try? fileSystem.listDirectory(root)) ?? [] {
            let path = "\(root)/\(entry)"
            guard let dot = entry.lastIndex(of: "."), let id = UInt64(entry[entry.index(after: dot)...]),
                  let name = TopicName(String(entry[..<dot])), let topic = topics[name], topic.id.rawValue == id else {
                logger.info("removing \(path): its topic no longer exists")
                try? fileSystem.removeDirectory(path)
                continue
            }
            for p in (try? fileSystem.listDirectory(path)) ?? [] {
                guard let n = Int32(p), local.contains(TopicPartition(name, PartitionID(n))) else {
                    logger.info("removing \(path)/\(p): no longer assigned to this broker")
                    try? fileSystem.removeDirectory("\(path)/\(p)")
                    continue
                }
            }
        }
        state.withLock { $0.orphansSwept = true }
    }

    func topicConfig(_ topic: Topic) -> TopicConfig {
        (try? configuration.topicDefaults.applying(topic.configs.filter { $0.key != Topic.minInSyncReplicasKey }.sorted { $0.key < $1.key })) ?? configuration.topicDefaults
    }

    private func openReplica(_ group: TopicPartition, topic: Topic, assignment: PartitionAssignment) throws(BrokerError) -> Replica {
        let config = topicConfig(topic)
        let storage: ReplicaStorage
        do {
            storage = try ReplicaStorage.open(directory: directory(for: group, topicID: topic.id), fileSystem: fileSystem, logConfig: config.logConfig,
                                              initialMembership: Self.initialMembership(assignment), nowMilliseconds: clock())
        } catch {
            throw .storage("\(error)")
        }
        var raft = RaftConfiguration(id: nodeID, randomSeed: UInt64.random(in: 0...UInt64.max))
        raft.electionTicks = cluster.electionTicks
        // Only the group coordinator's partitions have a state machine to feed.
        raft.deliversCommittedEntries = group.topic == GroupsTopic.name
        if group.topic == GroupsTopic.name {
            // A new replica replays its log from the start into a fresh state.
            groupCoordinator?.resetPartition(group.partition.rawValue)
        }
        let node = RaftNode(configuration: raft, storage: storage)
        return Replica(group: group, topicID: topic.id.rawValue,
                       state: ReplicaState(node: node, config: config, minInSyncReplicas: topic.minInSyncReplicas))
    }

    /// The voters a new replica starts with when its directory is empty: the replicas at creation.
    /// During a reassignment the replicas being added are left out — the leader adds them as learners
    /// through the log, so a new replica can never campaign on a membership of its own making.
    static func initialMembership(_ a: PartitionAssignment) -> Membership {
        let voters = Set(a.replicas).subtracting(a.addingReplicas)
        return Membership(voters: voters.isEmpty ? Set(a.replicas) : voters)
    }

    // MARK: - reassignment (run by each partition's leader)

    /// Moves each led partition under reassignment one step towards its target replicas, one
    /// single-server membership change at a time: add the new replicas as learners, promote each once
    /// caught up, then remove the replicas that leave; when the Raft membership equals the target,
    /// tell the controller the reassignment is complete.
    func driveReassignments() {
        let (topics, replicas) = state.withLock { ($0.metadata.topics, $0.replicas) }
        for (group, replica) in replicas {
            guard let assignment = topics[group.topic]?.partitions.first(where: { $0.partition == group.partition }),
                  assignment.isReassigning else { continue }
            let step = replica.state.withLock { s -> MembershipChange?? in
                guard s.role == .leader, s.closedReason == nil else { return .none }
                let m = s.node.membership
                for n in assignment.addingReplicas where !m.members.contains(n) { return .some(.addLearner(n)) }
                for n in assignment.addingReplicas where m.learners.contains(n) {
                    if let p = s.node.progress[n], p.match >= s.node.commit { return .some(.promote(n)) }
                    return .none
                }
                for n in assignment.removingReplicas where m.members.contains(n) && n != nodeID { return .some(.remove(n)) }
                // The leader removes itself last (it steps down once that commits; a new leader finishes).
                if assignment.removingReplicas.contains(nodeID) && m.members.contains(nodeID) { return .some(.remove(nodeID)) }
                return .some(nil)
            }
            switch step {
            case .none: continue
            case .some(.some(let change)):
                logger.info("reassignment of \(group): \(change)")
                driver.submit(.membership(change), to: replica)
            case .some(.none):
                submit(.completeReassignment(topic: group.topic, partition: group.partition), attempt: 30) { [self] result in
                    if case .success = result { logger.info("reassignment of \(group) complete") }
                }
            }
        }
    }

    /// On the controller: brokers that joined after start (not initial members) follow the metadata
    /// log as learners, so they know topics and assignments.
    func addMetadataLearners() {
        let (brokers, membership, isLeader) = (state.withLock { $0.metadata.brokers }, metadataReplica.state.withLock { $0.node.membership },
                                                metadataReplica.state.withLock { $0.role == .leader })
        guard isLeader else { return }
        for (id, b) in brokers.sorted(by: { $0.key < $1.key }) where !membership.members.contains(id) && (b.status == .alive || b.status == .fenced) {
            logger.info("adding broker \(id) to the metadata log as a learner")
            driver.submit(.membership(.addLearner(id)), to: metadataReplica)
            return
        }
        // An unregistered broker stops receiving the metadata log.
        for id in membership.learners.sorted() where brokers[id] == nil {
            logger.info("removing unregistered broker \(id) from the metadata log")
            driver.submit(.membership(.remove(id)), to: metadataReplica)
            return
        }
    }

    // MARK: - commands

    /// Sends `command` to the controller (wherever it is) and calls `completion` once this broker has
    /// applied the resulting records, so a following describe sees the change.
    func submit(_ command: MetadataCommand, attempt: Int = 0, hint: NodeID? = nil, completion: @escaping @Sendable (Result<Void, BrokerError>) -> Void) {
        let known = metadataReplica.state.withLock { $0.leader }
        let retry: @Sendable (BrokerError, NodeID?) -> Void = { [self] error, next in
            guard attempt < 30, !isStopping.load(ordering: .relaxed) else { return completion(.failure(error)) }
            DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(next == nil ? 200 : 0)) {
                self.submit(command, attempt: attempt + 1, hint: next, completion: completion)
            }
        }
        // A broker that is joining has no metadata leader yet: it asks the initial members in turn,
        // and they name the controller.
        let members = cluster.members.keys.sorted()
        let fallback = cluster.members[nodeID] == nil && !members.isEmpty ? members[attempt % members.count] : nil
        guard let controller = hint ?? known ?? fallback else {
            return retry(.notLeader("no controller is elected yet (the metadata log has no leader); retry", leader: nil), nil)
        }
        let applied: @Sendable (Result<Offset, BrokerError>) -> Void = { [self] result in
            switch result {
            case .success(let offset): whenApplied(offset, completion: completion)
            case .failure(.notLeader(let m, let l)): retry(.notLeader(m, leader: l), l)
            case .failure(.unavailable(let m)) where m.contains("Couldn't connect"): retry(.unavailable(m), nil)
            // The controller refused before writing (its followers have not answered since it was
            // elected or since a blip): nothing was written, so asking again cannot apply twice.
            case .failure(.notEnoughReplicas(let m)): retry(.notEnoughReplicas(m), nil)
            case .failure(let e): completion(.failure(e))
            }
        }
        if controller == nodeID {
            submitAsController(command, completion: applied)
        } else {
            transport.call(controller, method: PeerCall.metadata, body: MetadataCommandCodec.encode(command), timeoutMilliseconds: cluster.forwardTimeoutMilliseconds) { result in
                applied(result.flatMap { bytes in
                    guard let o = try? PeerCall.decodeOffsets(bytes), o.count == 1 else { return .failure(.unavailable("bad answer from the controller")) }
                    return .success(o[0])
                })
            }
        }
    }

    /// On the controller: queue the command; the answer is the metadata offset that carries it out.
    func submitAsController(_ command: MetadataCommand, completion: @escaping @Sendable (Result<Offset, BrokerError>) -> Void) {
        let (isLeader, leader) = metadataReplica.state.withLock { ($0.role == .leader, $0.leader) }
        guard isLeader else { return completion(.failure(.notLeader("this broker is not the controller", leader: leader))) }
        let accepted = state.withLock { s -> Bool in
            guard s.controller.queue.count < ControllerState.queueMax else { return false }
            s.controller.queue.append(PendingCommand(command: command, completion: completion))
            return true
        }
        guard accepted else { return completion(.failure(.overloaded("too many metadata commands are queued; retry later"))) }
        runControllerQueue()
    }

    /// Decides the next queued command once everything in the metadata log is applied.
    func runControllerQueue() {
        let (isLeader, logEnd, leader) = metadataReplica.state.withLock { ($0.role == .leader, $0.log.logEndOffset, $0.leader) }
        enum Step { case none, failAll([PendingCommand]), decided(PendingCommand, Result<[MetadataRecord], MetadataError>, Offset) }
        let step = state.withLock { s -> Step in
            guard !s.controller.inFlight, !s.controller.queue.isEmpty else { return .none }
            guard isLeader else {
                defer { s.controller.queue.removeAll() }
                return .failAll(s.controller.queue)
            }
            // The leader's own marker and any earlier leader's entries must be applied first.
            guard s.metadataApplied >= logEnd - 1 else { return .none }
            let next = s.controller.queue.removeFirst()
            let decision = decide(next.command, state: s.metadata, seed: UInt64.random(in: 0...UInt64.max))
            if case .success(let records) = decision, !records.isEmpty { s.controller.inFlight = true }
            return .decided(next, decision, s.metadataApplied)
        }
        switch step {
        case .none: return
        case .failAll(let pending):
            for p in pending { p.completion(.failure(.notLeader("the controller moved", leader: leader))) }
        case .decided(let pending, .failure(let error), _):
            pending.completion(.failure(error.brokerError))
            runControllerQueue()
        case .decided(let pending, .success(let records), let applied):
            guard !records.isEmpty else {
                pending.completion(.success(applied))
                return runControllerQueue()
            }
            let batch = RecordBatch.encode(records: records.map { Record(key: nil, value: MetadataCodec.encode($0), timestamp: clock()) })
            let proposal = Proposal(batch: batch, acks: .all, deadline: clock() + 10_000) { [self] result in
                state.withLock { $0.controller.inFlight = false }
                switch result {
                case .success(let base): pending.completion(.success(base + Int64(records.count - 1)))
                case .failure(let e): pending.completion(.failure(e))
                }
                runControllerQueue()
            }
            driver.submit(.propose(proposal), to: metadataReplica)
        }
    }

    /// Registers this broker (again) when the metadata does not show it alive at its current addresses.
    func maintainRegistration() {
        let publicAddress = "\(configuration.advertisedHost):\(advertisedPort())"
        let needed = state.withLock { s -> Bool in
            guard !s.registrationInFlight else { return false }
            if let me = s.metadata.brokers[nodeID], me.publicAddress == publicAddress, me.internalAddress == cluster.internalAddress,
               me.rack == cluster.rack, me.status == .alive || me.status == .decommissioning {
                return false
            }
            s.registrationInFlight = true
            return true
        }
        // A joining broker (not an initial member) learns the controller from the members it asks.
        let isJoining = cluster.members[nodeID] == nil
        guard needed, isJoining || metadataReplica.state.withLock({ $0.leader != nil }) else {
            if needed { state.withLock { $0.registrationInFlight = false } }
            return
        }
        let fenced = state.withLock { $0.metadata.brokers[nodeID]?.status == .fenced }
        let command: MetadataCommand = fenced && state.withLock({ $0.metadata.brokers[nodeID]?.publicAddress == publicAddress })
            ? .unfenceBroker(nodeID)
            : .registerBroker(id: nodeID, rack: cluster.rack, publicAddress: publicAddress, internalAddress: cluster.internalAddress)
        submit(command, attempt: isJoining ? 27 : 30) { [self] result in
            state.withLock { $0.registrationInFlight = false }
            if case .failure(let e) = result { logger.debug("registration not done yet: \(e)") } else { logger.info("registered with the controller") }
        }
    }

    /// Once a second on the controller: fence brokers it has not heard from, unfence returning ones,
    /// and move partition leadership back to preferred leaders.
    func controllerDuties(ticks: Int64) {
        guard metadataReplica.state.withLock({ $0.role == .leader }) else { return }
        let now = monotonicMilliseconds()
        let (brokers, since) = state.withLock { ($0.metadata.brokers, $0.controller.leaderSinceMilliseconds) }
        // Peers need a moment to reach a new controller before silence means anything.
        guard now - since > cluster.fenceAfterMilliseconds else { return }
        for (id, info) in brokers where id != nodeID {
            let silent = transport.millisecondsSinceContact(id).map { $0 > cluster.fenceAfterMilliseconds } ?? true
            if info.status == .alive && silent {
                logger.warning("fencing broker \(id): silent for more than \(cluster.fenceAfterMilliseconds) ms")
                submit(.fenceBroker(id), attempt: 30) { _ in }
            } else if info.status == .fenced && !silent {
                submit(.unfenceBroker(id), attempt: 30) { _ in }
            }
        }
        addMetadataLearners()
        if ticks % 50 == 7 { balanceLeaders() }
    }

    /// Asks leaders to hand partitions back to their preferred replica (the first of the replica list),
    /// so leadership spreads evenly again after a broker returns.
    func balanceLeaders() {
        let (metadata, leaders) = state.withLock { s -> (MetadataState, [TopicPartition: NodeID]) in
            var leaders: [TopicPartition: NodeID] = [:]
            for (g, r) in s.reports { leaders[g] = r.report.leader }
            return (s.metadata, leaders)
        }
        var current = leaders
        for (g, r) in state.withLock({ $0.replicas }) {
            if r.state.withLock({ $0.role == .leader }) { current[g] = nodeID }
        }
        let alive = Set(metadata.brokers.values.filter { $0.status == .alive }.map(\.id))
        for t in preferredLeaderTransfers(state: metadata, aliveBrokers: alive, currentLeaders: current).prefix(16) {
            let group = TopicPartition(t.topic, t.partition)
            if t.from == nodeID {
                if let r = replica(group) { driver.submit(.transfer(to: t.to), to: r) }
            } else {
                var w = ByteWriter()
                ClusterWire.write(group, &w)
                w.int32(t.to.rawValue)
                transport.call(t.from, method: PeerCall.transfer, body: w.bytes, timeoutMilliseconds: 5_000) { _ in }
            }
        }
    }

    // MARK: - reports

    func sendReports() {
        let replicas = state.withLock { Array($0.replicas.values) }
        var reports: [LeaderReport] = []
        for r in replicas {
            if let report = r.state.withLock({ s -> LeaderReport? in
                guard s.role == .leader, s.closedReason == nil else { return nil }
                return LeaderReport(group: r.group, term: s.term, leader: nodeID, offsets: s.offsets,
                                    inSyncReplicas: s.inSyncReplicas(now: clock()), replicaStates: s.replicaStates())
            }) { reports.append(report) }
        }
        let frame = ClusterWire.frame(.report, LeaderReport.encode(reports))
        for peer in cluster.members.keys where peer != nodeID { transport.send(frame, to: peer) }
        let extra = state.withLock { s in s.metadata.brokers.keys.filter { cluster.members[$0] == nil && $0 != nodeID } }
        for peer in extra { transport.send(frame, to: peer) }
    }
}

/// A completion that runs at most once, whoever calls first (an answer or a timeout).
final class Once<T: Sendable>: Sendable {
    private let completion: Mutex<(@Sendable (T) -> Void)?>
    init(_ completion: @escaping @Sendable (T) -> Void) { self.completion = Mutex(completion) }
    func call(_ value: T) { claim()?(value) }

    /// Takes the completion (nil if someone already did): lets a caller decide under its own lock
    /// that its answer is the one, then call it outside.
    func claim() -> (@Sendable (T) -> Void)? {
        completion.withLock { c in
            defer { c = nil }
            return c
        }
    }
}

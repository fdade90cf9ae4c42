import BrokerModel

/// Validates `command` against `state` and returns the records that carry it out, or why it was
/// refused. Pure: the same (command, state, seed) always gives the same answer; `seed` only breaks
/// ties in placement. Applying the returned records in order to `state` never traps.
///
/// An empty list means "nothing to change" (an idempotent repeat such as fencing a fenced broker).
public func decide(
    _ command: MetadataCommand, state: MetadataState, seed: UInt64 = 0, limits: MetadataLimits = .defaults
) -> Result<[MetadataRecord], MetadataError> {
    do throws(MetadataError) {
        let decider = Decider(state: state, seed: seed, limits: limits)
        return .success(try decider.decide(command))
    } catch {
        return .failure(error)
    }
}

/// Which partitions should move leadership to their preferred leader: those whose preferred leader
/// (first caught-up target replica) is in `aliveBrokers`, has status `alive`, and is not the current
/// leader. Partitions without a known leader are left to Raft's election. Sorted by topic, partition.
public func preferredLeaderTransfers(
    state: MetadataState, aliveBrokers: Set<NodeID>, currentLeaders: [TopicPartition: NodeID]
) -> [LeadershipTransfer] {
    var transfers: [LeadershipTransfer] = []
    for (topic, assignment) in state.allPartitions {
        guard let leader = currentLeaders[TopicPartition(topic, assignment.partition)],
            let preferred = assignment.preferredLeader, preferred != leader,
            aliveBrokers.contains(preferred), state.brokers[preferred]?.status == .alive
        else { continue }
        transfers.append(LeadershipTransfer(topic: topic, partition: assignment.partition, from: leader, to: preferred))
    }
    return transfers
}

private struct Decider {
    let state: MetadataState
    let seed: UInt64
    let limits: MetadataLimits

    func decide(_ command: MetadataCommand) throws(MetadataError) -> [MetadataRecord] {
        switch command {
        case .registerBroker(let id, let rack, let publicAddress, let internalAddress):
            return try registerBroker(id: id, rack: rack, publicAddress: publicAddress, internalAddress: internalAddress)
        case .unregisterBroker(let id):
            _ = try broker(id)
            if state.hostsReplicas(id) { throw .brokerHostsReplicas(id) }
            return [.brokerUnregistered(id)]
        case .fenceBroker(let id):
            // Only an alive broker changes: a draining broker already gets nothing new, and its
            // life-cycle status must not be overwritten by a liveness blip.
            return try broker(id).status == .alive ? [.brokerStatusChanged(id, .fenced)] : []
        case .unfenceBroker(let id):
            return try broker(id).status == .fenced ? [.brokerStatusChanged(id, .alive)] : []
        case .createTopic(let name, let partitions, let replicationFactor, let configs):
            return try createTopic(name: name, partitions: partitions, replicationFactor: replicationFactor, configs: configs)
        case .deleteTopic(let name):
            let deleted = try topic(name)
            let leaving = Set(deleted.partitions.flatMap(\.replicas))
            return [.topicDeleted(name)] + drained(leaving) { $0.topic == name }
        case .alterConfigs(let name, let set, let remove):
            return try alterConfigs(name: name, set: set, remove: remove)
        case .createPartitions(let name, let totalCount):
            return try createPartitions(name: name, totalCount: totalCount)
        case .reassignPartitions(let name, let targets):
            return try reassign(name: name, targets: targets)
        case .completeReassignment(let name, let partition):
            return try completeReassignment(name: name, partition: partition)
        case .cancelReassignment(let name, let partition):
            let current = try assignment(name, partition)
            guard current.isReassigning else { throw .noReassignmentInProgress(topic: name, partition: partition) }
            let reverted = PartitionAssignment(partition: partition, replicas: current.replicas.filter { !current.addingReplicas.contains($0) })
            return [.partitionReplicasChanged(topic: name, assignment: reverted)]
        case .decommissionBroker(let id):
            return try decommission(id)
        case .balanceReplicas:
            return balanceReplicas()
        }
    }

    // MARK: Lookups

    func broker(_ id: NodeID) throws(MetadataError) -> BrokerInfo {
        guard let info = state.brokers[id] else { throw .unknownBroker(id) }
        return info
    }

    func topic(_ name: TopicName) throws(MetadataError) -> Topic {
        guard let topic = state.topics[name] else { throw .unknownTopic(name) }
        return topic
    }

    func assignment(_ name: TopicName, _ partition: PartitionID) throws(MetadataError) -> PartitionAssignment {
        let topic = try topic(name)
        guard partition.rawValue >= 0, Int(partition.rawValue) < topic.partitions.count else {
            throw .unknownPartition(topic: name, partition: partition)
        }
        return topic.partitions[Int(partition.rawValue)]
    }

    // MARK: Brokers

    func registerBroker(id: NodeID, rack: String?, publicAddress: String, internalAddress: String) throws(MetadataError) -> [MetadataRecord] {
        if id.rawValue < 0 { throw .invalidBroker("broker id \(id) is negative") }
        for (what, text) in [("rack", rack ?? "x"), ("public address", publicAddress), ("internal address", internalAddress)] {
            if text.isEmpty { throw .invalidBroker("\(what) is empty") }
            if text.utf8.count > limits.stringBytesMax { throw .invalidBroker("\(what) is longer than \(limits.stringBytesMax) bytes") }
        }
        var status = BrokerStatus.alive
        if let existing = state.brokers[id] {
            if existing.status == .decommissioned { throw .brokerDecommissioned(id) }
            // A restart in the middle of a drain must not cancel the drain.
            if existing.status == .decommissioning { status = .decommissioning }
        } else if state.brokers.count >= limits.brokersMax {
            throw .limitExceeded("at most \(limits.brokersMax) brokers")
        }
        let info = BrokerInfo(
            id: id, rack: rack, publicAddress: publicAddress, internalAddress: internalAddress, status: status,
            registrationEpoch: state.nextRegistrationEpoch)
        return [.brokerRegistered(info)]
    }

    func decommission(_ id: NodeID) throws(MetadataError) -> [MetadataRecord] {
        let info = try broker(id)
        switch info.status {
        case .decommissioned, .decommissioning: return []
        case .alive, .fenced: break
        }
        let eligible = state.eligibleBrokers.filter { $0.id != id }
        var counts = state.targetReplicaCounts()
        var plans = Decider.plans(state)
        var moved = 0
        for index in plans.indices where plans[index].current.replicas.contains(id) {
            let (name, current, _) = plans[index]
            guard let replacement = Placement.replacement(
                for: id, in: current.replicas, eligible: eligible, brokers: state.brokers, replicaCounts: counts)
            else {
                throw .cannotMoveReplicas(
                    "no alive broker outside \(name)-\(current.partition)'s replicas \(current.replicas) can take broker \(id)'s replica")
            }
            counts[replacement, default: 0] += 1
            counts[id, default: 0] -= 1
            plans[index].target = current.replicas.map { $0 == id ? replacement : $0 }
            moved += 1
        }
        if let busy = state.allPartitions.first(where: { $0.assignment.isReassigning && $0.assignment.replicas.contains(id) }) {
            throw .reassignmentInProgress(topic: busy.topic, partition: busy.assignment.partition)
        }
        // The drained broker's preferred leaderships must land somewhere: spread them.
        Decider.balancePreferredLeaders(&plans, over: eligible.map(\.id))
        var records: [MetadataRecord] = [.brokerStatusChanged(id, .decommissioning)]
        records += Decider.records(for: plans)
        if moved == 0 { records.append(.brokerStatusChanged(id, .decommissioned)) }
        return records
    }

    // MARK: Topics

    func checkConfigs(_ configs: [String: String], replicationFactor: Int) throws(MetadataError) {
        if configs.count > limits.configEntriesPerTopicMax {
            throw .limitExceeded("at most \(limits.configEntriesPerTopicMax) config entries per topic")
        }
        for key in configs.keys.sorted() {
            let value = configs[key]!
            if key.isEmpty { throw .invalidConfig("empty config key") }
            if key.utf8.count > limits.stringBytesMax || value.utf8.count > limits.stringBytesMax {
                throw .invalidConfig("config \(key) is longer than \(limits.stringBytesMax) bytes")
            }
        }
        if let text = configs[Topic.minInSyncReplicasKey] {
            guard let value = Int(text), value >= 1 else {
                throw .invalidConfig("\(Topic.minInSyncReplicasKey) must be a positive integer, not '\(text)'")
            }
            if value > replicationFactor {
                throw .invalidConfig("\(Topic.minInSyncReplicasKey) \(value) exceeds the replica count \(replicationFactor)")
            }
        }
    }

    func createTopic(name: TopicName, partitions: Int32, replicationFactor: Int?, configs: [String: String]) throws(MetadataError) -> [MetadataRecord] {
        if state.topics[name] != nil { throw .topicExists(name) }
        if state.topics.count >= limits.topicsMax { throw .limitExceeded("at most \(limits.topicsMax) topics") }
        if partitions < 1 || partitions > limits.partitionsPerTopicMax {
            throw .invalidPartitionCount("\(partitions); must be 1...\(limits.partitionsPerTopicMax)")
        }
        let eligible = state.eligibleBrokers
        let factor = replicationFactor ?? min(3, eligible.count)
        try checkReplicationFactor(factor, eligible: eligible.count)
        try checkConfigs(configs, replicationFactor: factor)
        let id = state.nextTopicID
        var records: [MetadataRecord] = [.topicCreated(name: name, id: id, replicationFactor: factor, configs: configs)]
        var replicaCounts = state.targetReplicaCounts()
        var leaderCounts = state.targetPreferredLeaderCounts()
        let placed = Placement.place(
            count: Int(partitions), replicationFactor: factor, eligible: eligible, replicaCounts: &replicaCounts,
            leaderCounts: &leaderCounts, seed: seed ^ (id.rawValue &* 0x9E37_79B9_7F4A_7C15))
        for (index, replicas) in placed.enumerated() {
            records.append(.partitionCreated(topic: name, assignment: PartitionAssignment(partition: PartitionID(Int32(index)), replicas: replicas)))
        }
        return records
    }

    func checkReplicationFactor(_ factor: Int, eligible: Int) throws(MetadataError) {
        if eligible == 0 { throw .invalidReplicationFactor("no alive broker can host a replica") }
        if factor < 1 || factor > limits.replicasPerPartitionMax {
            throw .invalidReplicationFactor("\(factor); must be 1...\(limits.replicasPerPartitionMax)")
        }
        if factor > eligible {
            throw .invalidReplicationFactor("\(factor) is more than the \(eligible) alive brokers that can host a replica")
        }
    }

    func createPartitions(name: TopicName, totalCount: Int32) throws(MetadataError) -> [MetadataRecord] {
        let topic = try topic(name)
        let current = Int32(topic.partitions.count)
        if totalCount <= current { throw .invalidPartitionCount("\(name) has \(current) partitions; the new count must be larger") }
        if totalCount > limits.partitionsPerTopicMax {
            throw .invalidPartitionCount("\(totalCount); must be at most \(limits.partitionsPerTopicMax)")
        }
        let eligible = state.eligibleBrokers
        try checkReplicationFactor(topic.replicationFactor, eligible: eligible.count)
        var replicaCounts = state.targetReplicaCounts()
        var leaderCounts = state.targetPreferredLeaderCounts()
        let placed = Placement.place(
            count: Int(totalCount - current), replicationFactor: topic.replicationFactor, eligible: eligible,
            replicaCounts: &replicaCounts, leaderCounts: &leaderCounts,
            seed: seed ^ (topic.id.rawValue &* 0x9E37_79B9_7F4A_7C15) ^ UInt64(current))
        return placed.enumerated().map { index, replicas in
            .partitionCreated(topic: name, assignment: PartitionAssignment(partition: PartitionID(current + Int32(index)), replicas: replicas))
        }
    }

    func alterConfigs(name: TopicName, set: [String: String], remove: [String]) throws(MetadataError) -> [MetadataRecord] {
        let topic = try topic(name)
        if let both = remove.sorted().first(where: { set[$0] != nil }) {
            throw .invalidConfig("\(both) is both set and removed")
        }
        var configs = topic.configs
        for key in remove { configs[key] = nil }
        for (key, value) in set { configs[key] = value }
        // A reassignment may have shrunk a partition below the topic's replication factor: the
        // smallest partition bounds min.insync.replicas, or its acks=all writes could never succeed.
        let smallest = topic.partitions.map(\.targetReplicas.count).min() ?? topic.replicationFactor
        try checkConfigs(configs, replicationFactor: min(smallest, topic.replicationFactor))
        var records: [MetadataRecord] = []
        for key in Set(topic.configs.keys).union(configs.keys).sorted() where topic.configs[key] != configs[key] {
            records.append(.topicConfigChanged(topic: name, key: key, value: configs[key]))
        }
        return records
    }

    // MARK: Reassignment

    /// The assignment that moves `current` to `target`: target order first, then the replicas leaving.
    static func moving(_ current: PartitionAssignment, to target: [NodeID]) -> PartitionAssignment {
        let removing = current.replicas.filter { !target.contains($0) }
        let adding = target.filter { !current.replicas.contains($0) }
        return PartitionAssignment(
            partition: current.partition, replicas: target + removing, addingReplicas: adding, removingReplicas: removing)
    }

    func reassign(name: TopicName, targets: [PartitionID: [NodeID]]) throws(MetadataError) -> [MetadataRecord] {
        let topic = try topic(name)
        if targets.isEmpty { throw .invalidReplicas("no partitions given") }
        var records: [MetadataRecord] = []
        for partition in targets.keys.sorted() {
            let target = targets[partition]!
            let current = try assignment(name, partition)
            if current.isReassigning { throw .reassignmentInProgress(topic: name, partition: partition) }
            let label = "\(name)-\(partition)"
            if target.isEmpty { throw .invalidReplicas("\(label): the target replica list is empty") }
            if Set(target).count != target.count { throw .invalidReplicas("\(label): a broker is listed twice in \(target)") }
            if target.count + current.replicas.filter({ !target.contains($0) }).count > limits.replicasPerPartitionMax {
                throw .invalidReplicas("\(label): more than \(limits.replicasPerPartitionMax) replicas during the move")
            }
            if target.count < topic.minInSyncReplicas {
                throw .invalidReplicas(
                    "\(label): \(target.count) replicas are fewer than min.insync.replicas \(topic.minInSyncReplicas)")
            }
            for broker in target {
                guard let info = state.brokers[broker] else { throw .invalidReplicas("\(label): unknown broker \(broker)") }
                if !current.replicas.contains(broker) && !info.isEligibleForNewReplicas {
                    throw .invalidReplicas("\(label): broker \(broker) is \(info.status) and cannot receive a new replica")
                }
            }
            if target == current.replicas { continue }
            records.append(.partitionReplicasChanged(topic: name, assignment: Decider.moving(current, to: target)))
        }
        return records
    }

    func completeReassignment(name: TopicName, partition: PartitionID) throws(MetadataError) -> [MetadataRecord] {
        let current = try assignment(name, partition)
        guard current.isReassigning else { throw .noReassignmentInProgress(topic: name, partition: partition) }
        var records: [MetadataRecord] = [
            .partitionReplicasChanged(topic: name, assignment: PartitionAssignment(partition: partition, replicas: current.targetReplicas))
        ]
        records += drained(Set(current.removingReplicas)) { $0.topic == name && $0.assignment.partition == partition }
        return records
    }

    /// A draining broker whose last replica just left is done: the status records for those of
    /// `leaving` that host nothing outside the partitions `isGone` selects.
    func drained(
        _ leaving: Set<NodeID>, outside isGone: ((topic: TopicName, assignment: PartitionAssignment)) -> Bool
    ) -> [MetadataRecord] {
        let remaining = state.allPartitions.filter { !isGone($0) }
        return leaving.sorted().compactMap { broker in
            guard state.brokers[broker]?.status == .decommissioning,
                !remaining.contains(where: { $0.assignment.replicas.contains(broker) })
            else { return nil }
            return .brokerStatusChanged(broker, .decommissioned)
        }
    }

    // MARK: Balancing

    /// Phase 1 moves replicas from the fullest to the emptiest alive broker while their counts differ
    /// by more than one. Each move lowers the excess above the mean by exactly one, so when a movable
    /// replica is always found the plan has the fewest moves possible. A replica moves only if the
    /// partition keeps at least as many failure domains, and followers move before preferred leaders.
    /// Partitions already being reassigned, and replicas on fenced or draining brokers, are left alone.
    ///
    /// Phase 2 reorders replica lists (a metadata change, no data moves) so that preferred-leader
    /// counts differ by at most one where the replica sets allow it; the runtime then transfers
    /// leadership (``preferredLeaderTransfers(state:aliveBrokers:currentLeaders:)``).
    func balanceReplicas() -> [MetadataRecord] {
        let eligible = state.eligibleBrokers
        guard eligible.count >= 2 else { return [] }
        let eligibleIDs = Set(eligible.map(\.id))
        var plans = Decider.plans(state)
        var counts: [NodeID: Int] = [:]
        for id in eligibleIDs { counts[id] = 0 }
        for (_, assignment) in state.allPartitions {
            for replica in assignment.targetReplicas where eligibleIDs.contains(replica) { counts[replica]! += 1 }
        }
        // Failure domains as small integers, and for each broker the plans (by index, ascending)
        // that hold it: a move then scans only the donor's partitions, never the whole cluster.
        var domainNumbers: [String: Int] = [:]
        var domains: [NodeID: Int] = [:]
        for broker in state.sortedBrokers {
            let key = Placement.domain(broker)
            if domainNumbers[key] == nil { domainNumbers[key] = domainNumbers.count }
            domains[broker.id] = domainNumbers[key]!
        }
        var planDomains = plans.map { plan in plan.target.map { domains[$0]! } }
        var holders: [NodeID: [Int]] = [:]
        for (index, plan) in plans.enumerated() {
            for replica in plan.target where eligibleIDs.contains(replica) { holders[replica, default: []].append(index) }
        }
        // Pairs (donor -> receivers) already found to have no movable partition. Whether a pair can
        // move depends only on the donor's partitions, so the verdict stands until one of them
        // changes; without this cache, racks make most pairs fail and every move rescans them all.
        var stuck: [NodeID: Set<NodeID>] = [:]
        // Every move lowers the sum of squared counts, so this ends; the bound is a safety net.
        var movesLeft = plans.reduce(0) { $0 + $1.target.count }
        moves: while movesLeft > 0 {
            let byLoad = eligible.map(\.id).sorted { (counts[$0]!, $0) < (counts[$1]!, $1) }
            for donor in byLoad.reversed() {
                for receiver in byLoad where counts[donor]! - counts[receiver]! > 1 {
                    if stuck[donor]?.contains(receiver) == true { continue }
                    guard let index = Decider.movableIndex(
                        plans: plans, planDomains: planDomains, candidates: holders[donor, default: []], from: donor, to: receiver,
                        domains: domains)
                    else {
                        stuck[donor, default: []].insert(receiver)
                        continue
                    }
                    plans[index].target = plans[index].target.map { $0 == donor ? receiver : $0 }
                    planDomains[index] = plans[index].target.map { domains[$0]! }
                    // Only the moved partition changed: it may unstick a pair of one of its
                    // replicas (the donor only lost a partition, which cannot unstick it).
                    for replica in plans[index].target {
                        guard let receivers = stuck[replica] else { continue }
                        for other in receivers where Decider.movableIndex(
                            plans: plans, planDomains: planDomains, candidates: [index], from: replica, to: other, domains: domains)
                            != nil
                        {
                            stuck[replica]!.remove(other)
                        }
                    }
                    holders[donor]!.removeAll { $0 == index }
                    holders[receiver, default: []].insertSorted(index)
                    counts[donor]! -= 1
                    counts[receiver]! += 1
                    movesLeft -= 1
                    continue moves
                }
            }
            break
        }
        Decider.balancePreferredLeaders(&plans, over: eligible.map(\.id))
        return Decider.records(for: plans)
    }

    typealias Plan = (topic: TopicName, current: PartitionAssignment, target: [NodeID])

    /// One plan per partition not already being reassigned, target = current replicas.
    static func plans(_ state: MetadataState) -> [Plan] {
        state.allPartitions.filter { !$0.assignment.isReassigning }.map { ($0.topic, $0.assignment, $0.assignment.replicas) }
    }

    static func records(for plans: [Plan]) -> [MetadataRecord] {
        plans.compactMap { plan in
            plan.target == plan.current.replicas
                ? nil : .partitionReplicasChanged(topic: plan.topic, assignment: Decider.moving(plan.current, to: plan.target))
        }
    }

    /// Reorders planned replica lists (no data moves) so that the brokers in `brokers` lead, by
    /// preference, counts that differ by at most one where the replica sets allow it: while the most-
    /// and least-loaded brokers differ by more than one, a partition the first prefers and the second
    /// replicates gets the second moved to the front. Each swap lowers the sum of squares, so it ends.
    static func balancePreferredLeaders(_ plans: inout [Plan], over brokers: [NodeID]) {
        let eligible = Set(brokers)
        var leaders: [NodeID: Int] = [:]
        for id in brokers { leaders[id] = 0 }
        for plan in plans { if let first = plan.target.first, eligible.contains(first) { leaders[first]! += 1 } }
        // For each broker, the plans (ascending) it is the first replica of.
        var firsts: [NodeID: [Int]] = [:]
        for (index, plan) in plans.enumerated() {
            if let first = plan.target.first, eligible.contains(first) { firsts[first, default: []].append(index) }
        }
        var swapsLeft = plans.count * max(1, brokers.count)
        swaps: while swapsLeft > 0 {
            let byLeaders = brokers.sorted { (leaders[$0]!, $0) < (leaders[$1]!, $1) }
            for donor in byLeaders.reversed() {
                for receiver in byLeaders where leaders[donor]! - leaders[receiver]! > 1 {
                    if let index = firsts[donor, default: []].first(where: { plans[$0].target.contains(receiver) }) {
                        plans[index].target = [receiver] + plans[index].target.filter { $0 != receiver }
                        firsts[donor]!.removeAll { $0 == index }
                        firsts[receiver, default: []].insertSorted(index)
                        leaders[donor]! -= 1
                        leaders[receiver]! += 1
                        swapsLeft -= 1
                        continue swaps
                    }
                }
            }
            break
        }
    }

    /// Among `candidates` (indices of plans holding `donor`), a partition without `receiver` where
    /// swapping them keeps the failure-domain count; a follower position first, then a preferred
    /// leader. The spread survives the swap when another replica covers the donor's domain, or the
    /// receiver brings a domain the other replicas lack.
    /// `planDomains[i]` is the failure domain of each replica of `plans[i].target`, in order (kept
    /// alongside so the hot loop compares integers instead of hashing broker ids).
    static func movableIndex(
        plans: [Plan], planDomains: [[Int]], candidates: [Int], from donor: NodeID, to receiver: NodeID, domains: [NodeID: Int]
    ) -> Int? {
        var leaderCandidate: Int? = nil
        let donorDomain = domains[donor]!
        let receiverDomain = domains[receiver]!
        candidates: for index in candidates {
            let target = plans[index].target
            let targetDomains = planDomains[index]
            var donorDomainCovered = false
            var receiverDomainPresent = false
            for position in target.indices where target[position] != donor {
                if target[position] == receiver { continue candidates }
                let domain = targetDomains[position]
                if domain == donorDomain { donorDomainCovered = true }
                if domain == receiverDomain { receiverDomainPresent = true }
            }
            if !donorDomainCovered && receiverDomainPresent { continue }
            if target.first != donor { return index }
            if leaderCandidate == nil { leaderCandidate = index }
        }
        return leaderCandidate
    }
}

extension Array where Element == Int {
    /// Inserts into an ascending array, keeping it ascending.
    mutating func insertSorted(_ value: Int) {
        var low = 0
        var high = count
        while low < high {
            let mid = (low + high) / 2
            if self[mid] < value { low = mid + 1 } else { high = mid }
        }
        insert(value, at: low)
    }
}

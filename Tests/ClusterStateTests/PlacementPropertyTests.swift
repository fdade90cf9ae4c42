import BrokerModel
import ClusterState
import Testing

/// Placement and planning invariants over many seeded random clusters. A failure names its seed.
@Suite struct PlacementPropertyTests {
    static let seeds: [UInt64] = Array(1...300)

    @Test func newTopicsAreSpreadOverBrokersRacksAndLeaders() {
        for seed in Self.seeds {
            var sim = Simulation(seed: seed)
            let brokerCount = sim.int(1...9)
            let racks = sim.int(0...1) == 0 ? 0 : sim.int(2...4)
            sim.registerBrokers(brokerCount, racks: racks)
            let eligible = sim.state.eligibleBrokers.map(\.id)
            let domains = Set(eligible.map { domain(sim.state, $0) }).count
            for _ in 0..<sim.int(1...4) {
                let name = sim.newTopicName()
                let partitions = sim.int(1...30)
                let factor = sim.int(1...brokerCount)
                guard case .success = sim.run(.createTopic(name: name, partitions: Int32(partitions), replicationFactor: factor, configs: [:]))
                else {
                    Issue.record("seed \(seed): create \(name) rf=\(factor) on \(brokerCount) brokers refused")
                    continue
                }
                let topic = sim.state.topics[name]!
                var leaders: [NodeID: Int] = Dictionary(uniqueKeysWithValues: eligible.map { ($0, 0) })
                for p in topic.partitions {
                    #expect(p.replicas.count == factor, "seed \(seed): \(name)-\(p.partition) has \(p.replicas)")
                    #expect(Set(p.replicas).count == p.replicas.count, "seed \(seed): \(name)-\(p.partition) repeats a broker: \(p.replicas)")
                    #expect(p.replicas.allSatisfy(eligible.contains), "seed \(seed): \(name)-\(p.partition) on an ineligible broker")
                    let spread = Set(p.replicas.map { domain(sim.state, $0) }).count
                    #expect(spread == min(factor, domains), "seed \(seed): \(name)-\(p.partition) \(p.replicas) spans \(spread) of \(domains) domains")
                    leaders[p.replicas[0], default: 0] += 1
                }
                let counts = leaders.values
                #expect(counts.max()! - counts.min()! <= 1, "seed \(seed): \(name) leader counts \(leaders)")
            }
        }
    }

    /// On a fixed set of brokers, preferred-leader counts stay within one of each other across all
    /// topics (not only within one), and without racks replica counts stay close: within 2 after the
    /// first topic, within 3 after several. Leaders are balanced first (the round-robin fixes them),
    /// which is why replicas are not always within one: over 1,000 seeds the spread after a later
    /// topic was 0-1 in 94% of cases, 2 in 3.5%, 3 once.
    @Test func loadStaysEvenAcrossTopics() {
        for seed in Self.seeds {
            var sim = Simulation(seed: seed)
            let brokerCount = sim.int(1...9)
            let racks = sim.int(0...1) == 0 ? 0 : sim.int(2...3)
            sim.registerBrokers(brokerCount, racks: racks)
            for index in 0..<sim.int(1...5) {
                sim.run(.createTopic(name: sim.newTopicName(), partitions: Int32(sim.int(1...30)), replicationFactor: sim.int(1...brokerCount), configs: [:]))
                let leaders = sim.state.sortedBrokers.map { sim.state.preferredLeaderCounts()[$0.id, default: 0] }
                #expect(leaders.max()! - leaders.min()! <= 1, "seed \(seed): preferred leaders \(leaders)")
                if racks == 0 {
                    let counts = sim.state.sortedBrokers.map { sim.state.replicaCounts()[$0.id, default: 0] }
                    #expect(counts.max()! - counts.min()! <= (index == 0 ? 2 : 3), "seed \(seed): replica counts \(counts)")
                }
            }
        }
    }

    @Test func tooFewBrokersIsAClearError() {
        for seed in Self.seeds.prefix(50) {
            var sim = Simulation(seed: seed)
            let brokerCount = sim.int(1...5)
            sim.registerBrokers(brokerCount, racks: 0)
            let result = sim.run(.createTopic(name: sim.newTopicName(), partitions: 3, replicationFactor: brokerCount + 1, configs: [:]))
            guard case .failure(.invalidReplicationFactor(let why)) = result else {
                Issue.record("seed \(seed): expected invalidReplicationFactor, got \(result)")
                continue
            }
            #expect(why.contains("\(brokerCount) alive brokers"), "seed \(seed): \(why)")
        }
    }

    /// Without racks a move is always possible, so the plan must reach counts within one of each other
    /// with the fewest moves: max(replicas above ⌈mean⌉, replicas missing below ⌊mean⌋).
    @Test func balancingMovesTheFewestReplicas() {
        for seed in Self.seeds {
            var sim = Simulation(seed: seed)
            let initial = sim.int(1...5)
            sim.registerBrokers(initial, racks: 0)
            for _ in 0..<sim.int(1...4) {
                sim.run(.createTopic(name: sim.newTopicName(), partitions: Int32(sim.int(1...20)), replicationFactor: sim.int(1...initial), configs: [:]))
            }
            let added = sim.int(1...3)
            for id in (initial + 1)...(initial + added) {
                sim.run(.registerBroker(id: NodeID(Int32(id)), rack: nil, publicAddress: "h", internalAddress: "h"))
            }
            let before = sim.state.targetReplicaCounts()
            let brokers = sim.state.eligibleBrokers.map(\.id)
            let total = brokers.reduce(0) { $0 + before[$1, default: 0] }
            let low = total / brokers.count
            let high = (total + brokers.count - 1) / brokers.count
            let above = brokers.reduce(0) { $0 + max(0, before[$1, default: 0] - high) }
            let below = brokers.reduce(0) { $0 + max(0, low - before[$1, default: 0]) }
            guard case .success(let records) = sim.run(.balanceReplicas) else {
                Issue.record("seed \(seed): balance refused")
                continue
            }
            var moves = 0
            for case .partitionReplicasChanged(_, let a) in records { moves += a.addingReplicas.count }
            #expect(moves == max(above, below), "seed \(seed): \(moves) moves, lower bound \(max(above, below)); counts \(before)")
            let after = sim.state.targetReplicaCounts()
            let counts = brokers.map { after[$0, default: 0] }
            #expect(counts.max()! - counts.min()! <= 1, "seed \(seed): counts after balance \(after)")
            // Completing every move leaves a balanced cluster that needs nothing more.
            for (topic, a) in sim.state.allPartitions where a.isReassigning {
                sim.run(.completeReassignment(topic: topic, partition: a.partition))
            }
            if case .success(let again) = sim.run(.balanceReplicas) {
                #expect(again.allSatisfy { if case .partitionReplicasChanged(_, let a) = $0 { !a.isReassigning } else { false } },
                    "seed \(seed): a balanced cluster planned moves again: \(again)")
            }
        }
    }

    /// With racks, balancing never lowers a partition's rack spread.
    @Test func balancingKeepsRackSpread() {
        for seed in Self.seeds {
            var sim = Simulation(seed: seed)
            sim.registerBrokers(sim.int(3...8), racks: sim.int(2...3))
            let count = sim.state.brokers.count
            sim.run(.createTopic(name: sim.newTopicName(), partitions: Int32(sim.int(1...20)), replicationFactor: sim.int(1...3), configs: [:]))
            sim.run(.registerBroker(id: NodeID(Int32(count + 1)), rack: "r\(sim.int(0...3))", publicAddress: "h", internalAddress: "h"))
            let before = sim.state
            sim.run(.balanceReplicas)
            for (topic, a) in sim.state.allPartitions {
                let old = before.topics[topic]!.partitions[Int(a.partition.rawValue)]
                let spreadBefore = Set(old.targetReplicas.map { domain(before, $0) }).count
                let spreadAfter = Set(a.targetReplicas.map { domain(sim.state, $0) }).count
                #expect(spreadAfter >= spreadBefore, "seed \(seed): \(topic)-\(a.partition) spread \(spreadBefore) -> \(spreadAfter)")
                #expect(Set(a.targetReplicas) != Set(old.targetReplicas) || a.targetReplicas.count == old.targetReplicas.count)
            }
        }
    }

    @Test func decommissionMovesEveryReplicaOff() {
        for seed in Self.seeds {
            var sim = Simulation(seed: seed)
            let brokerCount = sim.int(2...7)
            sim.registerBrokers(brokerCount, racks: sim.int(0...1) == 0 ? 0 : 2)
            for _ in 0..<sim.int(1...3) {
                sim.run(.createTopic(name: sim.newTopicName(), partitions: Int32(sim.int(1...15)), replicationFactor: sim.int(1...(brokerCount - 1)), configs: [:]))
            }
            let victim = NodeID(Int32(sim.int(1...brokerCount)))
            let before = sim.state
            guard case .success = sim.run(.decommissionBroker(victim)) else {
                Issue.record("seed \(seed): decommission of \(victim) refused although rf < brokers")
                continue
            }
            // Rack spread survives a move whenever some alive broker outside the partition could keep it.
            for (topic, a) in sim.state.allPartitions where a.isReassigning {
                let old = before.topics[topic]!.partitions[Int(a.partition.rawValue)].replicas
                let others = old.filter { $0 != victim }.map { domain(before, $0) }
                let couldKeep = before.eligibleBrokers.contains { b in
                    b.id != victim && !old.contains(b.id)
                        && (others.contains(domain(before, victim)) || !others.contains(domain(before, b.id)))
                }
                let spreadBefore = Set(old.map { domain(before, $0) }).count
                let spreadAfter = Set(a.targetReplicas.map { domain(before, $0) }).count
                if couldKeep {
                    #expect(spreadAfter >= spreadBefore, "seed \(seed): \(topic)-\(a.partition) \(old) -> \(a.targetReplicas)")
                }
            }
            #expect(sim.state.targetReplicaCounts()[victim, default: 0] == 0, "seed \(seed): \(victim) still in a target")
            for (topic, a) in sim.state.allPartitions where a.isReassigning {
                #expect(a.removingReplicas == [victim], "seed \(seed): \(topic)-\(a.partition) moves \(a.removingReplicas)")
                sim.run(.completeReassignment(topic: topic, partition: a.partition))
            }
            #expect(sim.state.brokers[victim]?.status == .decommissioned, "seed \(seed): \(victim) is \(String(describing: sim.state.brokers[victim]?.status))")
            #expect(!sim.state.hostsReplicas(victim), "seed \(seed)")
            guard case .success = sim.run(.unregisterBroker(victim)) else {
                Issue.record("seed \(seed): unregister of drained \(victim) refused")
                continue
            }
        }
    }

    /// Random command streams: the decider refuses or succeeds, apply never traps, the invariants hold
    /// after every step, and replaying the log or decoding the snapshot reproduces the state.
    @Test func randomCommandStreamsReplayExactly() throws {
        for seed in Self.seeds {
            var sim = Simulation(seed: seed)
            sim.registerBrokers(sim.int(1...6), racks: sim.int(0...1) == 0 ? 0 : sim.int(2...3))
            for _ in 0..<60 {
                let command = sim.randomCommand()
                sim.run(command)
                for problem in sim.checkInvariants(after: command) { Issue.record(Comment(rawValue: problem)) }
            }
            #expect(sim.failures.isEmpty, "\(sim.failures)")
            var replayed = MetadataState()
            for (index, record) in sim.log.enumerated() { replayed.apply(record, offset: Offset(Int64(index)), epoch: .zero) }
            #expect(replayed == sim.state, "seed \(seed): replay of \(sim.log.count) records differs")
            let snapshot = MetadataCodec.encodeSnapshot(sim.state)
            #expect(try MetadataCodec.decodeSnapshot(snapshot) == sim.state, "seed \(seed): snapshot round trip differs")
            #expect(MetadataCodec.encodeSnapshot(try MetadataCodec.decodeSnapshot(snapshot)) == snapshot, "seed \(seed): snapshot encoding not canonical")
        }
    }

    @Test func decideIsDeterministic() {
        for seed in Self.seeds.prefix(100) {
            var sim = Simulation(seed: seed)
            sim.registerBrokers(sim.int(1...6), racks: 0)
            let command = MetadataCommand.createTopic(name: TopicName("x")!, partitions: 7, replicationFactor: nil, configs: [:])
            let first = decide(command, state: sim.state, seed: seed)
            #expect(first == decide(command, state: sim.state, seed: seed), "seed \(seed): decide is not deterministic")
        }
    }
}

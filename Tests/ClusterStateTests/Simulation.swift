import BrokerModel
import ClusterState

/// Seeded random clusters and command streams for property tests. Every failure message carries the
/// seed; `Simulation(seed:)` with that seed replays the exact run (STYLE.md #18).
struct Simulation {
    let seed: UInt64
    var random: SeededGenerator
    var state = MetadataState()
    var log: [MetadataRecord] = []
    var failures: [String] = []
    var topicCounter = 0

    init(seed: UInt64) {
        self.seed = seed
        random = SeededGenerator(seed: seed)
    }

    mutating func int(_ range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &random) }

    /// Decides and applies; records a failure (with the seed) if a record does not survive the codec.
    @discardableResult
    mutating func run(_ command: MetadataCommand) -> Result<[MetadataRecord], MetadataError> {
        let result = decide(command, state: state, seed: random.next())
        if case .success(let records) = result {
            for record in records {
                let bytes = MetadataCodec.encode(record)
                if (try? MetadataCodec.decodeRecord(bytes)) != record { failures.append("seed \(seed): codec changed \(record)") }
                state.apply(record)
                log.append(record)
            }
        }
        return result
    }

    /// `count` brokers; with `racks` > 0 each gets one of that many racks.
    mutating func registerBrokers(_ count: Int, racks: Int) {
        for id in 1...count {
            let rack = racks > 0 ? "r\(int(0...(racks - 1)))" : nil
            run(.registerBroker(id: NodeID(Int32(id)), rack: rack, publicAddress: "h\(id):9092", internalAddress: "h\(id):9093"))
        }
    }

    mutating func newTopicName() -> TopicName {
        topicCounter += 1
        return TopicName("t\(topicCounter)")!
    }

    func randomPartition(using random: inout SeededGenerator) -> (TopicName, PartitionAssignment)? {
        state.allPartitions.randomElement(using: &random).map { ($0.topic, $0.assignment) }
    }

    /// One random command, valid or not: the decider must refuse bad ones cleanly.
    mutating func randomCommand() -> MetadataCommand {
        let brokerIDs = state.sortedBrokers.map(\.id)
        let someBroker = brokerIDs.randomElement(using: &random) ?? NodeID(1)
        let someTopic = state.sortedTopics.randomElement(using: &random)?.name ?? TopicName("none")!
        switch int(0...13) {
        case 0:
            let id = int(1...10)
            return .registerBroker(id: NodeID(Int32(id)), rack: int(0...1) == 0 ? nil : "r\(int(0...2))", publicAddress: "h\(id):1", internalAddress: "h\(id):2")
        case 1: return .fenceBroker(someBroker)
        case 2: return .unfenceBroker(someBroker)
        case 3, 4:
            return .createTopic(
                name: newTopicName(), partitions: Int32(int(1...12)), replicationFactor: int(0...1) == 0 ? nil : int(1...4),
                configs: int(0...2) == 0 ? ["min.insync.replicas": "\(int(0...3))"] : [:])
        case 5: return .deleteTopic(someTopic)
        case 6: return .createPartitions(topic: someTopic, totalCount: Int32(int(1...16)))
        case 7:
            guard let (topic, assignment) = randomPartition(using: &random) else { return .balanceReplicas }
            var target = brokerIDs.shuffled(using: &random)
            target = Array(target.prefix(int(1...max(1, min(4, target.count)))))
            if int(0...5) == 0 { target.append(target[0]) }  // a duplicate, to be refused
            return .reassignPartitions(topic: topic, targets: [assignment.partition: target])
        case 8, 9:
            let reassigning = state.allPartitions.filter { $0.assignment.isReassigning }
            guard let pick = reassigning.randomElement(using: &random) else { return .balanceReplicas }
            return int(0...4) == 0
                ? .cancelReassignment(topic: pick.topic, partition: pick.assignment.partition)
                : .completeReassignment(topic: pick.topic, partition: pick.assignment.partition)
        case 10: return .decommissionBroker(someBroker)
        case 11: return .unregisterBroker(someBroker)
        case 12: return .alterConfigs(topic: someTopic, set: ["retention.ms": "\(int(1...9))"], remove: ["min.insync.replicas"])
        default: return .balanceReplicas
        }
    }

    /// What must hold after every step, whatever happened.
    func checkInvariants(after command: MetadataCommand) -> [String] {
        var problems: [String] = []
        let context = "seed \(seed), after \(command)"
        var ids: Set<TopicID> = []
        for topic in state.sortedTopics {
            if !ids.insert(topic.id).inserted { problems.append("\(context): topic id \(topic.id) twice") }
            if topic.id >= state.nextTopicID { problems.append("\(context): topic id \(topic.id) not below the counter") }
            for (index, p) in topic.partitions.enumerated() {
                if p.partition.rawValue != Int32(index) { problems.append("\(context): \(topic.name) partition \(index) misnumbered") }
                if Set(p.replicas).count != p.replicas.count { problems.append("\(context): \(topic.name)-\(index) duplicate replica") }
                if p.targetReplicas.isEmpty { problems.append("\(context): \(topic.name)-\(index) has no target replicas") }
                for replica in p.replicas where state.brokers[replica] == nil {
                    problems.append("\(context): \(topic.name)-\(index) on unregistered broker \(replica)")
                }
            }
        }
        for broker in state.sortedBrokers where broker.status == .decommissioned && state.hostsReplicas(broker.id) {
            problems.append("\(context): decommissioned broker \(broker.id) still hosts replicas")
        }
        return problems
    }
}

/// Failure domain as placement sees it (a rackless broker is its own domain).
func domain(_ state: MetadataState, _ id: NodeID) -> String {
    state.brokers[id]?.rack.map { "rack:" + $0 } ?? "broker:\(id)"
}

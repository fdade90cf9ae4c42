import BrokerModel
import ClusterState
import Testing

/// Targeted cases the scenarios do not spell out.
@Suite struct DecideTests {
    static let t = TopicName("t")!

    /// Decides and applies; fails the test if the command is refused.
    static func run(_ command: MetadataCommand, _ state: inout MetadataState) -> [MetadataRecord] {
        switch decide(command, state: state) {
        case .success(let records):
            for record in records { state.apply(record) }
            return records
        case .failure(let error):
            Issue.record("\(command) refused: \(error)")
            return []
        }
    }

    static func cluster(_ brokers: Int) -> MetadataState {
        var state = MetadataState()
        for id in 1...brokers {
            _ = run(.registerBroker(id: NodeID(Int32(id)), rack: nil, publicAddress: "p\(id)", internalAddress: "i\(id)"), &state)
        }
        return state
    }

    @Test func applyAdvancesOffsetAndEpoch() {
        var state = MetadataState()
        #expect(state.lastAppliedOffset == Offset(-1))
        state.apply(.brokerRegistered(BrokerInfo(id: NodeID(1), rack: nil, publicAddress: "a", internalAddress: "b", status: .alive, registrationEpoch: 1)), offset: Offset(41), epoch: Term(2))
        state.apply(.brokerStatusChanged(NodeID(1), .fenced))
        #expect(state.lastAppliedOffset == Offset(42))
        #expect(state.lastAppliedEpoch == Term(2))
    }

    @Test func preferredLeaderSkipsReplicasStillCatchingUp() {
        var state = Self.cluster(4)
        _ = Self.run(.createTopic(name: Self.t, partitions: 1, replicationFactor: 2, configs: [:]), &state)
        let before = state.topics[Self.t]!.partitions[0]
        let newcomer = [NodeID(1), NodeID(2), NodeID(3), NodeID(4)].first { !before.replicas.contains($0) }!
        _ = Self.run(.reassignPartitions(topic: Self.t, targets: [PartitionID(0): [newcomer, before.replicas[1]]]), &state)
        let moving = state.topics[Self.t]!.partitions[0]
        #expect(moving.replicas[0] == newcomer)
        #expect(moving.preferredLeader == before.replicas[1], "an adding replica must not be asked to lead")
        let transfers = preferredLeaderTransfers(
            state: state, aliveBrokers: [NodeID(1), NodeID(2), NodeID(3), NodeID(4)],
            currentLeaders: [TopicPartition(Self.t, PartitionID(0)): before.replicas[0]])
        #expect(transfers == [LeadershipTransfer(topic: Self.t, partition: PartitionID(0), from: before.replicas[0], to: before.replicas[1])])
        _ = Self.run(.completeReassignment(topic: Self.t, partition: PartitionID(0)), &state)
        #expect(state.topics[Self.t]!.partitions[0].preferredLeader == newcomer)
    }

    @Test func preferredLeaderOnDrainingBrokerIsNotChosen() {
        var state = Self.cluster(3)
        _ = Self.run(.createTopic(name: Self.t, partitions: 3, replicationFactor: 2, configs: [:]), &state)
        _ = Self.run(.fenceBroker(NodeID(3)), &state)
        let leaders = Dictionary(uniqueKeysWithValues: state.topics[Self.t]!.partitions.map {
            (TopicPartition(Self.t, $0.partition), $0.replicas.last!)
        })
        let transfers = preferredLeaderTransfers(state: state, aliveBrokers: [NodeID(1), NodeID(2), NodeID(3)], currentLeaders: leaders)
        #expect(!transfers.isEmpty)
        #expect(transfers.allSatisfy { $0.to != NodeID(3) }, "a fenced broker must not be made leader: \(transfers)")
    }

    @Test func decommissionWaitsForRunningReassignmentOfItsReplicas() {
        var state = Self.cluster(4)
        _ = Self.run(.createTopic(name: Self.t, partitions: 1, replicationFactor: 2, configs: [:]), &state)
        let replicas = state.topics[Self.t]!.partitions[0].replicas
        let other = [NodeID(1), NodeID(2), NodeID(3), NodeID(4)].first { !replicas.contains($0) }!
        _ = Self.run(.reassignPartitions(topic: Self.t, targets: [PartitionID(0): [replicas[0], other]]), &state)
        #expect(decide(.decommissionBroker(replicas[0]), state: state) == .failure(.reassignmentInProgress(topic: Self.t, partition: PartitionID(0))))
    }

    @Test func deletingTheLastTopicOnADrainingBrokerFinishesTheDrain() {
        var state = Self.cluster(3)
        _ = Self.run(.createTopic(name: Self.t, partitions: 2, replicationFactor: 2, configs: [:]), &state)
        let records = Self.run(.decommissionBroker(NodeID(1)), &state)
        #expect(records.first == .brokerStatusChanged(NodeID(1), .decommissioning))
        #expect(state.brokers[NodeID(1)]?.status == .decommissioning)
        let deleted = Self.run(.deleteTopic(Self.t), &state)
        #expect(deleted == [.topicDeleted(Self.t), .brokerStatusChanged(NodeID(1), .decommissioned)])
        #expect(Self.run(.unregisterBroker(NodeID(1)), &state) == [.brokerUnregistered(NodeID(1))])
    }

    @Test func restartDuringDrainKeepsDraining() {
        var state = Self.cluster(3)
        _ = Self.run(.createTopic(name: Self.t, partitions: 1, replicationFactor: 1, configs: [:]), &state)
        let holder = state.topics[Self.t]!.partitions[0].replicas[0]
        _ = Self.run(.decommissionBroker(holder), &state)
        let epoch = state.brokers[holder]!.registrationEpoch
        _ = Self.run(.registerBroker(id: holder, rack: nil, publicAddress: "new", internalAddress: "new"), &state)
        #expect(state.brokers[holder]?.status == .decommissioning)
        #expect(state.brokers[holder]!.registrationEpoch > epoch)
        #expect(state.brokers[holder]?.publicAddress == "new")
    }

    @Test func registrationEpochsNeverRepeat() {
        var state = Self.cluster(2)
        _ = Self.run(.unregisterBroker(NodeID(2)), &state)
        _ = Self.run(.registerBroker(id: NodeID(2), rack: nil, publicAddress: "p", internalAddress: "i"), &state)
        #expect(state.brokers[NodeID(2)]!.registrationEpoch == 3)
        #expect(state.nextRegistrationEpoch == 4)
    }

    @Test func errorsMapToBrokerErrors() {
        #expect(MetadataError.unknownTopic(Self.t).brokerError == .unknownTopic("t"))
        #expect(MetadataError.topicExists(Self.t).brokerError.httpStatus == 409)
        #expect(MetadataError.invalidReplicationFactor("x").brokerError.httpStatus == 422)
        #expect(MetadataError.invalidConfig("x").brokerError.httpStatus == 422)
        #expect(MetadataError.unknownBroker(NodeID(3)).brokerError.httpStatus == 404)
        #expect(MetadataError.reassignmentInProgress(topic: Self.t, partition: PartitionID(0)).brokerError.httpStatus == 409)
    }

    @Test func limitsAreEnforced() {
        var limits = MetadataLimits()
        limits.topicsMax = 1
        limits.brokersMax = 2
        var state = Self.cluster(2)
        #expect(decide(.registerBroker(id: NodeID(3), rack: nil, publicAddress: "p", internalAddress: "i"), state: state, limits: limits)
            == .failure(.limitExceeded("at most 2 brokers")))
        _ = Self.run(.createTopic(name: Self.t, partitions: 1, replicationFactor: 1, configs: [:]), &state)
        guard case .failure(.limitExceeded) = decide(.createTopic(name: TopicName("u")!, partitions: 1, replicationFactor: 1, configs: [:]), state: state, limits: limits)
        else {
            Issue.record("topicsMax not enforced")
            return
        }
        let tooMany = Dictionary(uniqueKeysWithValues: (0..<300).map { ("k\($0)", "v") })
        guard case .failure(.limitExceeded) = decide(.alterConfigs(topic: Self.t, set: tooMany, remove: []), state: state) else {
            Issue.record("configEntriesPerTopicMax not enforced")
            return
        }
    }
}

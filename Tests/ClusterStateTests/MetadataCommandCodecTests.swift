import BrokerModel
import Testing

@testable import ClusterState

@Suite("MetadataCommandCodec") struct MetadataCommandCodecTests {
    static let t = TopicName("payments")!

    static let everyCommand: [MetadataCommand] = [
        .registerBroker(id: NodeID(1), rack: "eu-west-1a", publicAddress: "10.0.0.1:8082", internalAddress: "10.0.0.1:9082"),
        .registerBroker(id: NodeID(2), rack: nil, publicAddress: "héllo:1", internalAddress: ""),
        .unregisterBroker(NodeID(3)),
        .fenceBroker(NodeID(4)),
        .unfenceBroker(NodeID(5)),
        .createTopic(name: t, partitions: 12, replicationFactor: 3, configs: ["min.insync.replicas": "2", "retention.ms": "1000", "a": ""]),
        .createTopic(name: t, partitions: 1, replicationFactor: nil, configs: [:]),
        .deleteTopic(t),
        .alterConfigs(topic: t, set: ["x": "y"], remove: ["retention.bytes", "z"]),
        .alterConfigs(topic: t, set: [:], remove: []),
        .createPartitions(topic: t, totalCount: 24),
        .reassignPartitions(topic: t, targets: [PartitionID(0): [NodeID(1), NodeID(2)], PartitionID(7): [NodeID(3)], PartitionID(2): []]),
        .completeReassignment(topic: t, partition: PartitionID(7)),
        .cancelReassignment(topic: t, partition: PartitionID(8)),
        .decommissionBroker(NodeID(9)),
        .balanceReplicas,
    ]

    static let everyError: [MetadataError] = [
        .unknownBroker(NodeID(1)), .brokerDecommissioned(NodeID(2)), .brokerHostsReplicas(NodeID(3)),
        .topicExists(t), .unknownTopic(t), .unknownPartition(topic: t, partition: PartitionID(4)),
        .invalidPartitionCount("0"), .invalidReplicationFactor("5 > 3 brokers"), .invalidReplicas("dup"),
        .invalidConfig("min.insync.replicas"), .invalidBroker("bad"),
        .reassignmentInProgress(topic: t, partition: PartitionID(1)), .noReassignmentInProgress(topic: t, partition: PartitionID(2)),
        .cannotMoveReplicas("no room"), .limitExceeded("too many topics"),
    ]

    @Test func everyCommandRoundTrips() throws {
        for c in Self.everyCommand { #expect(try MetadataCommandCodec.decodeCommand(MetadataCommandCodec.encode(c)) == c) }
        // Maps encode in key order, so equal commands encode equally.
        let a = MetadataCommand.createTopic(name: Self.t, partitions: 1, replicationFactor: 1, configs: ["b": "1", "a": "2", "c": "3"])
        let b = MetadataCommand.createTopic(name: Self.t, partitions: 1, replicationFactor: 1, configs: ["c": "3", "a": "2", "b": "1"])
        #expect(MetadataCommandCodec.encode(a) == MetadataCommandCodec.encode(b))
    }

    @Test func everyErrorRoundTrips() throws {
        for e in Self.everyError { #expect(try MetadataCommandCodec.decodeError(MetadataCommandCodec.encode(e)) == e) }
    }

    @Test func hostileInputsAreRefused() {
        let good = MetadataCommandCodec.encode(Self.everyCommand[5])
        #expect(throws: DecodeError.self) { try MetadataCommandCodec.decodeCommand([]) }
        #expect(throws: DecodeError.self) { try MetadataCommandCodec.decodeCommand(good + [0]) }
        #expect(throws: DecodeError.self) { try MetadataCommandCodec.decodeCommand(Array(good.dropLast())) }
        #expect(throws: DecodeError.self) { try MetadataCommandCodec.decodeCommand([2, 1]) }  // version
        #expect(throws: DecodeError.self) { try MetadataCommandCodec.decodeCommand([1, 99]) }  // tag
        #expect(throws: DecodeError.self) { try MetadataCommandCodec.decodeError([1, 99]) }
        // An invalid topic name: "a/b" (varint length 3 = zig-zag 6).
        #expect(throws: DecodeError.self) { try MetadataCommandCodec.decodeCommand([1, 6, 6] + Array("a/b".utf8)) }
        // Limits bound counts and strings.
        var limits = MetadataLimits()
        limits.configEntriesPerTopicMax = 2
        #expect(throws: DecodeError.self) { try MetadataCommandCodec.decodeCommand(good, limits: limits) }
        limits = MetadataLimits()
        limits.stringBytesMax = 4
        #expect(throws: DecodeError.self) {
            try MetadataCommandCodec.decodeCommand(MetadataCommandCodec.encode(Self.everyCommand[0]), limits: limits)
        }
    }

    @Test(arguments: [UInt64(1), 7, 99, 0xC0FFEE])
    func fuzzNeverCrashes(seed: UInt64) {
        var random = SplitMix64(seed: seed)
        var refused = 0
        for i in 0..<3_000 {
            let isCommand = i % 2 == 0
            var bytes = isCommand
                ? MetadataCommandCodec.encode(Self.everyCommand[random.below(Self.everyCommand.count)])
                : MetadataCommandCodec.encode(Self.everyError[random.below(Self.everyError.count)])
            switch random.below(3) {
            case 0: bytes = Array(bytes.prefix(random.below(bytes.count + 1)))
            case 1: for _ in 0...random.below(3) { bytes[random.below(bytes.count)] = UInt8(truncatingIfNeeded: random.next()) }
            default:
                bytes = Array(bytes.prefix(2)) + (0..<random.below(64)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            }
            if isCommand {
                if let c = try? MetadataCommandCodec.decodeCommand(bytes) {
                    #expect((try? MetadataCommandCodec.decodeCommand(MetadataCommandCodec.encode(c))) == c)
                } else {
                    refused += 1
                }
            } else {
                if let e = try? MetadataCommandCodec.decodeError(bytes) {
                    #expect((try? MetadataCommandCodec.decodeError(MetadataCommandCodec.encode(e))) == e)
                } else {
                    refused += 1
                }
            }
        }
        #expect(refused > 0)
    }
}

import BrokerModel
import ClusterState
import Testing

@Suite struct MetadataCodecTests {
    static let topic = TopicName("orders")!

    /// One of every record shape, with the awkward values (nil rack, removal, reassignment sets,
    /// non-ASCII text, extreme ids).
    static let samples: [MetadataRecord] = [
        .brokerRegistered(BrokerInfo(id: NodeID(1), rack: nil, publicAddress: "a:1", internalAddress: "b:2", status: .alive, registrationEpoch: 1)),
        .brokerRegistered(
            BrokerInfo(id: NodeID(Int32.max), rack: "rack-é", publicAddress: "[::1]:9092", internalAddress: "", status: .decommissioning, registrationEpoch: (1 << 62) - 1)),
        .brokerUnregistered(NodeID(0)),
        .brokerStatusChanged(NodeID(7), .fenced),
        .brokerStatusChanged(NodeID(7), .decommissioned),
        .topicCreated(name: topic, id: TopicID((1 << 62) - 1), replicationFactor: 3, configs: ["min.insync.replicas": "2", "retention.ms": "-1", "ключ": ""]),
        .topicCreated(name: TopicName("__cluster")!, id: TopicID(1), replicationFactor: 1, configs: [:]),
        .partitionCreated(topic: topic, assignment: PartitionAssignment(partition: PartitionID(0), replicas: [NodeID(1), NodeID(2), NodeID(3)])),
        .topicConfigChanged(topic: topic, key: "cleanup.policy", value: "compact"),
        .topicConfigChanged(topic: topic, key: "cleanup.policy", value: nil),
        .partitionReplicasChanged(
            topic: topic,
            assignment: PartitionAssignment(
                partition: PartitionID(Int32.max), replicas: [NodeID(4), NodeID(2), NodeID(3), NodeID(1)], addingReplicas: [NodeID(4)],
                removingReplicas: [NodeID(1)])),
        .topicDeleted(topic),
    ]

    @Test func recordsRoundTrip() throws {
        for record in Self.samples {
            let bytes = MetadataCodec.encode(record)
            #expect(bytes[0] == MetadataCodec.recordVersion)
            #expect(try MetadataCodec.decodeRecord(bytes) == record, "\(record)")
        }
    }

    @Test func everyTruncationIsRejected() {
        for record in Self.samples {
            let bytes = MetadataCodec.encode(record)
            for length in 0..<bytes.count {
                #expect(throws: DecodeError.self, "\(record) cut to \(length) bytes") {
                    try MetadataCodec.decodeRecord(Array(bytes.prefix(length)))
                }
            }
            #expect(throws: DecodeError.self) { try MetadataCodec.decodeRecord(bytes + [0]) }
        }
    }

    @Test func namedGarbageIsRejected() {
        let valid = MetadataCodec.encode(.topicDeleted(Self.topic))
        var wrongVersion = valid
        wrongVersion[0] = 2
        var unknownTag = valid
        unknownTag[1] = 200
        // topicDeleted with the name ".." (length 2): TopicName refuses it.
        let badName: [UInt8] = [1, 8, 4, 0x2E, 0x2E]
        // topicDeleted with an invalid UTF-8 name.
        let notUTF8: [UInt8] = [1, 8, 4, 0xC3, 0x28]
        // brokerStatusChanged with status 9.
        let badStatus: [UInt8] = [1, 3, 0, 0, 0, 1, 9]
        // brokerUnregistered with a negative id.
        let negativeID: [UInt8] = [1, 2, 0xFF, 0xFF, 0xFF, 0xFF]
        // topicDeleted whose name claims 2^40 bytes.
        var hugeLength: [UInt8] = [1, 8]
        var writer = ByteWriter()
        writer.varint(1 << 40)
        hugeLength += writer.bytes
        for (why, bytes) in [
            ("empty", []), ("version", wrongVersion), ("tag", unknownTag), ("topic name", badName), ("utf8", notUTF8),
            ("status", badStatus), ("negative id", negativeID), ("huge length", hugeLength),
        ] as [(String, [UInt8])] {
            #expect(throws: DecodeError.self, "\(why)") { try MetadataCodec.decodeRecord(bytes) }
        }
    }

    @Test func assignmentsThatApplyWouldTrapOnAreRejected() {
        func encoded(_ a: PartitionAssignment) -> [UInt8] {
            MetadataCodec.encode(.partitionReplicasChanged(topic: Self.topic, assignment: a))
        }
        let n = { (i: Int32) in NodeID(i) }
        let bad = [
            PartitionAssignment(partition: PartitionID(0), replicas: []),
            PartitionAssignment(partition: PartitionID(0), replicas: [n(1), n(1)]),
            PartitionAssignment(partition: PartitionID(0), replicas: [n(1), n(2)], addingReplicas: [n(3)]),
            PartitionAssignment(partition: PartitionID(0), replicas: [n(1), n(2)], addingReplicas: [n(2)], removingReplicas: [n(2)]),
            PartitionAssignment(partition: PartitionID(0), replicas: [n(1)], removingReplicas: [n(1)]),
            PartitionAssignment(partition: PartitionID(-1), replicas: [n(1)]),
        ]
        for assignment in bad {
            #expect(throws: DecodeError.self, "\(assignment)") { try MetadataCodec.decodeRecord(encoded(assignment)) }
        }
    }

    /// Random bytes and random mutations of valid encodings: decoding throws or returns, never traps.
    /// A mutated snapshot that does decode must still be a state `apply` can build on.
    @Test(arguments: Array(UInt64(1)...40))
    func hostileBytesNeverTrap(seed: UInt64) {
        var random = SeededGenerator(seed: seed)
        var sim = Simulation(seed: seed)
        sim.registerBrokers(4, racks: 2)
        for _ in 0..<30 { sim.run(sim.randomCommand()) }
        let snapshot = MetadataCodec.encodeSnapshot(sim.state)
        for _ in 0..<300 {
            let length = Int.random(in: 0...64, using: &random)
            let noise = (0..<length).map { _ in UInt8.random(in: 0...255, using: &random) }
            _ = try? MetadataCodec.decodeRecord(noise)
            _ = try? MetadataCodec.decodeSnapshot(noise)
            _ = try? MetadataCodec.decodeSnapshot(MetadataCodec.encodeSnapshot(MetadataState()).prefix(4) + noise)
            if let record = Self.samples.randomElement(using: &random) {
                var bytes = MetadataCodec.encode(record)
                for _ in 0..<Int.random(in: 1...3, using: &random) {
                    bytes[Int.random(in: 0..<bytes.count, using: &random)] = UInt8.random(in: 0...255, using: &random)
                }
                // A record that decodes and that `problem(applying:)` accepts must apply without a trap.
                if let decoded = try? MetadataCodec.decodeRecord(bytes), sim.state.problem(applying: decoded) == nil {
                    var copy = sim.state
                    copy.apply(decoded)
                }
            }
            var mutated = snapshot
            for _ in 0..<Int.random(in: 1...4, using: &random) {
                mutated[Int.random(in: 0..<mutated.count, using: &random)] = UInt8.random(in: 0...255, using: &random)
            }
            if let state = try? MetadataCodec.decodeSnapshot(mutated) {
                // Decoded: it must satisfy what decide/apply assume, so building on it cannot trap.
                var copy = state
                for _ in 0..<5 {
                    let command = MetadataCommand.balanceReplicas
                    if case .success(let records) = decide(command, state: copy) { for r in records { copy.apply(r) } }
                }
                if let topic = state.sortedTopics.first {
                    if case .success(let records) = decide(.deleteTopic(topic.name), state: copy) { for r in records { copy.apply(r) } }
                }
            }
            let cut = Int.random(in: 0..<snapshot.count, using: &random)
            #expect(throws: DecodeError.self, "seed \(seed): snapshot cut at \(cut)") { try MetadataCodec.decodeSnapshot(Array(snapshot.prefix(cut))) }
        }
    }

    @Test func snapshotRoundTripsAndIsCanonical() throws {
        var state = MetadataState()
        for record in Self.samples.prefix(1) { state.apply(record) }
        state.apply(.brokerRegistered(BrokerInfo(id: NodeID(2), rack: "a", publicAddress: "x", internalAddress: "y", status: .alive, registrationEpoch: 5)), offset: Offset(10), epoch: Term(3))
        let bytes = MetadataCodec.encodeSnapshot(state)
        let decoded = try MetadataCodec.decodeSnapshot(bytes)
        #expect(decoded == state)
        #expect(decoded.lastAppliedOffset == Offset(10))
        #expect(decoded.lastAppliedEpoch == Term(3))
        #expect(MetadataCodec.encodeSnapshot(decoded) == bytes)
        #expect(throws: DecodeError.self) { try MetadataCodec.decodeSnapshot(bytes + [0]) }
        // A counter at 2^62 would be within reach of overflow: neither decoded nor applied.
        let big = MetadataRecord.brokerRegistered(
            BrokerInfo(id: NodeID(2), rack: nil, publicAddress: "x", internalAddress: "y", status: .alive, registrationEpoch: 1 << 62))
        #expect(throws: DecodeError.self) { try MetadataCodec.decodeRecord(MetadataCodec.encode(big)) }
        #expect(MetadataState().problem(applying: big)?.contains("out of range") == true)
        var wrongMagic = bytes
        wrongMagic[0] = 0
        #expect(throws: DecodeError.self) { try MetadataCodec.decodeSnapshot(wrongMagic) }
    }

    @Test func problemExplainsRecordsThatCannotApply() {
        var state = MetadataState()
        state.apply(.brokerRegistered(BrokerInfo(id: NodeID(1), rack: nil, publicAddress: "a", internalAddress: "b", status: .alive, registrationEpoch: 1)))
        state.apply(.topicCreated(name: Self.topic, id: TopicID(1), replicationFactor: 1, configs: [:]))
        let one = PartitionAssignment(partition: PartitionID(0), replicas: [NodeID(1)])
        #expect(state.problem(applying: .partitionCreated(topic: Self.topic, assignment: one)) == nil)
        let cases: [(MetadataRecord, String)] = [
            (.topicDeleted(TopicName("nope")!), "unknown topic"),
            (.topicCreated(name: Self.topic, id: TopicID(9), replicationFactor: 1, configs: [:]), "created twice"),
            (.topicCreated(name: TopicName("x")!, id: TopicID(1), replicationFactor: 1, configs: [:]), "reused"),
            (.partitionCreated(topic: Self.topic, assignment: PartitionAssignment(partition: PartitionID(1), replicas: [NodeID(1)])), "out of order"),
            (.partitionCreated(topic: Self.topic, assignment: PartitionAssignment(partition: PartitionID(0), replicas: [NodeID(2)])), "unknown broker"),
            (.partitionReplicasChanged(topic: Self.topic, assignment: one), "unknown partition"),
            (.brokerStatusChanged(NodeID(5), .fenced), "unknown broker"),
            (.brokerRegistered(BrokerInfo(id: NodeID(2), rack: nil, publicAddress: "a", internalAddress: "b", status: .alive, registrationEpoch: 1)), "reused"),
        ]
        for (record, expected) in cases {
            let problem = state.problem(applying: record)
            #expect(problem?.contains(expected) == true, "\(record): \(String(describing: problem))")
        }
        state.apply(.partitionCreated(topic: Self.topic, assignment: one))
        #expect(state.problem(applying: .brokerUnregistered(NodeID(1)))?.contains("still hosts replicas") == true)
    }

    @Test func snapshotWithDanglingReplicaIsRejected() throws {
        var state = MetadataState()
        state.apply(.brokerRegistered(BrokerInfo(id: NodeID(1), rack: nil, publicAddress: "a", internalAddress: "b", status: .alive, registrationEpoch: 1)))
        state.apply(.topicCreated(name: Self.topic, id: TopicID(1), replicationFactor: 1, configs: [:]))
        state.apply(.partitionCreated(topic: Self.topic, assignment: PartitionAssignment(partition: PartitionID(0), replicas: [NodeID(1)])))
        var bytes = MetadataCodec.encodeSnapshot(state)
        // The partition's one replica id is the last 4 bytes before two empty node lists (2 bytes).
        bytes[bytes.count - 3] = 9
        let error = #expect(throws: DecodeError.self) { try MetadataCodec.decodeSnapshot(bytes) }
        #expect(error?.message.contains("unknown broker 9") == true, "\(String(describing: error))")
    }
}

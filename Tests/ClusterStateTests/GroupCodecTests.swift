import BrokerModel
import ClusterState
import Testing

@Suite struct GroupCodecTests {
    static let group = GroupID("orders-app")!
    static let t = TopicName("t")!
    static func tp(_ topic: TopicName, _ p: Int32) -> TopicPartition { TopicPartition(topic, PartitionID(p)) }
    static let dynamicMember = GroupMember(
        id: MemberID("app-1-0000beef")!, clientID: "Ünïcode client", topics: [TopicName("a")!, t], manualPartitions: nil,
        sessionTimeoutMilliseconds: 30_000, autoOffsetReset: .earliest, autoCommit: true, properties: ["format": "json", "dialect": "v2"])
    static let manualMember = GroupMember(
        id: MemberID("manual")!, clientID: "", topics: [], manualPartitions: [tp(t, 0), tp(t, 3)], sessionTimeoutMilliseconds: 1_000,
        autoOffsetReset: .none, autoCommit: false, properties: [:])

    static let samples: [GroupRecord] = [
        .memberJoined(group: group, member: dynamicMember, assignor: .sticky, nextMemberNumber: 2),
        .memberJoined(group: group, member: manualMember, assignor: .range, nextMemberNumber: 1),
        .memberJoined(
            group: group, member: GroupMember(id: MemberID("e")!, clientID: "x", topics: [], manualPartitions: [], sessionTimeoutMilliseconds: 5_000,
                autoOffsetReset: .latest, autoCommit: false, properties: [:]), assignor: .roundrobin, nextMemberNumber: 7),
        .memberUpdated(group: group, member: dynamicMember),
        .memberRemoved(group: group, member: MemberID("manual")!),
        .rebalanced(group: group, generation: 3, assignment: [dynamicMember.id: [tp(t, 1), tp(t, 2)], manualMember.id: [tp(t, 0), tp(t, 3)]]),
        .rebalanced(group: group, generation: Int32.max, assignment: [:]),
        .offsetCommitted(group: group, partition: tp(t, 2), offset: CommittedOffset(offset: Offset(42), metadata: "", commitMilliseconds: 1_700_000_000_000)),
        .offsetCommitted(group: group, partition: tp(t, 0), offset: CommittedOffset(offset: .zero, metadata: "ckpt ✓", commitMilliseconds: -5)),
        .groupDeleted(group),
    ]

    @Test(arguments: samples)
    func roundTrips(_ record: GroupRecord) throws {
        #expect(try GroupCodec.decodeRecord(GroupCodec.encode(record)) == record)
    }

    /// The format is pinned: a change shows up here, and needs a new version byte.
    @Test func layoutIsStable() {
        #expect(GroupCodec.encode(.groupDeleted(GroupID("g")!)) == [1, 6, 2, 0x67])
        #expect(GroupCodec.encode(.memberRemoved(group: GroupID("g")!, member: MemberID("m")!)) == [1, 3, 2, 0x67, 2, 0x6D])
        #expect(
            GroupCodec.encode(.offsetCommitted(group: GroupID("g")!, partition: Self.tp(Self.t, 1), offset: CommittedOffset(offset: Offset(5), metadata: "", commitMilliseconds: 2)))
                == [1, 5, 2, 0x67, 2, 0x74, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 2])
    }

    @Test func keysSeparateOffsetsFromGroups() {
        let commit = GroupRecord.offsetCommitted(group: Self.group, partition: Self.tp(Self.t, 12), offset: CommittedOffset(offset: .zero, metadata: "", commitMilliseconds: 0))
        #expect(GroupCodec.key(of: commit) == Array("o\0orders-app\0t\012".utf8))
        #expect(GroupCodec.key(of: .groupDeleted(Self.group)) == Array("g\0orders-app".utf8))
        #expect(GroupCodec.key(of: Self.samples[0]) == GroupCodec.key(of: Self.samples[5]))
    }

    @Test func refusesMalformedRecords() {
        var bad: [[UInt8]] = [
            [], [1], [2, 6, 1, 0x67], [1, 99, 1, 0x67], [1, 6, 2, 0x67, 0],  // empty, no tag, version, tag, trailing byte
            [1, 6, 0],  // empty group id
            [1, 6, 2, 0x2F],  // "/" is not in the id alphabet
            [1, 6, 0xFE, 0xFF, 0xFF, 0xFF, 0x0F],  // a length that lies
        ]
        // A negative offset, and a member named twice in one assignment.
        var negative = GroupCodec.encode(.offsetCommitted(group: GroupID("g")!, partition: Self.tp(Self.t, 1), offset: CommittedOffset(offset: Offset(5), metadata: "", commitMilliseconds: 2)))
        negative[10] = 0xFF
        bad.append(negative)
        bad.append([1, 4, 2, 0x67, 0, 0, 0, 1, 4, 2, 0x6D, 0, 2, 0x6D, 0])
        for bytes in bad {
            #expect(throws: DecodeError.self, "\(bytes)") { try GroupCodec.decodeRecord(bytes) }
        }
        // Counts are checked against the limits the decoder is given.
        let tight = GroupLimits(assignmentPartitionsMax: 1)
        #expect(throws: DecodeError.self) { try GroupCodec.decodeRecord(GroupCodec.encode(Self.samples[5]), limits: tight) }
    }

    /// Random bytes, mutated and truncated encodings: decoding throws or returns, never traps; every
    /// strict prefix of an encoding is refused; a mutated record that decodes and that
    /// `problem(applying:)` accepts applies without a trap.
    @Test(arguments: Array(UInt64(1)...40))
    func hostileBytesNeverTrap(seed: UInt64) {
        var random = SeededGenerator(seed: seed)
        var sim = GroupSimulation(seed: seed)
        for _ in 0..<60 { sim.run(sim.randomCommand()) }
        let records = Self.samples + sim.log
        for _ in 0..<300 {
            let noise = (0..<Int.random(in: 0...64, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
            _ = try? GroupCodec.decodeRecord(noise)
            _ = try? GroupCodec.decodeRecord([1] + noise)
            let record = records.randomElement(using: &random)!
            let encoded = GroupCodec.encode(record)
            var bytes = encoded
            for _ in 0..<Int.random(in: 1...3, using: &random) {
                bytes[Int.random(in: 0..<bytes.count, using: &random)] = UInt8.random(in: 0...255, using: &random)
            }
            if let decoded = try? GroupCodec.decodeRecord(bytes) {
                #expect(GroupCodec.encode(decoded).count <= bytes.count, "seed \(seed)")
                if sim.state.problem(applying: decoded) == nil {
                    var copy = sim.state
                    copy.apply(decoded)
                }
            }
            let cut = Int.random(in: 0..<encoded.count, using: &random)
            #expect(throws: DecodeError.self, "seed \(seed): \(record) cut at \(cut)") { try GroupCodec.decodeRecord(Array(encoded.prefix(cut))) }
        }
    }
}

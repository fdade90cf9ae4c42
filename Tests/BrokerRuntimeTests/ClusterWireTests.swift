import BrokerModel
import Testing
@testable import BrokerRuntime

/// The bytes brokers exchange besides Raft's own: frame kinds, leader reports and call bodies.
/// Every decoder sees bytes from a peer, so besides round trips these tests feed it every strict
/// prefix of a valid body (must throw: the encodings are self-delimiting and decoders reject
/// trailing bytes), a body with trailing bytes (must throw), lying counts (must throw, without
/// allocating for the lie), and seeded random mutations (must throw or decode to something whose
/// re-encoding is exactly the mutated bytes — never trap).
@Suite struct ClusterWireTests {
    static let topic = TopicName("orders.eu-1")!

    static func batch(_ values: [String], base: Int64 = 0, epoch: Int32 = 0) -> RecordBatch {
        RecordBatch.encode(records: values.enumerated().map { i, v in
            Record(key: i % 2 == 0 ? Array("k\(i)".utf8) : nil, value: Array(v.utf8),
                   headers: i == 0 ? [RecordHeader(key: "h", value: [1, 2, 3])] : [], timestamp: 1_700_000_000_000 + Int64(i))
        }, baseOffset: Offset(base), partitionLeaderEpoch: epoch)
    }

    static let reports: [LeaderReport] = [
        LeaderReport(group: TopicPartition(topic, PartitionID(0)), term: Term(7), leader: NodeID(2),
                     offsets: PartitionOffsets(logStartOffset: Offset(0), highWatermark: Offset(41), logEndOffset: Offset(42)),
                     inSyncReplicas: [NodeID(1), NodeID(2), NodeID(3)],
                     replicaStates: [ReplicaLag(broker: NodeID(1), logEndOffset: Offset(42), lag: 0),
                                     ReplicaLag(broker: NodeID(2), logEndOffset: Offset(42), lag: 0),
                                     ReplicaLag(broker: NodeID(3), logEndOffset: Offset(40), lag: 2)]),
        LeaderReport(group: TopicPartition(TopicName("t")!, PartitionID(31)), term: Term(Int64.max), leader: NodeID(Int32.max),
                     offsets: PartitionOffsets(logStartOffset: Offset(100), highWatermark: Offset(100), logEndOffset: Offset(100)),
                     inSyncReplicas: [], replicaStates: []),
    ]

    static func decodeReports(_ bytes: [UInt8]) throws(DecodeError) -> [LeaderReport] {
        try ClusterWire.decode(bytes) { (r: inout ByteReader) throws(DecodeError) in try LeaderReport.decode(&r) }
    }

    static let readRequests: [ReadRequest] = [
        ReadRequest(topic: topic, partition: PartitionID(3), offset: .earliest, maxRecords: 500, maxBytes: 1 << 20, waitMilliseconds: 0),
        ReadRequest(topic: topic, partition: PartitionID(0), offset: .latest, maxRecords: 1, maxBytes: 1, waitMilliseconds: 30_000),
        ReadRequest(topic: TopicName("x")!, partition: PartitionID(Int32.max), offset: .exact(Offset(123_456_789_012)), maxRecords: 7, maxBytes: 99, waitMilliseconds: 5),
    ]

    static func sameRequest(_ a: ReadRequest, _ b: ReadRequest) -> Bool {
        a.topic == b.topic && a.partition == b.partition && a.offset == b.offset && a.maxRecords == b.maxRecords
            && a.maxBytes == b.maxBytes && a.waitMilliseconds == b.waitMilliseconds
    }

    static let readResult = ReadResult(topic: topic, partition: PartitionID(1),
                                       batches: [batch(["a", "b", "c"], base: 10, epoch: 3), batch(["d"], base: 13, epoch: 4)],
                                       fromOffset: Offset(11), nextOffset: Offset(14), highWatermark: Offset(14),
                                       logStartOffset: Offset(5), logEndOffset: Offset(15))

    /// One hostile-input check for one codec: `encode(decode(b))` must equal `b` whenever decoding
    /// succeeds, every strict prefix and any trailing byte must throw, mutations must not trap.
    static func checkHostile(_ valid: [UInt8], seed: UInt64, decodeAndReencode: ([UInt8]) throws(DecodeError) -> [UInt8]) throws {
        #expect(try decodeAndReencode(valid) == valid)
        for n in 0..<valid.count {
            #expect(throws: DecodeError.self) { try decodeAndReencode(Array(valid.prefix(n))) }
        }
        #expect(throws: DecodeError.self) { try decodeAndReencode(valid + [0]) }
        var rng = SplitMix64(seed: seed)
        for _ in 0..<2_000 {
            var mutated = valid
            for _ in 0...rng.below(3) {
                let i = rng.below(mutated.count)
                switch rng.below(3) {
                case 0: mutated[i] = UInt8(truncatingIfNeeded: rng.next())
                case 1: mutated[i] ^= 1 << UInt8(rng.below(8))
                default: mutated[i] = [0x00, 0x7f, 0x80, 0xff][rng.below(4)]
                }
            }
            if rng.below(4) == 0 { mutated.removeLast(rng.below(min(8, mutated.count))) }
            if let again = try? decodeAndReencode(mutated) {
                #expect(again == mutated, "seed \(seed): a mutated body decoded to something that encodes differently")
            }
        }
    }

    // MARK: - frames

    @Test func frameCarriesItsKindThenThePayload() {
        #expect(ClusterWire.frame(.raft, [9, 8, 7]) == [1, 9, 8, 7])
        #expect(ClusterWire.frame(.report, []) == [2])
        #expect(ClusterWire.FrameKind(rawValue: 0) == nil)
        #expect(ClusterWire.FrameKind(rawValue: 3) == nil)
    }

    // MARK: - leader reports

    @Test func leaderReportsRoundTrip() throws {
        for reports in [Self.reports, [], [Self.reports[1]]] {
            #expect(try Self.decodeReports(LeaderReport.encode(reports)) == reports)
        }
    }

    @Test func leaderReportsRejectHostileBytes() throws {
        try Self.checkHostile(LeaderReport.encode(Self.reports), seed: 1) { (b) throws(DecodeError) in LeaderReport.encode(try Self.decodeReports(b)) }
    }

    @Test func leaderReportCountsThatLieThrow() {
        // A report count far beyond the bytes present, and negative.
        for count: Int32 in [Int32.max, 1_000_000, 1, -1, Int32.min] {
            var w = ByteWriter()
            w.int32(count)
            #expect(throws: DecodeError.self) { try Self.decodeReports(w.bytes) }
        }
        // A valid report whose in-sync list claims more members than there are bytes.
        var bytes = LeaderReport.encode([Self.reports[1]])
        // The in-sync count sits after count(4) + topic(4+1) + partition(4) + term(8) + leader(4) + offsets(24).
        let isrCount = 4 + 4 + 1 + 4 + 8 + 4 + 24
        #expect(bytes.readBigEndian(Int32.self, at: isrCount) == 0)
        bytes.putBigEndian(Int32.max, at: isrCount)
        #expect(throws: DecodeError.self) { try Self.decodeReports(bytes) }
        bytes.putBigEndian(Int32(-1), at: isrCount)
        #expect(throws: DecodeError.self) { try Self.decodeReports(bytes) }
    }

    @Test func leaderReportWithAnInvalidTopicNameThrows() {
        var w = ByteWriter()
        w.int32(1)
        w.sizedString("../etc")
        w.int32(0)
        w.int64(1)
        w.int32(1)
        for _ in 0..<3 { w.int64(0) }
        w.int32(0)
        w.int32(0)
        #expect(throws: DecodeError.self) { try Self.decodeReports(w.bytes) }
    }

    // MARK: - produce calls

    @Test func produceCallRoundTrips() throws {
        for acks in Acks.allCases {
            let call = PeerCall.Produce(group: TopicPartition(Self.topic, PartitionID(2)), acks: acks,
                                        batches: [Self.batch(["one", "two"]), Self.batch(["three"], base: 2, epoch: 9)])
            let decoded = try PeerCall.Produce.decode(call.encode())
            #expect(decoded.group == call.group)
            #expect(decoded.acks == acks)
            #expect(decoded.batches == call.batches)
            #expect(try decoded.batches.flatMap { try $0.records() }.map { String(decoding: $0.record.value!, as: UTF8.self) } == ["one", "two", "three"])
        }
        let empty = PeerCall.Produce(group: TopicPartition(Self.topic, PartitionID(0)), acks: .all, batches: [])
        #expect(try PeerCall.Produce.decode(empty.encode()).batches.isEmpty)
    }

    @Test func produceCallRejectsHostileBytes() throws {
        let call = PeerCall.Produce(group: TopicPartition(Self.topic, PartitionID(2)), acks: .leader,
                                    batches: [Self.batch(["one", "two"]), Self.batch(["three"])])
        try Self.checkHostile(call.encode(), seed: 2) { (b) throws(DecodeError) in try PeerCall.Produce.decode(b).encode() }
    }

    @Test func produceCallWithACorruptBatchOrBadAcksThrows() throws {
        let call = PeerCall.Produce(group: TopicPartition(Self.topic, PartitionID(0)), acks: .all, batches: [Self.batch(["payload"])])
        var bytes = call.encode()
        // Flip the last byte: inside the record, covered by the batch CRC.
        bytes[bytes.count - 1] ^= 0xff
        #expect(throws: DecodeError.self) { try PeerCall.Produce.decode(bytes) }

        var w = ByteWriter()
        ClusterWire.write(TopicPartition(Self.topic, PartitionID(0)), &w)
        w.sizedString("2")
        ClusterWire.write([RecordBatch](), &w)
        #expect(throws: DecodeError.self) { try PeerCall.Produce.decode(w.bytes) }

        // A batch size that is negative, or larger than the bytes left.
        for size: Int32 in [-1, Int32.max, 10] {
            var v = ByteWriter()
            ClusterWire.write(TopicPartition(Self.topic, PartitionID(0)), &v)
            v.sizedString("all")
            v.int32(1)
            v.int32(size)
            v.append(Array(repeating: 0, count: 64))
            #expect(throws: DecodeError.self) { try PeerCall.Produce.decode(v.bytes) }
        }
    }

    // MARK: - offsets

    @Test func offsetsRoundTrip() throws {
        for offsets in [[], [Offset(0)], [Offset(-1), Offset(Int64.max), Offset(Int64.min), Offset(42)]] {
            #expect(try PeerCall.decodeOffsets(PeerCall.encodeOffsets(offsets)) == offsets)
        }
        let p = PartitionOffsets(logStartOffset: Offset(3), highWatermark: Offset(10), logEndOffset: Offset(12))
        #expect(try PeerCall.decodePartitionOffsets(PeerCall.encode(p)) == p)
        #expect(throws: DecodeError.self) { try PeerCall.decodePartitionOffsets(PeerCall.encodeOffsets([Offset(1), Offset(2)])) }
        #expect(throws: DecodeError.self) { try PeerCall.decodePartitionOffsets(PeerCall.encodeOffsets([Offset(1), Offset(2), Offset(3), Offset(4)])) }
    }

    @Test func offsetsRejectHostileBytes() throws {
        try Self.checkHostile(PeerCall.encodeOffsets([Offset(5), Offset(6), Offset(70_000)]), seed: 3) { (b) throws(DecodeError) in
            PeerCall.encodeOffsets(try PeerCall.decodeOffsets(b))
        }
        var w = ByteWriter()
        w.int32(Int32.max)
        w.int64(1)
        #expect(throws: DecodeError.self) { try PeerCall.decodeOffsets(w.bytes) }
    }

    // MARK: - read calls

    @Test func readRequestsRoundTrip() throws {
        for request in Self.readRequests {
            #expect(Self.sameRequest(try PeerCall.decodeReadRequest(PeerCall.encode(request)), request))
        }
        // Out-of-range limits are clamped on the way out, not wrapped.
        let huge = ReadRequest(topic: Self.topic, partition: PartitionID(0), offset: .earliest, maxRecords: Int.max, maxBytes: Int.max, waitMilliseconds: Int.min)
        let decoded = try PeerCall.decodeReadRequest(PeerCall.encode(huge))
        #expect(decoded.maxRecords == Int(Int32.max))
        #expect(decoded.maxBytes == Int(Int32.max))
        #expect(decoded.waitMilliseconds == Int(Int32.min))
    }

    @Test func readRequestsRejectHostileBytes() throws {
        for (i, request) in Self.readRequests.enumerated() {
            try Self.checkHostile(PeerCall.encode(request), seed: 10 + UInt64(i)) { (b) throws(DecodeError) in
                PeerCall.encode(try PeerCall.decodeReadRequest(b))
            }
        }
        var bytes = PeerCall.encode(Self.readRequests[0])
        let kind = 4 + Self.topic.rawValue.utf8.count + 4
        #expect(bytes[kind] == 0)
        bytes[kind] = 3
        #expect(throws: DecodeError.self) { try PeerCall.decodeReadRequest(bytes) }
    }

    @Test func readResultsRoundTrip() throws {
        let r = Self.readResult
        let decoded = try PeerCall.decodeReadResult(PeerCall.encode(r), topic: r.topic, partition: r.partition)
        #expect(decoded.batches == r.batches)
        #expect([decoded.fromOffset, decoded.nextOffset, decoded.highWatermark, decoded.logStartOffset, decoded.logEndOffset]
            == [r.fromOffset, r.nextOffset, r.highWatermark, r.logStartOffset, r.logEndOffset])
        #expect(try decoded.records().map(\.offset.rawValue) == [11, 12, 13])
        #expect(try decoded.records().map { String(decoding: $0.record.value!, as: UTF8.self) } == ["b", "c", "d"])
    }

    @Test func readResultsRejectHostileBytes() throws {
        let r = Self.readResult
        try Self.checkHostile(PeerCall.encode(r), seed: 20) { (b) throws(DecodeError) in
            PeerCall.encode(try PeerCall.decodeReadResult(b, topic: r.topic, partition: r.partition))
        }
    }
}

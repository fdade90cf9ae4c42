import BrokerModel
import Testing

@testable import Consensus

@Suite("RaftWire") struct RaftWireTests {
    static let topic = TopicName("orders.v1")!
    static let meta = TopicName("__cluster")!

    static func batch(_ base: Int64, records: Int, epoch: Int32, control: Bool = false) -> RecordBatch {
        RecordBatch.encode(
            records: (0..<records).map { Record(key: [UInt8(truncatingIfNeeded: $0)], value: Array("value \($0)".utf8), timestamp: 1_700_000_000_000 + Int64($0)) },
            baseOffset: Offset(base), partitionLeaderEpoch: epoch, isControl: control)
    }

    /// One envelope of every message case (and both append results, snapshots with and without data).
    static var everyCase: [GroupEnvelope] {
        let p = LogPosition(offset: Offset(41), term: Term(3))
        let messages: [RaftMessage] = [
            .preVote(lastLog: p),
            .preVoteResponse(granted: true),
            .preVoteResponse(granted: false),
            .vote(lastLog: .beforeStart, isLeadershipTransfer: true),
            .vote(lastLog: p, isLeadershipTransfer: false),
            .voteResponse(granted: true),
            .append(previous: p, entries: [], commit: Offset(40)),
            .append(previous: p, entries: [batch(42, records: 3, epoch: 4), batch(45, records: 1, epoch: 4, control: true)], commit: Offset(44)),
            .appendResponse(.accepted(match: Offset(45))),
            .appendResponse(.rejected(previousOffset: Offset(99), hint: p)),
            .heartbeat(commit: Offset(-1), readSequence: UInt64.max),
            .heartbeatResponse(readSequence: 7),
            .installSnapshot(Snapshot(point: p, membership: Membership(voters: [NodeID(1), NodeID(2), NodeID(3)], learners: [NodeID(4)]))),
            .installSnapshot(Snapshot(point: p, membership: Membership(voters: [NodeID(1)]), data: [])),
            .installSnapshot(Snapshot(point: p, membership: Membership(voters: [NodeID(1)]), data: Array("state image".utf8))),
            .timeoutNow,
        ]
        return messages.enumerated().map { i, m in
            GroupEnvelope(
                group: TopicPartition(i % 2 == 0 ? topic : meta, PartitionID(Int32(i))),
                envelope: RaftEnvelope(from: NodeID(Int32(i % 3 + 1)), to: NodeID(Int32(i % 5 + 1)), term: Term(Int64(i) * 1_000_000_007), message: m))
        }
    }

    @Test func everyCaseRoundTrips() throws {
        let all = Self.everyCase
        #expect(try RaftWire.decode(RaftWire.encode(all)) == all)
        for e in all { #expect(try RaftWire.decode(RaftWire.encode([e])) == [e]) }
        #expect(try RaftWire.decode(RaftWire.encode([])) == [])
    }

    @Test func hostileInputsAreRefused() {
        let good = RaftWire.encode(Self.everyCase)
        #expect(throws: DecodeError.self) { try RaftWire.decode([]) }
        #expect(throws: DecodeError.self) { try RaftWire.decode(good + [0]) }
        #expect(throws: DecodeError.self) { try RaftWire.decode(Array(good.dropLast())) }
        var badMagic = good
        badMagic[0] = 0
        #expect(throws: DecodeError.self) { try RaftWire.decode(badMagic) }
        // Envelope count beyond the limit.
        var limits = RaftWireLimits()
        limits.envelopesMax = 3
        #expect(throws: DecodeError.self) { try RaftWire.decode(good, limits: limits) }
        // A corrupted record batch byte fails its CRC.
        let append = RaftWire.encode([Self.everyCase[7]])
        var corrupted = append
        corrupted[corrupted.count - 3] ^= 0xFF
        #expect(throws: DecodeError.self) { try RaftWire.decode(corrupted) }
        // A membership with a node both voter and learner is refused, not trapped on.
        let overlapping: [UInt8] = {
            var w = ByteWriter()
            w.append(RaftWire.magic)
            w.int8(1)
            w.varint(1)
            w.varint(1)
            w.append([UInt8(ascii: "t")])
            w.int32(0)
            w.int32(1)
            w.int32(2)
            w.int64(1)
            w.int8(Int8(RaftWire.Tag.installSnapshot.rawValue))
            w.int64(1)
            w.int64(1)
            w.varint(1)
            w.int32(5)
            w.varint(1)
            w.int32(5)
            w.int8(0)
            return w.bytes
        }()
        #expect(throws: DecodeError.self) { try RaftWire.decode(overlapping) }
    }

    /// Mutated and truncated encodings never crash: they decode (to something) or throw.
    @Test(arguments: [UInt64(1), 2, 3, 42, 0xDEAD_BEEF])
    func fuzzNeverCrashes(seed: UInt64) {
        var random = SplitMix64(seed: seed)
        let all = Self.everyCase
        var decoded = 0, refused = 0
        for _ in 0..<2_000 {
            let start = random.below(all.count)
            let chosen = Array(all[start..<min(all.count, start + 1 + random.below(4))])
            var bytes = RaftWire.encode(chosen)
            switch random.below(4) {
            case 0:
                bytes = Array(bytes.prefix(random.below(bytes.count + 1)))
            case 1:
                for _ in 0...random.below(4) { bytes[random.below(bytes.count)] = UInt8(truncatingIfNeeded: random.next()) }
            case 2:
                let i = random.below(bytes.count)
                bytes.insert(contentsOf: (0..<random.below(9)).map { _ in UInt8(truncatingIfNeeded: random.next()) }, at: i)
            default:
                // Keep the header, replace the rest with noise.
                bytes = Array(bytes.prefix(5)) + (0..<random.below(200)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            }
            do {
                let envelopes = try RaftWire.decode(bytes)
                // Whatever decodes is a valid value: it survives another round trip unchanged.
                #expect((try? RaftWire.decode(RaftWire.encode(envelopes))) == envelopes)
                decoded += 1
            } catch {
                refused += 1
            }
        }
        #expect(refused > 0)
        #expect(decoded + refused == 2_000)
    }
}

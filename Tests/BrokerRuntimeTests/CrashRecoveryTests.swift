import BrokerModel
import BrokerTesting
import Foundation
import Testing
@testable import BrokerRuntime

/// The whole broker on a simulated disk that loses (or tears) everything not fsynced at a "power
/// cut". After each crash a new broker starts on what survived. Checked with TESTING.md's words:
/// no lost write (every acks=all record is at its acknowledged offset), no inconsistent offset (a
/// surviving acks=1 record sits at the offset it was given), no duplicate, offsets contiguous,
/// appends continue at the log end. Every failure names its seed.
@Suite struct CrashRecoveryTests {
    struct Sent {
        var value: [UInt8]
        var partition: PartitionID
        var offset: Offset
        var durable: Bool
    }

    func broker(on fs: SimulatedFileSystem) throws -> Broker {
        var config = BrokerConfiguration()
        config.dataDirectory = "/data"
        config.retentionCheckIntervalMilliseconds = 3_600_000
        let b = Broker(configuration: config, fileSystem: fs)
        try b.start()
        return b
    }

    @Test(arguments: 0..<40)
    func acknowledgedRecordsSurviveCrashes(seed: Int) throws {
        var random = SimulatedFileSystemRandom(seed: UInt64(seed) &* 0x9E37_79B9_7F4A_7C15 &+ 1)
        let fs = SimulatedFileSystem()
        var b = try broker(on: fs)
        _ = try b.createTopic(name: TopicName("t")!, partitions: 2, replicationFactor: nil, configs: [("segment.bytes", "1048576")])
        var sent: [Sent] = []
        for round in 0..<3 {
            let requests = Int.random(in: 5...40, using: &random)
            for k in 0..<requests {
                let count = Int.random(in: 1...5, using: &random)
                let partition = PartitionID(Int32.random(in: 0...1, using: &random))
                let acks: Acks = Bool.random(using: &random) ? .all : .leader
                let size = Int.random(in: 1...3000, using: &random)
                let records = (0..<count).map { i in
                    ProduceRecord(partition: partition, value: Array("s\(seed)-r\(round)-\(k)-\(i)-".utf8) + [UInt8](repeating: UInt8(i), count: size))
                }
                let placements = try produce(b, "t", records, acks: acks).get()
                for (r, p) in zip(records, placements) {
                    sent.append(Sent(value: r.value!, partition: p.partition, offset: p.offset!, durable: acks == .all))
                }
            }
            let mode: SimulatedFileSystem.CrashMode = [.drop, .tear(garbage: false), .tear(garbage: true)][Int.random(in: 0...2, using: &random)]
            fs.crash(using: &random, mode: mode)
            b.shutdown()
            b = try broker(on: fs)
            sent = try verify(b, sent, seed: seed, round: round)
        }
        b.shutdown()
    }

    /// Checks the survivors and returns the records still present (the new truth for later rounds).
    func verify(_ b: Broker, _ sent: [Sent], seed: Int, round: Int) throws -> [Sent] {
        var survivors: [Sent] = []
        for p in [PartitionID(0), PartitionID(1)] {
            var stored: [StoredRecord] = []
            var next = Offset(0)
            while true {
                let r = try waitFor { b.read(ReadRequest(topic: TopicName("t")!, partition: p, offset: .exact(next), maxRecords: 10_000, maxBytes: 8 << 20, waitMilliseconds: 0), completion: $0) }.get()
                let records = try r.records()
                if records.isEmpty { break }
                stored += records
                next = r.nextOffset
            }
            let context = "seed \(seed) round \(round) partition \(p)"
            #expect(stored.map(\.offset.rawValue) == Array(0..<Int64(stored.count)), "offsets not contiguous: \(context)")
            let byOffset = Dictionary(stored.map { ($0.offset, $0.record.value ?? []) }, uniquingKeysWith: { a, _ in a })
            #expect(Set(stored.map { $0.record.value ?? [] }).count == stored.count, "duplicate record: \(context)")
            for s in sent where s.partition == p {
                if let value = byOffset[s.offset] {
                    #expect(value == s.value, "inconsistent offset \(s.offset): \(context)")
                    survivors.append(s)
                } else {
                    #expect(!s.durable, "lost acknowledged write at offset \(s.offset): \(context)")
                }
            }
            // Appends continue right after what survived.
            let placed = try produce(b, "t", [ProduceRecord(partition: p, value: Array("after-\(seed)-\(round)".utf8))]).get()
            #expect(placed[0].offset == Offset(Int64(stored.count)), "append after recovery at the wrong offset: \(context)")
            survivors.append(Sent(value: Array("after-\(seed)-\(round)".utf8), partition: p, offset: placed[0].offset!, durable: true))
        }
        return survivors
    }

    @Test func topicMetadataSurvivesACrash() throws {
        let fs = SimulatedFileSystem()
        let b = try broker(on: fs)
        _ = try b.createTopic(name: TopicName("a")!, partitions: 3, replicationFactor: nil, configs: [("retention.ms", "5000")])
        _ = try b.alterTopic(TopicName("a")!, configs: [], partitions: 5)
        fs.crash(seed: 1, mode: .drop)
        b.shutdown()
        let again = try broker(on: fs)
        defer { again.shutdown() }
        let d = try again.describeTopic(TopicName("a")!)
        #expect(d.partitions.count == 5)
        #expect(d.config.retentionMilliseconds == 5000)
    }

    @Test func aFailedFsyncNeverAcknowledges() throws {
        let fs = SimulatedFileSystem()
        let b = try broker(on: fs)
        defer { b.shutdown() }
        _ = try b.createTopic(name: TopicName("t")!, partitions: 1, replicationFactor: nil, configs: [])
        fs.failNextSyncs(1)
        guard case .failure(let e) = produce(b, "t", [text("x")]) else {
            Issue.record("a produce whose fsync failed must not be acknowledged")
            return
        }
        #expect(e.httpStatus == 500)
    }
}

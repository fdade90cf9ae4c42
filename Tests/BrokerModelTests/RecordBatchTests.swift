import Testing
@testable import BrokerModel

@Suite struct RecordBatchTests {
    @Test func roundTripsRecordsWithKeysHeadersAndNulls() throws {
        let records = [
            Record(key: Array("k1".utf8), value: Array("hello".utf8), headers: [RecordHeader(key: "h", value: [1, 2])], timestamp: 1_700_000_000_000),
            Record(key: nil, value: nil, headers: [], timestamp: 1_700_000_000_005),
            Record(key: [], value: [UInt8](repeating: 7, count: 300), headers: [RecordHeader(key: "n", value: nil)], timestamp: 1_699_999_999_999),
        ]
        var batch = RecordBatch.encode(records: records, baseOffset: Offset(42), partitionLeaderEpoch: 3)
        #expect(batch.recordCount == 3)
        #expect(batch.lastOffset == Offset(44))
        #expect(batch.maxTimestamp == 1_700_000_000_005)
        #expect(batch.baseTimestamp == 1_699_999_999_999)
        let decoded = try RecordBatch(validating: batch.bytes).records()
        #expect(decoded.map(\.record) == records)
        #expect(decoded.map(\.offset) == [Offset(42), Offset(43), Offset(44)])
        // Base offset and epoch are outside the CRC: patching them keeps the batch valid.
        batch.setBaseOffset(Offset(1000))
        batch.setPartitionLeaderEpoch(9)
        let patched = try RecordBatch(validating: batch.bytes)
        #expect(patched.baseOffset == Offset(1000))
        #expect(patched.partitionLeaderEpoch == 9)
        #expect(try patched.records().first?.offset == Offset(1000))
    }

    @Test func rejectsEveryFlippedBitInTheCheckedRegion() {
        let batch = RecordBatch.encode(records: [Record(value: Array("payload".utf8), timestamp: 1)])
        for index in RecordBatch.attributesOffset..<batch.bytes.count {
            var bytes = batch.bytes
            bytes[index] ^= 0x10
            #expect(throws: DecodeError.self) { try RecordBatch(validating: bytes) }
        }
    }

    @Test func rejectsTruncationAtEveryLength() {
        let batch = RecordBatch.encode(records: [Record(key: [1], value: [2, 3], timestamp: 5)])
        for length in 0..<batch.bytes.count {
            #expect(throws: DecodeError.self) { try RecordBatch(validating: Array(batch.bytes[0..<length])) }
        }
    }

    @Test func controlFlag() {
        let batch = RecordBatch.encode(records: [Record(value: nil, timestamp: 0)], isControl: true)
        #expect(batch.isControl)
        #expect(!RecordBatch.encode(records: [Record(value: nil, timestamp: 0)]).isControl)
    }
}

@Suite struct CRC32CTests {
    @Test func knownVectors() {
        // RFC 3720 B.4 test vectors.
        #expect(CRC32C.checksum([UInt8](repeating: 0, count: 32)) == 0x8A91_36AA)
        #expect(CRC32C.checksum([UInt8](repeating: 0xFF, count: 32)) == 0x62A8_AB43)
        #expect(CRC32C.checksum(Array(0..<32)) == 0x46DD_794E)
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
    }

    @Test func hardwareAndSoftwareAgree() {
        var seed: UInt64 = 12345
        for length in [0, 1, 7, 8, 9, 63, 64, 65, 1000, 4099] {
            let data = (0..<length).map { _ -> UInt8 in
                seed = seed &* 6364136223846793005 &+ 1442695040888963407
                return UInt8(truncatingIfNeeded: seed >> 33)
            }
            let software = data.withUnsafeBytes { CRC32C.softwareChecksum($0) }
            #expect(CRC32C.checksum(data) == software, "length \(length)")
            let partial = data.withUnsafeBytes { CRC32C.softwareChecksum(UnsafeRawBufferPointer(rebasing: $0[0..<(length / 2)])) }
            let continued = data.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[(length / 2)...]), continuing: partial) }
            #expect(continued == software, "continued, length \(length)")
        }
    }

    @Test func continuingEqualsWhole() {
        let data = (0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let first = data.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[0..<333])) }
        let both = data.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[333...]), continuing: first) }
        #expect(both == CRC32C.checksum(data))
    }
}

@Suite struct Murmur2Tests {
    // Values from Kafka's UtilsTest.testMurmur2 (org.apache.kafka.common.utils).
    @Test func matchesKafka() {
        let cases: [(String, Int32)] = [
            ("21", -973_932_308), ("foobar", -790_332_482), ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829), ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58_897_971),
            ("abc", 479_470_107),
        ]
        for (input, expected) in cases {
            #expect(Murmur2.hash(Array(input.utf8)) == expected, "\(input)")
        }
    }

    @Test func partitionIsPositiveModulo() {
        for key in ["a", "b", "order-17", ""] {
            let p = Murmur2.partition(forKey: Array(key.utf8), partitionCount: 6)
            #expect(p.rawValue >= 0 && p.rawValue < 6)
        }
    }
}

@Suite struct TopicNameTests {
    @Test func acceptsKafkaNames() {
        for name in ["orders", "a.b_c-D9", String(repeating: "x", count: 249)] { #expect(TopicName(name) != nil) }
    }
    @Test func rejectsDangerousNames() {
        for name in ["", ".", "..", "a/b", "../etc", "a\u{0}b", String(repeating: "x", count: 300), "spa ce", "é"] {
            #expect(TopicName(name) == nil, "\(name)")
        }
    }
}

import BrokerModel
import BrokerRuntime
import Testing
@testable import BrokerHTTP

/// The read path renders from `RecordView` (slices of the stored batch) instead of decoded records;
/// both must produce the same bytes for every kind of record.
@Suite struct RecordViewRenderTests {
    struct Generator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return state >> 11
        }
        mutating func int(_ range: ClosedRange<Int>) -> Int { range.lowerBound + Int(next() % UInt64(range.count)) }
        mutating func bytes() -> [UInt8]? {
            switch int(0...5) {
            case 0: return nil
            case 1: return Array("{\"a\": [1, 2.5, \"x\"],\n \"b\": null}".utf8)
            case 2: return (0..<int(0...40)).map { _ in UInt8(truncatingIfNeeded: next()) }  // mostly not UTF-8
            case 3: return Array("ünïcødé \"quoted\" \\ tab\t".utf8)
            default: return (0..<int(0...300)).map { _ in UInt8(int(0x20...0x7E)) }
            }
        }
    }

    @Test(arguments: 0..<20)
    func viewRenderingEqualsRecordRendering(seed: Int) throws {
        var g = Generator(state: UInt64(seed) &+ 99)
        let records = (0..<g.int(1...30)).map { _ in
            Record(key: g.bytes(), value: g.bytes(),
                   headers: (0..<g.int(0...3)).map { i in RecordHeader(key: i == 2 ? "h\u{e9}" : "h\(i)", value: g.bytes()) },
                   timestamp: Int64(g.int(0...1_000_000)))
        }
        let batch = RecordBatch.encode(records: records, baseOffset: Offset(100))
        let result = ReadResult(topic: TopicName("t")!, partition: PartitionID(0), batches: [batch], fromOffset: Offset(101),
                                nextOffset: Offset(100 + Int64(records.count)), highWatermark: Offset(100 + Int64(records.count)),
                                logStartOffset: Offset(0), logEndOffset: Offset(100 + Int64(records.count)))
        for format in [ValueFormat.text, .json, .binary] {
            var viaRecords = JSONWriter()
            try result.forEachRecord { (r: StoredRecord) throws(DecodeError) in Render.record(r, format: format, into: &viaRecords) }
            var viaViews = JSONWriter()
            try result.forEachRecordView { (r: RecordView) throws(DecodeError) -> Bool in
                try Render.record(r, format: format, into: &viaViews)
                return true
            }
            #expect(viaViews.bytes == viaRecords.bytes, "seed \(seed) format \(format)")
            #expect(!viaViews.bytes.isEmpty || records.count == 1)
        }
    }

    @Test func viewsRejectCorruptRecordBodies() throws {
        let batch = RecordBatch.encode(records: [Record(key: [1], value: [2], headers: [RecordHeader(key: "k", value: nil)], timestamp: 0)])
        var bytes = batch.bytes
        // Lie about the header count (the byte before the header key length): CRC is not checked here.
        bytes[bytes.count - 3] = 0x04
        let corrupt = try RecordBatch(validating: fixCRC(bytes))
        #expect(throws: DecodeError.self) { try corrupt.forEachRecordView { _ in true } }
        #expect(throws: DecodeError.self) { try corrupt.forEachRecord { (_: StoredRecord) throws(DecodeError) in } }
    }

    func fixCRC(_ bytes: [UInt8]) -> [UInt8] {
        var b = bytes
        let crc = b.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[21...])) }
        b.putBigEndian(crc, at: 17)
        return b
    }
}

/// A record batch in Kafka's RecordBatch v2 ("magic 2") layout. This is the unit Petrel appends,
/// stores on disk, checksums, replicates (one Raft entry = one batch) and reads back.
///
/// ```
/// offset  size  field                     covered by CRC
///  0       8    baseOffset                no   (assigned/patched by the leader)
///  8       4    batchLength               no   (bytes after this field)
/// 12       4    partitionLeaderEpoch      no   (the Raft term that wrote it)
/// 16       1    magic = 2                 no
/// 17       4    crc (CRC-32C)             -
/// 21       2    attributes                yes  (bits 0-2 compression, bit 4 transactional, bit 5 control)
/// 23       4    lastOffsetDelta           yes
/// 27       8    baseTimestamp             yes
/// 35       8    maxTimestamp              yes
/// 43       8    producerId                yes
/// 51       2    producerEpoch             yes
/// 53       4    baseSequence              yes
/// 57       4    recordCount               yes
/// 61       ...  records                   yes
/// record: length varint, attributes int8, timestampDelta varlong, offsetDelta varint,
///         keyLength varint (-1 = null), key, valueLength varint (-1 = null), value,
///         headerCount varint, headers (keyLength varint, key utf8, valueLength varint, value)
/// ```
///
/// Because the CRC does not cover the base offset or the leader epoch, a leader can stamp offsets on
/// a batch without recomputing the checksum, exactly as Kafka does.
public struct RecordBatch: Equatable, Sendable {
    public static let headerBytes = 61
    public static let magic: Int8 = 2
    static let crcOffset = 17
    static let attributesOffset = 21
    /// Attribute bit marking a control batch (leader change, membership change): occupies offsets,
    /// never shown to consumers.
    public static let controlAttribute: Int16 = 1 << 5

    /// The whole encoded batch.
    public private(set) var bytes: [UInt8]

    /// Wraps already-encoded bytes after checking structure and CRC.
    public init(validating bytes: [UInt8]) throws(DecodeError) {
        try RecordBatch.validate(bytes)
        self.bytes = bytes
    }

    /// Wraps bytes known to be valid (they were produced by `encode` in this process).
    init(trusted bytes: [UInt8]) { self.bytes = bytes }

    // MARK: header fields

    public var baseOffset: Offset { Offset(bytes.readBigEndian(Int64.self, at: 0)) }
    public var batchLength: Int32 { bytes.readBigEndian(Int32.self, at: 8) }
    public var partitionLeaderEpoch: Int32 { bytes.readBigEndian(Int32.self, at: 12) }
    public var crc: UInt32 { bytes.readBigEndian(UInt32.self, at: RecordBatch.crcOffset) }
    public var attributes: Int16 { bytes.readBigEndian(Int16.self, at: RecordBatch.attributesOffset) }
    public var lastOffsetDelta: Int32 { bytes.readBigEndian(Int32.self, at: 23) }
    public var baseTimestamp: Int64 { bytes.readBigEndian(Int64.self, at: 27) }
    public var maxTimestamp: Int64 { bytes.readBigEndian(Int64.self, at: 35) }
    public var producerID: Int64 { bytes.readBigEndian(Int64.self, at: 43) }
    public var producerEpoch: Int16 { bytes.readBigEndian(Int16.self, at: 51) }
    public var baseSequence: Int32 { bytes.readBigEndian(Int32.self, at: 53) }
    public var recordCount: Int32 { bytes.readBigEndian(Int32.self, at: 57) }

    public var lastOffset: Offset { baseOffset + Int64(lastOffsetDelta) }
    /// The offset right after this batch.
    public var nextOffset: Offset { lastOffset + 1 }
    public var isControl: Bool { attributes & RecordBatch.controlAttribute != 0 }
    public var sizeBytes: Int { bytes.count }

    /// Sets the base offset (not covered by the CRC).
    public mutating func setBaseOffset(_ offset: Offset) { bytes.putBigEndian(offset.rawValue, at: 0) }
    /// Sets the leader epoch / Raft term that wrote the batch (not covered by the CRC).
    public mutating func setPartitionLeaderEpoch(_ epoch: Int32) { bytes.putBigEndian(epoch, at: 12) }

    // MARK: encoding

    /// Encodes `records` (at least one) as a batch whose first record gets `baseOffset`.
    public static func encode(
        records: [Record], baseOffset: Offset = .zero, partitionLeaderEpoch: Int32 = 0,
        isControl: Bool = false, producerID: Int64 = -1, producerEpoch: Int16 = -1, baseSequence: Int32 = -1
    ) -> RecordBatch {
        precondition(!records.isEmpty, "a record batch holds at least one record")
        let baseTimestamp = records.map(\.timestamp).min() ?? 0
        let maxTimestamp = records.map(\.timestamp).max() ?? 0
        var w = ByteWriter(capacity: headerBytes + records.reduce(0) { $0 + $1.approximateSizeBytes })
        w.int64(baseOffset.rawValue)
        w.int32(0)  // batchLength, patched below
        w.int32(partitionLeaderEpoch)
        w.int8(magic)
        w.uint32(0)  // crc, patched below
        w.int16(isControl ? controlAttribute : 0)
        w.int32(Int32(records.count - 1))
        w.int64(baseTimestamp)
        w.int64(maxTimestamp)
        w.int64(producerID)
        w.int16(producerEpoch)
        w.int32(baseSequence)
        w.int32(Int32(records.count))
        var body = ByteWriter(capacity: 128)
        for (delta, record) in records.enumerated() {
            body.bytes.removeAll(keepingCapacity: true)
            body.int8(0)
            body.varint(record.timestamp - baseTimestamp)
            body.varint(Int64(delta))
            writeNullable(record.key, to: &body)
            writeNullable(record.value, to: &body)
            body.varint(Int64(record.headers.count))
            for h in record.headers {
                let k = Array(h.key.utf8)
                body.varint(Int64(k.count))
                body.append(k)
                writeNullable(h.value, to: &body)
            }
            w.varint(Int64(body.bytes.count))
            w.append(body.bytes)
        }
        var bytes = w.bytes
        bytes.putBigEndian(Int32(bytes.count - 12), at: 8)
        let crc = bytes.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[attributesOffset...])) }
        bytes.putBigEndian(crc, at: crcOffset)
        return RecordBatch(trusted: bytes)
    }

    private static func writeNullable(_ b: [UInt8]?, to w: inout ByteWriter) {
        if let b {
            w.varint(Int64(b.count))
            w.append(b)
        } else {
            w.varint(-1)
        }
    }

    // MARK: validation and decoding

    /// Reads the total size of the batch that starts at `bytes[0]` from its first 12 bytes, or nil
    /// when fewer than 12 bytes are there. The value is untrusted until `validate` passes.
    public static func declaredSize(_ header: UnsafeRawBufferPointer) -> Int? {
        guard header.count >= 12 else { return nil }
        var length: Int32 = 0
        for i in 8..<12 { length = length << 8 | Int32(header[i]) }
        return 12 + Int(length)
    }

    /// Checks magic, length consistency and CRC.
    public static func validate(_ bytes: [UInt8]) throws(DecodeError) {
        try withBytes(bytes) { (raw) throws(DecodeError) in try validate(raw) }
    }

    public static func validate(_ raw: UnsafeRawBufferPointer) throws(DecodeError) {
        guard raw.count >= headerBytes else { throw DecodeError("batch shorter than its \(headerBytes)-byte header") }
        guard let size = declaredSize(raw), size == raw.count else {
            throw DecodeError("batch length field does not match its \(raw.count) bytes")
        }
        guard Int8(bitPattern: raw[16]) == magic else { throw DecodeError("unsupported batch magic \(raw[16])") }
        var reader = ByteReader(raw, position: crcOffset)
        let stored = try reader.uint32()
        let computed = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[attributesOffset...]))
        guard stored == computed else { throw DecodeError("batch CRC mismatch (stored \(stored), computed \(computed))") }
        reader.position = 23
        let lastOffsetDelta = try reader.int32()
        reader.position = 57
        let count = try reader.int32()
        guard count >= 1, lastOffsetDelta >= count - 1 else {
            throw DecodeError("batch record count \(count) inconsistent with last offset delta \(lastOffsetDelta)")
        }
    }

    /// Decodes every record with its absolute offset. The batch is assumed validated.
    public func records() throws(DecodeError) -> [StoredRecord] {
        var result: [StoredRecord] = []
        try forEachRecord { (r: StoredRecord) throws(DecodeError) in result.append(r) }
        return result
    }

    /// Calls `body` for each record in order, without building an intermediate array.
    public func forEachRecord(_ body: (StoredRecord) throws(DecodeError) -> Void) throws(DecodeError) {
        try forEachRecord { (r: StoredRecord) throws(DecodeError) -> Bool in
            try body(r)
            return true
        }
    }

    /// Calls `body` for each record in order until it returns false. Returns false if stopped early.
    /// Decodes through `forEachRecordView` (one parser), copying each field into the `Record`.
    @discardableResult
    public func forEachRecord(_ body: (StoredRecord) throws(DecodeError) -> Bool) throws(DecodeError) -> Bool {
        try forEachRecordView { (v: RecordView) throws(DecodeError) -> Bool in
            var headers: [RecordHeader] = []
            headers.reserveCapacity(v.headerCount)
            try v.forEachHeader { key, value in
                headers.append(RecordHeader(key: String(decoding: key, as: UTF8.self), value: value.map { Array($0) }))
            }
            let record = Record(key: v.key.map { Array($0) }, value: v.value.map { Array($0) }, headers: headers, timestamp: v.timestamp)
            return try body(StoredRecord(offset: v.offset, record: record))
        }
    }
}

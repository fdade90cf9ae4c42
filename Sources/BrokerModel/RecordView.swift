/// A record read in place from a batch's bytes: no arrays are built for its key, value or headers.
/// Valid only inside the `forEachRecordView` call that produced it (the buffers point into the batch).
/// The read path renders hundreds of thousands of records per second; building a `Record` for each
/// (three or more heap arrays) was most of its cost.
public struct RecordView {
    public var offset: Offset
    public var timestamp: Int64
    public var key: UnsafeRawBufferPointer?
    public var value: UnsafeRawBufferPointer?
    public var headerCount: Int
    /// The encoded headers (after the count), parsed by `forEachHeader`.
    var headers: UnsafeRawBufferPointer

    /// Calls `body` with each header's key and value bytes.
    public func forEachHeader(_ body: (_ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer?) -> Void) throws(DecodeError) {
        _ = try parseHeaders(body)
    }

    /// Parses the header block; returns how many of its bytes the headers used.
    func parseHeaders(_ body: (_ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer?) -> Void) throws(DecodeError) -> Int {
        var r = ByteReader(headers)
        for _ in 0..<headerCount {
            let keyLength = Int(try r.varint())
            guard keyLength >= 0, keyLength <= r.remaining else { throw DecodeError("header key length \(keyLength) out of bounds") }
            let key = UnsafeRawBufferPointer(rebasing: headers[r.position..<r.position + keyLength])
            r.position += keyLength
            body(key, try RecordBatch.slice(&r))
        }
        return r.position
    }
}

extension RecordBatch {
    /// Like `forEachRecord`, without copying: each record's fields are slices of the batch bytes.
    /// Returns false if `body` stopped early.
    @discardableResult
    public func forEachRecordView(_ body: (RecordView) throws(DecodeError) -> Bool) throws(DecodeError) -> Bool {
        let base = baseOffset
        let baseTimestamp = self.baseTimestamp
        let count = Int(recordCount)
        return try withBytes(bytes) { (raw) throws(DecodeError) -> Bool in
            var r = ByteReader(raw, position: RecordBatch.headerBytes)
            for _ in 0..<count {
                let length = Int(try r.varint())
                guard length >= 0, length <= r.remaining else { throw DecodeError("record length \(length) out of bounds") }
                let end = r.position + length
                _ = try r.int8()
                let timestampDelta = try r.varint()
                let offsetDelta = try r.varint()
                let key = try RecordBatch.slice(&r)
                let value = try RecordBatch.slice(&r)
                let headerCount = Int(try r.varint())
                guard headerCount >= 0, headerCount <= r.remaining, r.position <= end else {
                    throw DecodeError("header count \(headerCount) out of bounds")
                }
                let view = RecordView(
                    offset: base + offsetDelta, timestamp: baseTimestamp + timestampDelta, key: key, value: value,
                    headerCount: headerCount, headers: UnsafeRawBufferPointer(rebasing: raw[r.position..<end]))
                // Validate the header block now, so a corrupt record fails here as in forEachRecord.
                guard try view.parseHeaders({ _, _ in }) == view.headers.count else { throw DecodeError("record body length mismatch") }
                r.position = end
                if !(try body(view)) { return false }
            }
            return true
        }
    }

    /// A length-prefixed nullable field as a slice of the reader's buffer.
    static func slice(_ r: inout ByteReader) throws(DecodeError) -> UnsafeRawBufferPointer? {
        let n = try r.varint()
        if n < 0 { return nil }
        guard n <= Int64(r.remaining) else { throw DecodeError("field length \(n) out of bounds") }
        let s = UnsafeRawBufferPointer(rebasing: r.buffer[r.position..<r.position + Int(n)])
        r.position += Int(n)
        return s
    }
}

/// A record as producers send it and consumers see it. `offset` is assigned by the leader.
public struct Record: Equatable, Sendable {
    public var key: [UInt8]?
    public var value: [UInt8]?
    public var headers: [RecordHeader]
    /// Milliseconds since the Unix epoch (CreateTime, as given by the producer or stamped by the broker).
    public var timestamp: Int64

    public init(key: [UInt8]? = nil, value: [UInt8]?, headers: [RecordHeader] = [], timestamp: Int64) {
        self.key = key
        self.value = value
        self.headers = headers
        self.timestamp = timestamp
    }

    /// Bytes this record costs in a batch, roughly (for limits; the codec computes the exact size).
    public var approximateSizeBytes: Int {
        var size = 24 + (key?.count ?? 0) + (value?.count ?? 0)
        for h in headers { size += 8 + h.key.utf8.count + (h.value?.count ?? 0) }
        return size
    }
}

public struct RecordHeader: Equatable, Sendable {
    public var key: String
    public var value: [UInt8]?
    public init(key: String, value: [UInt8]?) {
        self.key = key
        self.value = value
    }
}

/// A record with the offset it was stored at.
public struct StoredRecord: Equatable, Sendable {
    public var offset: Offset
    public var record: Record
    public init(offset: Offset, record: Record) {
        self.offset = offset
        self.record = record
    }
}

import BrokerModel

/// How durable a write must be before it is acknowledged (Kafka's `acks`).
public enum Acks: String, Sendable, CaseIterable {
    /// Answer at once, without waiting for the append (fire and forget).
    case none = "0"
    /// Answer after the leader appended the batch (in the page cache, not yet fsynced).
    case leader = "1"
    /// Answer after the batch is durable (fsynced; in a cluster: on a majority). The default.
    case all = "all"

    public init?(parameter: String) {
        switch parameter {
        case "0": self = .none
        case "1": self = .leader
        case "all", "-1": self = .all
        default: return nil
        }
    }
}

/// A record to produce, before the broker assigned it a partition, timestamp and offset.
public struct ProduceRecord: Sendable, Equatable {
    /// Explicit partition, or nil to pick one: by murmur2 of the key, else sticky per request.
    public var partition: PartitionID?
    public var key: [UInt8]?
    public var value: [UInt8]?
    public var headers: [RecordHeader]
    /// Milliseconds since the epoch; nil = the broker's clock at append.
    public var timestamp: Int64?

    public init(partition: PartitionID? = nil, key: [UInt8]? = nil, value: [UInt8]?, headers: [RecordHeader] = [], timestamp: Int64? = nil) {
        self.partition = partition
        self.key = key
        self.value = value
        self.headers = headers
        self.timestamp = timestamp
    }
}

/// Where one produced record went. `offset` is nil for `acks=0`, which answers before the append.
public struct RecordPlacement: Sendable, Equatable {
    public var partition: PartitionID
    public var offset: Offset?
    public var timestamp: Int64
}

public enum OffsetSpec: Sendable, Equatable {
    case earliest
    case latest
    case exact(Offset)
}

public struct ReadRequest: Sendable {
    public var topic: TopicName
    public var partition: PartitionID
    public var offset: OffsetSpec
    public var maxRecords: Int
    public var maxBytes: Int
    /// 0 = answer at once; otherwise wait up to this long for the first record (long-poll).
    public var waitMilliseconds: Int

    public init(topic: TopicName, partition: PartitionID, offset: OffsetSpec, maxRecords: Int, maxBytes: Int, waitMilliseconds: Int) {
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.maxRecords = maxRecords
        self.maxBytes = maxBytes
        self.waitMilliseconds = waitMilliseconds
    }
}

/// What a read returns: whole batches plus the window of records in them the reader asked for.
/// Keeping batches (not decoded records) lets the HTTP layer render straight from the stored bytes.
public struct ReadResult: Sendable {
    public var topic: TopicName
    public var partition: PartitionID
    public var batches: [RecordBatch]
    /// Records before this offset (in the first batch) are not part of the answer.
    public var fromOffset: Offset
    /// Records at or after this offset are not part of the answer; it is also where the next read starts.
    public var nextOffset: Offset
    public var highWatermark: Offset
    public var logStartOffset: Offset
    public var logEndOffset: Offset

    public init(topic: TopicName, partition: PartitionID, batches: [RecordBatch], fromOffset: Offset, nextOffset: Offset,
                highWatermark: Offset, logStartOffset: Offset, logEndOffset: Offset) {
        self.topic = topic
        self.partition = partition
        self.batches = batches
        self.fromOffset = fromOffset
        self.nextOffset = nextOffset
        self.highWatermark = highWatermark
        self.logStartOffset = logStartOffset
        self.logEndOffset = logEndOffset
    }

    /// Calls `body` for each data record in `[fromOffset, nextOffset)`, skipping control batches.
    public func forEachRecord(_ body: (StoredRecord) throws(DecodeError) -> Void) throws(DecodeError) {
        try forEachRecord { (r: StoredRecord) throws(DecodeError) -> Bool in
            try body(r)
            return true
        }
    }

    /// Calls `body` for each data record in `[fromOffset, nextOffset)` until it returns false.
    public func forEachRecord(_ body: (StoredRecord) throws(DecodeError) -> Bool) throws(DecodeError) {
        for batch in batches where !batch.isControl {
            if batch.lastOffset < fromOffset || batch.baseOffset >= nextOffset { continue }
            let completed = try batch.forEachRecord { (r: StoredRecord) throws(DecodeError) -> Bool in
                if r.offset >= fromOffset && r.offset < nextOffset { return try body(r) }
                return true
            }
            if !completed { return }
        }
    }

    /// Like `forEachRecord(_:)` but without copying (see `RecordView`). Stops when `body` returns false.
    public func forEachRecordView(_ body: (RecordView) throws(DecodeError) -> Bool) throws(DecodeError) {
        for batch in batches where !batch.isControl {
            if batch.lastOffset < fromOffset || batch.baseOffset >= nextOffset { continue }
            let completed = try batch.forEachRecordView { (r: RecordView) throws(DecodeError) -> Bool in
                if r.offset >= fromOffset && r.offset < nextOffset { return try body(r) }
                return true
            }
            if !completed { return }
        }
    }

    public func records() throws(DecodeError) -> [StoredRecord] {
        var out: [StoredRecord] = []
        try forEachRecord { (r: StoredRecord) throws(DecodeError) in out.append(r) }
        return out
    }
}

/// Offsets of one partition.
public struct PartitionOffsets: Sendable, Equatable {
    public var logStartOffset: Offset
    public var highWatermark: Offset
    public var logEndOffset: Offset
}

public struct PartitionDescription: Sendable {
    public var partition: PartitionID
    public var leader: NodeID
    public var replicas: [NodeID]
    public var inSyncReplicas: [NodeID]
    public var offsets: PartitionOffsets
    public var sizeBytes: Int64
    public var segmentCount: Int
    /// Cluster mode: each replica's log end and lag behind the leader, as the leader last reported.
    public var replicaStates: [ReplicaLag] = []
    /// Cluster mode, during a reassignment: replicas being added and being removed.
    public var addingReplicas: [NodeID] = []
    public var removingReplicas: [NodeID] = []
}

public struct TopicDescription: Sendable {
    public var name: TopicName
    public var partitions: [PartitionDescription]
    public var replicationFactor: Int
    public var config: TopicConfig
    public var isInternal: Bool
}

public struct BrokerInfo: Sendable {
    public var id: NodeID
    public var host: String
    public var port: Int
    public var rack: String?
    public var isAlive: Bool
}

public struct ClusterDescription: Sendable {
    public var clusterID: String
    public var controller: NodeID
    public var brokers: [BrokerInfo]
    public var version: String
    public var topicCount: Int
    public var partitionCount: Int
}

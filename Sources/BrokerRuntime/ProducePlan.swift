import BrokerModel

/// How one produce request splits into partitions and batches — the same on a single node and in a
/// cluster: explicit partition, else murmur2 of the key (Kafka's default partitioner), else one
/// partition chosen per request (Kafka's sticky partitioner); request order kept inside a partition.
struct ProducePlan {
    /// Per partition, the records with their index in the request.
    var byPartition: [Int32: [(index: Int, record: Record)]] = [:]

    /// Checks the request's size and every record's size against `maxMessageBytes`.
    init(topic: TopicName, records: [ProduceRecord], partitionCount: Int32, sticky: PartitionID, now: Int64,
         maxMessageBytes: Int, limits: Limits) throws(BrokerError) {
        try Self.checkCount(records, limits: limits)
        for (index, r) in records.enumerated() {
            let p: PartitionID
            if let explicit = r.partition {
                guard explicit.rawValue >= 0 && explicit.rawValue < partitionCount else {
                    throw .unknownPartition(topic: topic.rawValue, partition: explicit.rawValue, partitionCount: partitionCount)
                }
                p = explicit
            } else if let key = r.key {
                p = Murmur2.partition(forKey: key, partitionCount: partitionCount)
            } else {
                p = sticky
            }
            let record = Record(key: r.key, value: r.value, headers: r.headers, timestamp: r.timestamp ?? now)
            if record.approximateSizeBytes + RecordBatch.headerBytes > maxMessageBytes {
                throw .payloadTooLarge("record \(index) is about \(record.approximateSizeBytes) bytes; topic '\(topic)' accepts at most \(maxMessageBytes) (max.message.bytes)")
            }
            byPartition[p.rawValue, default: []].append((index, record))
        }
    }

    /// The request-level checks, before the topic is even looked up.
    static func checkCount(_ records: [ProduceRecord], limits: Limits) throws(BrokerError) {
        guard !records.isEmpty else { throw .badRequest("a produce request needs at least one record") }
        guard records.count <= limits.produceRecordsMax else {
            throw .payloadTooLarge("\(records.count) records in one request; at most \(limits.produceRecordsMax) are allowed")
        }
    }

    /// Encodes records as batches of at most `maxBatchBytes` (one batch unless they do not fit).
    static func batches(_ records: [Record], maxBatchBytes: Int) -> [RecordBatch] {
        var batches: [RecordBatch] = []
        var current: [Record] = []
        var currentBytes = RecordBatch.headerBytes
        for r in records {
            let size = r.approximateSizeBytes
            if !current.isEmpty && currentBytes + size > maxBatchBytes {
                batches.append(RecordBatch.encode(records: current))
                current.removeAll(keepingCapacity: true)
                currentBytes = RecordBatch.headerBytes
            }
            current.append(r)
            currentBytes += size
        }
        if !current.isEmpty { batches.append(RecordBatch.encode(records: current)) }
        return batches
    }
}

import BrokerModel
import BrokerRuntime

/// How record keys, values and header values are shown in JSON answers (`?format=`).
public enum ValueFormat: String, Sendable {
    /// UTF-8 text as a JSON string; bytes that are not valid UTF-8 appear as `*_base64` instead.
    case text
    /// Each value embedded as JSON when it is valid JSON, else as a JSON string.
    case json
    /// Every key and value as base64 in `key_base64` / `value_base64`.
    case binary
}

/// JSON renderings of the broker's answers. Hand-written into one buffer because the read path
/// renders hundreds of thousands of records per second.
enum Render {
    static func error(_ e: BrokerError) -> [UInt8] { error(code: e.errorCode, message: e.message) }

    /// `{"error_code","message"}`: also the REST Proxy v2 dialect's codes that have no `BrokerError`.
    static func error(code: Int, message: String) -> [UInt8] {
        var w = JSONWriter(capacity: 128)
        w.raw("{\"error_code\":")
        w.int(code)
        w.raw(",\"message\":")
        w.string(message)
        w.raw("}")
        return w.bytes
    }

    static func produce(topic: TopicName, placements: [RecordPlacement]) -> [UInt8] {
        var w = JSONWriter(capacity: 64 + placements.count * 40)
        w.raw("{\"topic\":")
        w.string(topic.rawValue)
        w.raw(",\"offsets\":[")
        for (i, p) in placements.enumerated() {
            if i > 0 { w.raw(",") }
            w.raw("{\"partition\":")
            w.int(Int64(p.partition.rawValue))
            w.raw(",\"offset\":")
            if let o = p.offset { w.int(o.rawValue) } else { w.raw("null") }
            w.raw(",\"timestamp\":")
            w.int(p.timestamp)
            w.raw("}")
        }
        w.raw("]}")
        return w.bytes
    }

    static func read(_ r: ReadResult, format: ValueFormat) throws(DecodeError) -> [UInt8] {
        try read(r, format: format, byteBudget: .max).bytes
    }

    /// Renders a read. Stops after the record that brings the output to `byteBudget` bytes (always
    /// at least one record); `nextOffset` (also the `next_offset` field) then points right after
    /// the last record rendered, so nothing is skipped.
    static func read(_ r: ReadResult, format: ValueFormat, byteBudget: Int) throws(DecodeError) -> (bytes: [UInt8], count: Int, nextOffset: Offset) {
        let estimate = 160 + r.batches.reduce(0) { $0 + $1.sizeBytes } * 2
        var w = JSONWriter(capacity: byteBudget < estimate ? byteBudget + 4096 : estimate)
        w.raw("{\"topic\":")
        w.string(r.topic.rawValue)
        w.raw(",\"partition\":")
        w.int(Int64(r.partition.rawValue))
        w.raw(",\"records\":[")
        var count = 0
        var next = r.nextOffset
        try r.forEachRecordView { (s: RecordView) throws(DecodeError) -> Bool in
            if count > 0 { w.raw(",") }
            try record(s, format: format, into: &w)
            count += 1
            if w.bytes.count >= byteBudget {
                next = s.offset + 1
                return false
            }
            return true
        }
        w.raw("],\"next_offset\":")
        w.int(next.rawValue)
        w.raw(",\"high_watermark\":")
        w.int(r.highWatermark.rawValue)
        w.raw(",\"log_start_offset\":")
        w.int(r.logStartOffset.rawValue)
        w.raw("}")
        return (w.bytes, count, next)
    }

    static func record(_ s: StoredRecord, format: ValueFormat, into w: inout JSONWriter) {
        w.raw("{\"offset\":")
        w.int(s.offset.rawValue)
        w.raw(",\"timestamp\":")
        w.int(s.record.timestamp)
        field("key", s.record.key, format: format, into: &w)
        field("value", s.record.value, format: format, into: &w)
        w.raw(",\"headers\":[")
        for (i, h) in s.record.headers.enumerated() {
            if i > 0 { w.raw(",") }
            w.raw("{\"key\":")
            w.string(h.key)
            field("value", h.value, format: format, into: &w)
            w.raw("}")
        }
        w.raw("]}")
    }

    /// The same rendering as `record(_ s: StoredRecord, ...)`, straight from the batch bytes.
    /// `from` (group reads span partitions): the record's topic and partition lead the object.
    static func record(_ s: RecordView, format: ValueFormat, from: (TopicName, PartitionID)? = nil, into w: inout JSONWriter) throws(DecodeError) {
        if let (topic, partition) = from {
            w.raw("{\"topic\":")
            w.string(topic.rawValue)
            w.raw(",\"partition\":")
            w.int(Int64(partition.rawValue))
            w.raw(",\"offset\":")
        } else {
            w.raw("{\"offset\":")
        }
        w.int(s.offset.rawValue)
        w.raw(",\"timestamp\":")
        w.int(s.timestamp)
        field("key", s.key, format: format, into: &w)
        field("value", s.value, format: format, into: &w)
        w.raw(",\"headers\":[")
        var first = true
        try s.forEachHeader { key, value in
            if !first { w.raw(",") }
            first = false
            w.raw("{\"key\":")
            // As the decoding path does: String(decoding:) repairs invalid UTF-8 in header names.
            w.string(String(decoding: key, as: UTF8.self))
            field("value", value, format: format, into: &w)
            w.raw("}")
        }
        w.raw("]}")
    }

    /// Writes `,"name":...` (or `,"name_base64":"..."`) for one key/value field.
    static func field(_ name: StaticString, _ bytes: [UInt8]?, format: ValueFormat, into w: inout JSONWriter) {
        guard let bytes else { return field(name, nil as UnsafeRawBufferPointer?, format: format, into: &w) }
        bytes.withUnsafeBytes { field(name, $0, format: format, into: &w) }
    }

    static func field(_ name: StaticString, _ bytes: UnsafeRawBufferPointer?, format: ValueFormat, into w: inout JSONWriter) {
        w.raw(",\"")
        w.raw(name)
        guard let bytes else {
            w.raw("\":null")
            return
        }
        let utf8 = bytes.assumingMemoryBound(to: UInt8.self)
        switch format {
        case .binary:
            w.raw("_base64\":")
            w.base64String(Array(utf8))
        case .text, .json:
            if !isValidUTF8(utf8) {
                w.raw("_base64\":")
                w.base64String(Array(utf8))
            } else if format == .json, (try? JSONParser.parse(Array(utf8))) != nil {
                w.raw("\":")
                // Valid JSON has no raw line breaks inside strings, so any CR/LF is whitespace between
                // tokens: make it a space, or a pretty-printed value would split an NDJSON line or an
                // SSE data: line in two.
                w.raw(utf8.map { $0 == 0x0A || $0 == 0x0D ? 0x20 : $0 })
            } else {
                w.raw("\":")
                w.stringBytes(utf8)
            }
        }
    }

    /// ASCII fast path (8 bytes at a time), full UTF-8 validation only when a high bit is seen.
    static func isValidUTF8(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        var i = 0
        let n = bytes.count
        if let base = bytes.baseAddress {
            let raw = UnsafeRawPointer(base)
            while i + 8 <= n {
                if raw.loadUnaligned(fromByteOffset: i, as: UInt64.self) & 0x8080_8080_8080_8080 != 0 { break }
                i += 8
            }
        }
        while i < n && bytes[i] < 0x80 { i += 1 }
        if i == n { return true }
        var it = UnsafeBufferPointer(rebasing: bytes[i...]).makeIterator()
        var decoder = UTF8()
        while true {
            switch decoder.decode(&it) {
            case .scalarValue: continue
            case .emptyInput: return true
            case .error: return false
            }
        }
    }

    static func topicSummaries(_ topics: [(TopicName, Int)]) -> [UInt8] {
        var w = JSONWriter()
        w.raw("{\"topics\":[")
        for (i, (name, partitions)) in topics.enumerated() {
            if i > 0 { w.raw(",") }
            w.raw("{\"name\":")
            w.string(name.rawValue)
            w.raw(",\"partitions\":")
            w.int(partitions)
            w.raw("}")
        }
        w.raw("]}")
        return w.bytes
    }

    static func topic(_ t: TopicDescription) -> [UInt8] {
        var w = JSONWriter(capacity: 512 + t.partitions.count * 200)
        w.raw("{\"name\":")
        w.string(t.name.rawValue)
        w.raw(",\"internal\":")
        w.bool(t.isInternal)
        w.raw(",\"replication_factor\":")
        w.int(t.replicationFactor)
        w.raw(",\"partitions\":[")
        for (i, p) in t.partitions.enumerated() {
            if i > 0 { w.raw(",") }
            partition(p, into: &w)
        }
        w.raw("],\"configs\":")
        configs(t.config, into: &w)
        w.raw("}")
        return w.bytes
    }

    /// `{"name":"value",...}`, every value a string (as Kafka's admin API shows them).
    static func configs(_ config: TopicConfig, into w: inout JSONWriter) {
        w.raw("{")
        for (i, (name, value)) in config.entries.enumerated() {
            if i > 0 { w.raw(",") }
            w.string(name)
            w.raw(":")
            w.string(value)
        }
        w.raw("}")
    }

    static func partition(_ p: PartitionDescription, into w: inout JSONWriter) {
        w.raw("{\"partition\":")
        w.int(Int64(p.partition.rawValue))
        w.raw(",\"leader\":")
        w.int(Int64(p.leader.rawValue))
        w.raw(",\"replicas\":")
        nodes(p.replicas, into: &w)
        w.raw(",\"in_sync_replicas\":")
        nodes(p.inSyncReplicas, into: &w)
        w.raw(",\"log_start_offset\":")
        w.int(p.offsets.logStartOffset.rawValue)
        w.raw(",\"high_watermark\":")
        w.int(p.offsets.highWatermark.rawValue)
        w.raw(",\"log_end_offset\":")
        w.int(p.offsets.logEndOffset.rawValue)
        w.raw(",\"size_bytes\":")
        w.int(p.sizeBytes)
        w.raw(",\"segments\":")
        w.int(p.segmentCount)
        w.raw(",\"adding_replicas\":")
        nodes(p.addingReplicas, into: &w)
        w.raw(",\"removing_replicas\":")
        nodes(p.removingReplicas, into: &w)
        w.raw(",\"replica_states\":[")
        for (i, r) in p.replicaStates.enumerated() {
            if i > 0 { w.raw(",") }
            w.raw("{\"broker\":")
            w.int(Int64(r.broker.rawValue))
            w.raw(",\"log_end_offset\":")
            w.int(r.logEndOffset.rawValue)
            w.raw(",\"lag\":")
            w.int(r.lag)
            w.raw("}")
        }
        w.raw("]}")
    }

    static func nodes(_ ids: [NodeID], into w: inout JSONWriter) {
        w.raw("[")
        for (i, n) in ids.enumerated() {
            if i > 0 { w.raw(",") }
            w.int(Int64(n.rawValue))
        }
        w.raw("]")
    }

    static func offsets(topic: TopicName, partition: PartitionID, _ o: PartitionOffsets) -> [UInt8] {
        var w = JSONWriter()
        w.raw("{\"topic\":")
        w.string(topic.rawValue)
        w.raw(",\"partition\":")
        w.int(Int64(partition.rawValue))
        w.raw(",\"log_start_offset\":")
        w.int(o.logStartOffset.rawValue)
        w.raw(",\"high_watermark\":")
        w.int(o.highWatermark.rawValue)
        w.raw(",\"log_end_offset\":")
        w.int(o.logEndOffset.rawValue)
        w.raw("}")
        return w.bytes
    }

    static func timestampLookup(topic: TopicName, partition: PartitionID, timestamp: Int64, offset: Offset?) -> [UInt8] {
        var w = JSONWriter()
        w.raw("{\"topic\":")
        w.string(topic.rawValue)
        w.raw(",\"partition\":")
        w.int(Int64(partition.rawValue))
        w.raw(",\"timestamp\":")
        w.int(timestamp)
        w.raw(",\"offset\":")
        if let offset { w.int(offset.rawValue) } else { w.raw("null") }
        w.raw("}")
        return w.bytes
    }

    static func cluster(_ c: ClusterDescription) -> [UInt8] {
        var w = JSONWriter()
        w.raw("{\"cluster_id\":")
        w.string(c.clusterID)
        w.raw(",\"controller\":")
        w.int(Int64(c.controller.rawValue))
        w.raw(",\"version\":")
        w.string(c.version)
        w.raw(",\"brokers\":[")
        for (i, b) in c.brokers.enumerated() {
            if i > 0 { w.raw(",") }
            w.raw("{\"id\":")
            w.int(Int64(b.id.rawValue))
            w.raw(",\"host\":")
            w.string(b.host)
            w.raw(",\"port\":")
            w.int(b.port)
            w.raw(",\"rack\":")
            if let rack = b.rack { w.string(rack) } else { w.raw("null") }
            w.raw(",\"alive\":")
            w.bool(b.isAlive)
            w.raw("}")
        }
        w.raw("],\"topics\":")
        w.int(c.topicCount)
        w.raw(",\"partitions\":")
        w.int(c.partitionCount)
        w.raw("}")
        return w.bytes
    }
}

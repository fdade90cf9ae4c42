import BrokerModel
import Consensus

/// The bytes brokers exchange, besides Raft's own (`RaftWire`): frame kinds, leader reports, and the
/// bodies of forwarded calls. Decoding checks every count against the bytes left, so a hostile or
/// truncated body throws instead of trapping.
enum ClusterWire {
    enum FrameKind: UInt8 {
        case raft = 1
        case report = 2
    }

    static func frame(_ kind: FrameKind, _ payload: [UInt8]) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(payload.count + 1)
        out.append(kind.rawValue)
        out.append(contentsOf: payload)
        return out
    }

    static func count(_ r: inout ByteReader, elementBytes: Int = 1) throws(DecodeError) -> Int {
        let n = Int(try r.int32())
        guard n >= 0, n * elementBytes <= r.remaining else { throw DecodeError("count \(n) out of range") }
        return n
    }

    static func topicPartition(_ r: inout ByteReader) throws(DecodeError) -> TopicPartition {
        let name = try r.sizedString()
        guard let topic = TopicName(name) else { throw DecodeError("invalid topic name") }
        return TopicPartition(topic, PartitionID(try r.int32()))
    }

    static func write(_ tp: TopicPartition, _ w: inout ByteWriter) {
        w.sizedString(tp.topic.rawValue)
        w.int32(tp.partition.rawValue)
    }

    static func batches(_ r: inout ByteReader) throws(DecodeError) -> [RecordBatch] {
        let n = try count(&r, elementBytes: RecordBatch.headerBytes)
        var out: [RecordBatch] = []
        out.reserveCapacity(n)
        for _ in 0..<n {
            let size = try count(&r)
            out.append(try RecordBatch(validating: try r.bytes(size)))
        }
        return out
    }

    static func write(_ batches: [RecordBatch], _ w: inout ByteWriter) {
        w.int32(Int32(batches.count))
        for b in batches {
            w.int32(Int32(b.sizeBytes))
            w.append(b.bytes)
        }
    }

    static func decode<T>(_ bytes: [UInt8], _ body: (inout ByteReader) throws(DecodeError) -> T) throws(DecodeError) -> T {
        try withBytes(bytes) { (raw: UnsafeRawBufferPointer) throws(DecodeError) -> T in
            var r = ByteReader(raw)
            let value = try body(&r)
            guard r.remaining == 0 else { throw DecodeError("\(r.remaining) trailing bytes") }
            return value
        }
    }
}

/// What a partition leader tells every peer about the partitions it leads, twice a second: enough for
/// any broker to route requests and to describe leaders, in-sync replicas and lag (Redpanda's health
/// reports play this part).
struct LeaderReport: Sendable, Equatable {
    var group: TopicPartition
    var term: Term
    var leader: NodeID
    var offsets: PartitionOffsets
    var inSyncReplicas: [NodeID]
    var replicaStates: [ReplicaLag]

    static func encode(_ reports: [LeaderReport]) -> [UInt8] {
        var w = ByteWriter()
        w.int32(Int32(reports.count))
        for r in reports {
            ClusterWire.write(r.group, &w)
            w.int64(r.term.rawValue)
            w.int32(r.leader.rawValue)
            w.int64(r.offsets.logStartOffset.rawValue)
            w.int64(r.offsets.highWatermark.rawValue)
            w.int64(r.offsets.logEndOffset.rawValue)
            w.int32(Int32(r.inSyncReplicas.count))
            for n in r.inSyncReplicas { w.int32(n.rawValue) }
            w.int32(Int32(r.replicaStates.count))
            for s in r.replicaStates {
                w.int32(s.broker.rawValue)
                w.int64(s.logEndOffset.rawValue)
                w.int64(s.lag)
            }
        }
        return w.bytes
    }

    static func decode(_ r: inout ByteReader) throws(DecodeError) -> [LeaderReport] {
        let n = try ClusterWire.count(&r, elementBytes: 40)
        var out: [LeaderReport] = []
        for _ in 0..<n {
            let group = try ClusterWire.topicPartition(&r)
            let term = Term(try r.int64())
            let leader = NodeID(try r.int32())
            let offsets = PartitionOffsets(logStartOffset: Offset(try r.int64()), highWatermark: Offset(try r.int64()), logEndOffset: Offset(try r.int64()))
            var isr: [NodeID] = []
            for _ in 0..<(try ClusterWire.count(&r, elementBytes: 4)) { isr.append(NodeID(try r.int32())) }
            var states: [ReplicaLag] = []
            for _ in 0..<(try ClusterWire.count(&r, elementBytes: 20)) {
                states.append(ReplicaLag(broker: NodeID(try r.int32()), logEndOffset: Offset(try r.int64()), lag: try r.int64()))
            }
            out.append(LeaderReport(group: group, term: term, leader: leader, offsets: offsets, inSyncReplicas: isr, replicaStates: states))
        }
        return out
    }
}

/// Bodies of the calls one broker makes on another.
enum PeerCall {
    static let produce = "produce"
    static let read = "read"
    static let metadata = "metadata"
    static let offsets = "offsets"
    static let transfer = "transfer"
    static let group = "group"

    struct Produce {
        var group: TopicPartition
        var acks: Acks
        var batches: [RecordBatch]

        func encode() -> [UInt8] {
            var w = ByteWriter()
            ClusterWire.write(group, &w)
            w.sizedString(acks.rawValue)
            ClusterWire.write(batches, &w)
            return w.bytes
        }

        static func decode(_ bytes: [UInt8]) throws(DecodeError) -> Produce {
            try ClusterWire.decode(bytes) { (r: inout ByteReader) throws(DecodeError) -> Produce in
                let group = try ClusterWire.topicPartition(&r)
                guard let acks = Acks(parameter: try r.sizedString()) else { throw DecodeError("bad acks") }
                return Produce(group: group, acks: acks, batches: try ClusterWire.batches(&r))
            }
        }
    }

    static func encodeOffsets(_ offsets: [Offset]) -> [UInt8] {
        var w = ByteWriter()
        w.int32(Int32(offsets.count))
        for o in offsets { w.int64(o.rawValue) }
        return w.bytes
    }

    static func decodeOffsets(_ bytes: [UInt8]) throws(DecodeError) -> [Offset] {
        try ClusterWire.decode(bytes) { (r: inout ByteReader) throws(DecodeError) -> [Offset] in
            var out: [Offset] = []
            for _ in 0..<(try ClusterWire.count(&r, elementBytes: 8)) { out.append(Offset(try r.int64())) }
            return out
        }
    }

    static func encode(_ request: ReadRequest) -> [UInt8] {
        var w = ByteWriter()
        ClusterWire.write(TopicPartition(request.topic, request.partition), &w)
        switch request.offset {
        case .earliest: w.int8(0)
        case .latest: w.int8(1)
        case .exact(let o):
            w.int8(2)
            w.int64(o.rawValue)
        }
        w.int32(Int32(clamping: request.maxRecords))
        w.int32(Int32(clamping: request.maxBytes))
        w.int32(Int32(clamping: request.waitMilliseconds))
        return w.bytes
    }

    static func decodeReadRequest(_ bytes: [UInt8]) throws(DecodeError) -> ReadRequest {
        try ClusterWire.decode(bytes) { (r: inout ByteReader) throws(DecodeError) -> ReadRequest in
            let tp = try ClusterWire.topicPartition(&r)
            let offset: OffsetSpec
            switch try r.int8() {
            case 0: offset = .earliest
            case 1: offset = .latest
            case 2: offset = .exact(Offset(try r.int64()))
            default: throw DecodeError("bad offset kind")
            }
            return ReadRequest(topic: tp.topic, partition: tp.partition, offset: offset,
                               maxRecords: Int(try r.int32()), maxBytes: Int(try r.int32()), waitMilliseconds: Int(try r.int32()))
        }
    }

    static func encode(_ result: ReadResult) -> [UInt8] {
        var w = ByteWriter()
        for o in [result.fromOffset, result.nextOffset, result.highWatermark, result.logStartOffset, result.logEndOffset] { w.int64(o.rawValue) }
        ClusterWire.write(result.batches, &w)
        return w.bytes
    }

    static func decodeReadResult(_ bytes: [UInt8], topic: TopicName, partition: PartitionID) throws(DecodeError) -> ReadResult {
        try ClusterWire.decode(bytes) { (r: inout ByteReader) throws(DecodeError) -> ReadResult in
            let from = Offset(try r.int64()), next = Offset(try r.int64()), hw = Offset(try r.int64())
            let start = Offset(try r.int64()), end = Offset(try r.int64())
            return ReadResult(topic: topic, partition: partition, batches: try ClusterWire.batches(&r), fromOffset: from, nextOffset: next,
                              highWatermark: hw, logStartOffset: start, logEndOffset: end)
        }
    }

    static func encode(_ offsets: PartitionOffsets) -> [UInt8] {
        encodeOffsets([offsets.logStartOffset, offsets.highWatermark, offsets.logEndOffset])
    }

    static func decodePartitionOffsets(_ bytes: [UInt8]) throws(DecodeError) -> PartitionOffsets {
        let o = try decodeOffsets(bytes)
        guard o.count == 3 else { throw DecodeError("expected 3 offsets") }
        return PartitionOffsets(logStartOffset: o[0], highWatermark: o[1], logEndOffset: o[2])
    }
}

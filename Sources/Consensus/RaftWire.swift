import BrokerModel

/// A Raft message together with the group (partition) it belongs to: brokers share one connection
/// for every group they both replicate, so each message says which group it is for.
public struct GroupEnvelope: Equatable, Sendable, CustomStringConvertible {
    public var group: TopicPartition
    public var envelope: RaftEnvelope
    public init(group: TopicPartition, envelope: RaftEnvelope) {
        self.group = group
        self.envelope = envelope
    }
    public var description: String { "\(group) \(envelope)" }
}

/// Bounds the decoder enforces on hostile bytes (besides "every length fits in what is left").
public struct RaftWireLimits: Sendable, Equatable {
    /// Envelopes in one encoding.
    public var envelopesMax: Int = 100_000
    /// Record batches in one append.
    public var batchesPerAppendMax: Int = 100_000
    /// Bytes of one record batch.
    public var batchBytesMax: Int = 64 << 20
    /// Voters plus learners of a snapshot's membership.
    public var membersMax: Int = 1_024
    /// Bytes of a snapshot's state-machine image.
    public var snapshotBytesMax: Int = 1 << 30
    public init() {}
    public static let defaults = RaftWireLimits()
}

/// The binary encoding of ``GroupEnvelope``s, as carried in inter-broker frames.
///
/// Layout (big-endian fixed-width integers, zig-zag varints as in Kafka):
///
///     "PRW" | version u8 = 1 | varint count | envelope...
///     envelope = varint topic length, topic bytes | int32 partition | int32 from | int32 to
///                | int64 term | u8 tag | fields of the case
///
/// - position: int64 offset, int64 term; bool: u8 0 or 1
/// - append: position previous, int64 commit, varint batch count, then per batch int32 length + the
///   Kafka RecordBatch v2 bytes (CRC verified on decode)
/// - appendResponse: u8 0 + int64 match, or u8 1 + int64 previousOffset + position hint
/// - heartbeat: int64 commit, u64 readSequence; heartbeatResponse: u64 readSequence
/// - installSnapshot: position, varint voter count + int32 ids, varint learner count + int32 ids,
///   u8 hasData (+ int32 length + bytes)
///
/// Decoding never traps: counts are bounded by ``RaftWireLimits``, every length is checked against
/// the bytes left, tags, booleans and topic names are validated, a membership with a node both voter
/// and learner is refused, and trailing bytes are an error.
public enum RaftWire {
    public static let version: UInt8 = 1
    static let magic: [UInt8] = [0x50, 0x52, 0x57]  // "PRW"

    enum Tag: UInt8 {
        case preVote = 1, preVoteResponse, vote, voteResponse, append, appendResponse
        case heartbeat, heartbeatResponse, installSnapshot, timeoutNow
    }

    public static func encode(_ envelopes: [GroupEnvelope]) -> [UInt8] {
        var w = ByteWriter(capacity: 64)
        w.append(magic)
        w.int8(Int8(bitPattern: version))
        w.varint(Int64(envelopes.count))
        for e in envelopes { encode(e, into: &w) }
        return w.bytes
    }

    public static func decode(_ bytes: [UInt8], limits: RaftWireLimits = .defaults) throws(DecodeError) -> [GroupEnvelope] {
        try withBytes(bytes) { (raw) throws(DecodeError) in
            var r = ByteReader(raw)
            guard try r.bytes(3) == magic else { throw DecodeError("not a Raft wire encoding (bad magic)") }
            let v = UInt8(bitPattern: try r.int8())
            guard v == version else { throw DecodeError("unsupported Raft wire version \(v)") }
            let count = try count(&r, max: limits.envelopesMax, what: "envelopes")
            var envelopes: [GroupEnvelope] = []
            for _ in 0..<count { envelopes.append(try decodeEnvelope(&r, limits: limits)) }
            guard r.remaining == 0 else { throw DecodeError("\(r.remaining) trailing bytes after Raft envelopes") }
            return envelopes
        }
    }

    // MARK: encoding

    private static func encode(_ e: GroupEnvelope, into w: inout ByteWriter) {
        let topic = Array(e.group.topic.rawValue.utf8)
        w.varint(Int64(topic.count))
        w.append(topic)
        w.int32(e.group.partition.rawValue)
        w.int32(e.envelope.from.rawValue)
        w.int32(e.envelope.to.rawValue)
        w.int64(e.envelope.term.rawValue)
        func tag(_ t: Tag) { w.int8(Int8(bitPattern: t.rawValue)) }
        func position(_ p: LogPosition) {
            w.int64(p.offset.rawValue)
            w.int64(p.term.rawValue)
        }
        func bool(_ b: Bool) { w.int8(b ? 1 : 0) }
        func nodes(_ ids: Set<NodeID>) {
            w.varint(Int64(ids.count))
            for id in ids.sorted() { w.int32(id.rawValue) }
        }
        switch e.envelope.message {
        case .preVote(let last):
            tag(.preVote)
            position(last)
        case .preVoteResponse(let granted):
            tag(.preVoteResponse)
            bool(granted)
        case .vote(let last, let transfer):
            tag(.vote)
            position(last)
            bool(transfer)
        case .voteResponse(let granted):
            tag(.voteResponse)
            bool(granted)
        case .append(let previous, let entries, let commit):
            tag(.append)
            position(previous)
            w.int64(commit.rawValue)
            w.varint(Int64(entries.count))
            for batch in entries {
                w.int32(Int32(batch.bytes.count))
                w.append(batch.bytes)
            }
        case .appendResponse(.accepted(let match)):
            tag(.appendResponse)
            w.int8(0)
            w.int64(match.rawValue)
        case .appendResponse(.rejected(let previousOffset, let hint)):
            tag(.appendResponse)
            w.int8(1)
            w.int64(previousOffset.rawValue)
            position(hint)
        case .heartbeat(let commit, let readSequence):
            tag(.heartbeat)
            w.int64(commit.rawValue)
            w.int64(Int64(bitPattern: readSequence))
        case .heartbeatResponse(let readSequence):
            tag(.heartbeatResponse)
            w.int64(Int64(bitPattern: readSequence))
        case .installSnapshot(let snapshot):
            tag(.installSnapshot)
            position(snapshot.point)
            nodes(snapshot.membership.voters)
            nodes(snapshot.membership.learners)
            if let data = snapshot.data {
                w.int8(1)
                w.int32(Int32(data.count))
                w.append(data)
            } else {
                w.int8(0)
            }
        case .timeoutNow:
            tag(.timeoutNow)
        }
    }

    // MARK: decoding

    private static func count(_ r: inout ByteReader, max: Int, what: String) throws(DecodeError) -> Int {
        let n = try r.varint()
        guard n >= 0, n <= Int64(max) else { throw DecodeError("\(what) count \(n) out of range 0...\(max)") }
        return Int(n)
    }

    private static func position(_ r: inout ByteReader) throws(DecodeError) -> LogPosition {
        LogPosition(offset: Offset(try r.int64()), term: Term(try r.int64()))
    }

    private static func bool(_ r: inout ByteReader) throws(DecodeError) -> Bool {
        switch try r.int8() {
        case 0: return false
        case 1: return true
        case let b: throw DecodeError("boolean byte \(b) is neither 0 nor 1")
        }
    }

    private static func length(_ r: inout ByteReader, max: Int, what: String) throws(DecodeError) -> Int {
        let n = Int(try r.int32())
        guard n >= 0, n <= max, n <= r.remaining else { throw DecodeError("\(what) length \(n) out of range") }
        return n
    }

    private static func nodes(_ r: inout ByteReader, max: Int) throws(DecodeError) -> Set<NodeID> {
        let n = try count(&r, max: max, what: "members")
        var ids = Set<NodeID>()
        for _ in 0..<n { ids.insert(NodeID(try r.int32())) }
        return ids
    }

    private static func decodeEnvelope(_ r: inout ByteReader, limits: RaftWireLimits) throws(DecodeError) -> GroupEnvelope {
        let topicLength = try count(&r, max: TopicName.lengthMax, what: "topic name bytes")
        let topicText = String(decoding: try r.bytes(topicLength), as: UTF8.self)
        guard let topic = TopicName(topicText) else { throw DecodeError("invalid topic name in Raft envelope") }
        let partition = PartitionID(try r.int32())
        let from = NodeID(try r.int32())
        let to = NodeID(try r.int32())
        let term = Term(try r.int64())
        let rawTag = UInt8(bitPattern: try r.int8())
        guard let tag = Tag(rawValue: rawTag) else { throw DecodeError("unknown Raft message tag \(rawTag)") }
        let message: RaftMessage
        switch tag {
        case .preVote: message = .preVote(lastLog: try position(&r))
        case .preVoteResponse: message = .preVoteResponse(granted: try bool(&r))
        case .vote: message = .vote(lastLog: try position(&r), isLeadershipTransfer: try bool(&r))
        case .voteResponse: message = .voteResponse(granted: try bool(&r))
        case .append:
            let previous = try position(&r)
            let commit = Offset(try r.int64())
            let n = try count(&r, max: limits.batchesPerAppendMax, what: "batches")
            var entries: [RecordBatch] = []
            for _ in 0..<n {
                let size = try length(&r, max: limits.batchBytesMax, what: "record batch")
                entries.append(try RecordBatch(validating: try r.bytes(size)))
            }
            message = .append(previous: previous, entries: entries, commit: commit)
        case .appendResponse:
            switch try r.int8() {
            case 0: message = .appendResponse(.accepted(match: Offset(try r.int64())))
            case 1: message = .appendResponse(.rejected(previousOffset: Offset(try r.int64()), hint: try position(&r)))
            case let b: throw DecodeError("unknown append result \(b)")
            }
        case .heartbeat:
            message = .heartbeat(commit: Offset(try r.int64()), readSequence: UInt64(bitPattern: try r.int64()))
        case .heartbeatResponse:
            message = .heartbeatResponse(readSequence: UInt64(bitPattern: try r.int64()))
        case .installSnapshot:
            let point = try position(&r)
            let voters = try nodes(&r, max: limits.membersMax)
            let learners = try nodes(&r, max: limits.membersMax)
            // Membership's initialiser treats an overlap as a broken invariant: refuse it here instead.
            guard voters.isDisjoint(with: learners) else { throw DecodeError("snapshot membership has a node both voter and learner") }
            var data: [UInt8]?
            if try bool(&r) {
                data = try r.bytes(try length(&r, max: limits.snapshotBytesMax, what: "snapshot data"))
            }
            message = .installSnapshot(Snapshot(point: point, membership: Membership(voters: voters, learners: learners), data: data))
        case .timeoutNow: message = .timeoutNow
        }
        return GroupEnvelope(
            group: TopicPartition(topic, partition), envelope: RaftEnvelope(from: from, to: to, term: term, message: message))
    }
}

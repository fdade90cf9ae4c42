import BrokerModel

/// Raft's own entries. They are control batches (`isControl`): they occupy an offset like any
/// other batch, so log position stays equal to record offset, and readers skip them.
///
/// Each holds one record whose key names its kind and whose value is a small big-endian payload.
public enum ControlBatch {
    static let leaderKey: [UInt8] = Array("petrel.raft.leader".utf8)
    static let membershipKey: [UInt8] = Array("petrel.raft.membership".utf8)

    /// The no-op a new leader appends in its term: committing it commits everything before it
    /// (Raft §5.4.2 / §8) and tells readers where an epoch begins.
    public static func leaderMarker(leader: NodeID, term: Term) -> RecordBatch {
        var w = ByteWriter(capacity: 12)
        w.int32(leader.rawValue)
        w.int64(term.rawValue)
        return RecordBatch.encode(
            records: [Record(key: leaderKey, value: w.bytes, timestamp: 0)],
            partitionLeaderEpoch: Int32(term.rawValue), isControl: true)
    }

    /// A new membership configuration; it takes effect on every node as soon as it is appended.
    public static func membership(_ m: Membership) -> RecordBatch {
        var w = ByteWriter(capacity: 8 + 4 * m.members.count)
        w.int32(Int32(m.voters.count))
        for v in m.voters.sorted() { w.int32(v.rawValue) }
        w.int32(Int32(m.learners.count))
        for l in m.learners.sorted() { w.int32(l.rawValue) }
        return RecordBatch.encode(records: [Record(key: membershipKey, value: w.bytes, timestamp: 0)], isControl: true)
    }

    /// The membership a batch carries, or nil when it is not a membership batch.
    public static func decodeMembership(_ batch: RecordBatch) -> Membership? {
        guard batch.isControl, batch.recordCount == 1 else { return nil }
        guard let records = try? batch.records(), let record = records.first, record.record.key == membershipKey,
            let value = record.record.value
        else { return nil }
        return try? withBytes(value) { (raw) throws(DecodeError) -> Membership in
            var r = ByteReader(raw)
            var voters = Set<NodeID>()
            let vc = try r.int32()
            guard vc >= 0, Int(vc) <= r.remaining / 4 else { throw DecodeError("bad voter count") }
            for _ in 0..<vc { voters.insert(NodeID(try r.int32())) }
            var learners = Set<NodeID>()
            let lc = try r.int32()
            guard lc >= 0, Int(lc) <= r.remaining / 4 else { throw DecodeError("bad learner count") }
            for _ in 0..<lc { learners.insert(NodeID(try r.int32())) }
            guard voters.isDisjoint(with: learners) else { throw DecodeError("voter is also a learner") }
            return Membership(voters: voters, learners: learners)
        }
    }

    /// True for a membership batch (cheap check first: control bit).
    public static func isMembership(_ batch: RecordBatch) -> Bool {
        batch.isControl && decodeMembership(batch) != nil
    }
}

extension RecordBatch {
    /// The Raft term that wrote this batch (stored as the Kafka partition leader epoch).
    public var term: Term { Term(Int64(partitionLeaderEpoch)) }
    /// The Raft position of this entry: its last offset and its term.
    public var position: LogPosition { LogPosition(offset: lastOffset, term: term) }
}

extension ControlBatch {
    /// True for the key of a record inside one of Raft's control batches. A reader that shows such
    /// a record to a consumer has a bug.
    public static func isRaftControlKey(_ key: [UInt8]) -> Bool { key == leaderKey || key == membershipKey }
}

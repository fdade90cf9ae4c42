import BrokerModel

/// The binary encoding of ``GroupRecord``: the value of one `__consumer_offsets` record.
///
/// Layout (big-endian fixed ints, zig-zag varints as in Kafka):
///
///     version: u8 = 1 | tag: u8 | fields of the case, in declaration order
///
/// - string: varint byte count, UTF-8 bytes; group, member and topic names are validated on decode
/// - partition: topic string, int32 partition (≥ 0); partition list: varint count, partitions
/// - member: id, client id, varint topic count + topics, u8 0 (dynamic) or 1 + manual partition
///   list, int64 session timeout ms, u8 auto-offset-reset (0 earliest, 1 latest, 2 none),
///   u8 auto-commit (0/1), varint property count + (key, value) strings sorted by key
/// - assignor: u8 0 range, 1 roundrobin, 2 sticky
/// - memberJoined: group, member, assignor, int64 next member number
/// - rebalanced: group, int32 generation, varint member count + (member id, partition list) sorted by id
/// - offsetCommitted: group, partition, int64 offset, metadata string, int64 commit time ms
///
/// Decoding never traps: every length and count is checked against the bytes left and
/// ``GroupLimits``, every tag and name is validated, maps with a key twice and trailing bytes are
/// errors. Decoding checks shape only; ``GroupsState/problem(applying:)`` checks the record against
/// a state.
public enum GroupCodec {
    public static let recordVersion: UInt8 = 1
    /// Member counters stay below 2^62 so `decide` (which adds one) never overflows.
    static let counterMax: Int64 = 1 << 62

    enum Tag: UInt8 {
        case memberJoined = 1, memberUpdated, memberRemoved, rebalanced, offsetCommitted, groupDeleted
    }

    public static func encode(_ record: GroupRecord) -> [UInt8] {
        var w = ByteWriter(capacity: 64)
        w.int8(Int8(bitPattern: recordVersion))
        switch record {
        case .memberJoined(let group, let member, let assignor, let nextMemberNumber):
            w.tag(.memberJoined)
            w.string(group.rawValue)
            w.member(member)
            w.int8(assignorCode(assignor))
            w.int64(nextMemberNumber)
        case .memberUpdated(let group, let member):
            w.tag(.memberUpdated)
            w.string(group.rawValue)
            w.member(member)
        case .memberRemoved(let group, let member):
            w.tag(.memberRemoved)
            w.string(group.rawValue)
            w.string(member.rawValue)
        case .rebalanced(let group, let generation, let assignment):
            w.tag(.rebalanced)
            w.string(group.rawValue)
            w.int32(generation)
            w.varint(Int64(assignment.count))
            for member in assignment.keys.sorted() {
                w.string(member.rawValue)
                w.partitions(assignment[member]!)
            }
        case .offsetCommitted(let group, let partition, let offset):
            w.tag(.offsetCommitted)
            w.string(group.rawValue)
            w.partition(partition)
            w.int64(offset.offset.rawValue)
            w.string(offset.metadata)
            w.int64(offset.commitMilliseconds)
        case .groupDeleted(let group):
            w.tag(.groupDeleted)
            w.string(group.rawValue)
        }
        return w.bytes
    }

    public static func decodeRecord(_ bytes: [UInt8], limits: GroupLimits = .defaults) throws(DecodeError) -> GroupRecord {
        try withBytes(bytes) { (raw) throws(DecodeError) -> GroupRecord in
            var r = GroupReader(reader: ByteReader(raw), limits: limits)
            let version = UInt8(bitPattern: try r.reader.int8())
            guard version == recordVersion else { throw DecodeError("group record version \(version) is not \(recordVersion)") }
            let rawTag = UInt8(bitPattern: try r.reader.int8())
            guard let tag = Tag(rawValue: rawTag) else { throw DecodeError("unknown group record tag \(rawTag)") }
            let record: GroupRecord
            switch tag {
            case .memberJoined:
                let group = try r.groupID()
                let member = try r.member()
                let assignor = try r.assignor()
                let next = try r.reader.int64()
                guard next >= 1, next < counterMax else { throw DecodeError("member counter \(next) out of range") }
                record = .memberJoined(group: group, member: member, assignor: assignor, nextMemberNumber: next)
            case .memberUpdated: record = .memberUpdated(group: try r.groupID(), member: try r.member())
            case .memberRemoved: record = .memberRemoved(group: try r.groupID(), member: try r.memberID())
            case .rebalanced:
                let group = try r.groupID()
                let generation = try r.reader.int32()
                guard generation >= 1 else { throw DecodeError("generation \(generation) out of range") }
                let count = try r.count(max: limits.membersPerGroupMax)
                var assignment: [MemberID: [TopicPartition]] = [:]
                for _ in 0..<count {
                    let member = try r.memberID()
                    let partitions = try r.partitions()
                    if assignment.updateValue(partitions, forKey: member) != nil { throw DecodeError("member \(member) twice in an assignment") }
                }
                record = .rebalanced(group: group, generation: generation, assignment: assignment)
            case .offsetCommitted:
                let group = try r.groupID()
                let partition = try r.partition()
                let offset = try r.reader.int64()
                guard offset >= 0 else { throw DecodeError("negative committed offset \(offset)") }
                let metadata = try r.string(max: limits.metadataBytesMax)
                let time = try r.reader.int64()
                record = .offsetCommitted(
                    group: group, partition: partition, offset: CommittedOffset(offset: Offset(offset), metadata: metadata, commitMilliseconds: time))
            case .groupDeleted: record = .groupDeleted(try r.groupID())
            }
            if r.reader.remaining != 0 { throw DecodeError("\(r.reader.remaining) bytes after a group record") }
            return record
        }
    }

    /// The record's key, for log compaction of `__consumer_offsets` later on:
    ///
    /// - `offsetCommitted`: `o\0<group>\0<topic>\0<partition>` (partition in decimal) — the latest
    ///   commit of a partition supersedes every earlier one;
    /// - every other record: `g\0<group>`, with `groupDeleted` as the group's tombstone.
    ///
    /// Membership records of one group are not independent of each other (a `rebalanced` needs its
    /// members' `memberJoined`), so compacting `g` keys needs a group snapshot record first; offset
    /// keys can be compacted as they are, provided compaction keeps the log order.
    public static func key(of record: GroupRecord) -> [UInt8] {
        switch record {
        case .offsetCommitted(let group, let partition, _):
            return Array("o\0\(group.rawValue)\0\(partition.topic.rawValue)\0\(partition.partition.rawValue)".utf8)
        case .memberJoined(let group, _, _, _), .memberUpdated(let group, _), .memberRemoved(let group, _),
            .rebalanced(let group, _, _), .groupDeleted(let group):
            return Array("g\0\(group.rawValue)".utf8)
        }
    }

    static func assignorCode(_ assignor: GroupAssignor) -> Int8 {
        switch assignor {
        case .range: 0
        case .roundrobin: 1
        case .sticky: 2
        }
    }

    static func resetCode(_ reset: AutoOffsetReset) -> Int8 {
        switch reset {
        case .earliest: 0
        case .latest: 1
        case .none: 2
        }
    }
}

extension ByteWriter {
    fileprivate mutating func tag(_ tag: GroupCodec.Tag) { int8(Int8(bitPattern: tag.rawValue)) }
    fileprivate mutating func string(_ s: String) {
        let utf8 = Array(s.utf8)
        varint(Int64(utf8.count))
        append(utf8)
    }
    fileprivate mutating func partition(_ p: TopicPartition) {
        string(p.topic.rawValue)
        int32(p.partition.rawValue)
    }
    fileprivate mutating func partitions(_ list: [TopicPartition]) {
        varint(Int64(list.count))
        for p in list { partition(p) }
    }
    fileprivate mutating func member(_ m: GroupMember) {
        string(m.id.rawValue)
        string(m.clientID)
        varint(Int64(m.topics.count))
        for topic in m.topics { string(topic.rawValue) }
        if let manual = m.manualPartitions {
            int8(1)
            partitions(manual)
        } else {
            int8(0)
        }
        int64(m.sessionTimeoutMilliseconds)
        int8(GroupCodec.resetCode(m.autoOffsetReset))
        int8(m.autoCommit ? 1 : 0)
        varint(Int64(m.properties.count))
        for key in m.properties.keys.sorted() {
            string(key)
            string(m.properties[key]!)
        }
    }
}

/// Bounds-checked reading of the shapes above; every failure is a `DecodeError`.
private struct GroupReader {
    var reader: ByteReader
    let limits: GroupLimits

    mutating func count(max: Int) throws(DecodeError) -> Int {
        let n = try reader.varint()
        // Each element takes at least one byte, so a count above the bytes left is a lie.
        guard n >= 0, n <= Int64(max), n <= Int64(reader.remaining) else { throw DecodeError("count \(n) out of range") }
        return Int(n)
    }
    mutating func string(max: Int) throws(DecodeError) -> String {
        let n = try count(max: max)
        let bytes = try reader.bytes(n)
        guard let s = String(validating: bytes, as: UTF8.self) else { throw DecodeError("string is not UTF-8") }
        return s
    }
    mutating func groupID() throws(DecodeError) -> GroupID {
        guard let id = GroupID(try string(max: GroupID.lengthMax)) else { throw DecodeError("invalid group id in a group record") }
        return id
    }
    mutating func memberID() throws(DecodeError) -> MemberID {
        guard let id = MemberID(try string(max: MemberID.lengthMax)) else { throw DecodeError("invalid member id in a group record") }
        return id
    }
    mutating func topicName() throws(DecodeError) -> TopicName {
        guard let name = TopicName(try string(max: TopicName.lengthMax)) else { throw DecodeError("invalid topic name in a group record") }
        return name
    }
    mutating func partition() throws(DecodeError) -> TopicPartition {
        let topic = try topicName()
        let partition = try reader.int32()
        guard partition >= 0 else { throw DecodeError("negative partition \(partition)") }
        return TopicPartition(topic, PartitionID(partition))
    }
    mutating func partitions() throws(DecodeError) -> [TopicPartition] {
        let n = try count(max: limits.assignmentPartitionsMax)
        var list: [TopicPartition] = []
        list.reserveCapacity(n)
        for _ in 0..<n { list.append(try partition()) }
        return list
    }
    mutating func flag() throws(DecodeError) -> Bool {
        switch try reader.int8() {
        case 0: return false
        case 1: return true
        case let other: throw DecodeError("bad flag \(other)")
        }
    }
    mutating func assignor() throws(DecodeError) -> GroupAssignor {
        switch try reader.int8() {
        case 0: return .range
        case 1: return .roundrobin
        case 2: return .sticky
        case let other: throw DecodeError("unknown assignor \(other)")
        }
    }
    mutating func autoOffsetReset() throws(DecodeError) -> AutoOffsetReset {
        switch try reader.int8() {
        case 0: return .earliest
        case 1: return .latest
        case 2: return .none
        case let other: throw DecodeError("unknown auto-offset-reset \(other)")
        }
    }
    mutating func member() throws(DecodeError) -> GroupMember {
        let id = try memberID()
        let clientID = try string(max: limits.clientIDBytesMax)
        let topicCount = try count(max: limits.topicsPerMemberMax)
        var topics: [TopicName] = []
        for _ in 0..<topicCount { topics.append(try topicName()) }
        let manual = try flag() ? try partitions() : nil
        let session = try reader.int64()
        guard session > 0 else { throw DecodeError("session timeout \(session) ms out of range") }
        let reset = try autoOffsetReset()
        let autoCommit = try flag()
        let propertyCount = try count(max: limits.propertiesMax)
        var properties: [String: String] = [:]
        for _ in 0..<propertyCount {
            let key = try string(max: limits.propertyBytesMax)
            let value = try string(max: limits.propertyBytesMax)
            if properties.updateValue(value, forKey: key) != nil { throw DecodeError("member property \(key) twice") }
        }
        return GroupMember(
            id: id, clientID: clientID, topics: topics, manualPartitions: manual, sessionTimeoutMilliseconds: session,
            autoOffsetReset: reset, autoCommit: autoCommit, properties: properties)
    }
}

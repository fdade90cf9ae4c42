import BrokerModel
import ClusterState
import Foundation

/// A group request on its way to the group's coordinator, and the coordinator's answer. Requests
/// that reach another broker travel as JSON in a peer call (`PeerCall.group`): they are control
/// traffic, small and rare next to the data path; a poll answer carries its record batches in the
/// binary form the forwarded reads use.
enum GroupCall: Sendable, Codable {
    case join(JoinGroupRequest)
    case leave(group: GroupID, member: MemberID)
    case heartbeat(group: GroupID, member: MemberID)
    case poll(GroupPollRequest)
    case commit(GroupCommitRequest)
    case fetchOffsets(group: GroupID, member: MemberID?, partitions: [TopicPartition]?)
    case describe(GroupID)
    /// The groups of one coordinator partition.
    case list(partition: Int32)
    case delete(GroupID)
    case reset(group: GroupID, topics: [TopicName], target: OffsetResetTarget)
    case subscribe(group: GroupID, member: MemberID, topics: [TopicName], manualPartitions: [TopicPartition]?)
    case seek(group: GroupID, member: MemberID, positions: [MemberSeek])
    /// The read positions of a member (what the next poll reads from), for REST Proxy v2's
    /// empty commit and `GET offsets` of an instance.
    case positions(group: GroupID, member: MemberID)

    var group: GroupID? {
        switch self {
        case .join(let r): r.group
        case .leave(let g, _), .heartbeat(let g, _), .fetchOffsets(let g, _, _), .describe(let g), .delete(let g), .reset(let g, _, _),
             .subscribe(let g, _, _, _), .seek(let g, _, _), .positions(let g, _): g
        case .poll(let r): r.group
        case .commit(let r): r.group
        case .list: nil
        }
    }

    /// How long a forwarded call may take: a poll waits, the rest answer after one commit.
    var waitMilliseconds: Int {
        if case .poll(let r) = self { return r.waitMilliseconds }
        return 0
    }
}

enum GroupAnswer: Sendable {
    case membership(GroupMembership)
    case poll(membership: GroupMembership, reads: [ReadResult])
    case done
    case committed(Int)
    case offsets([GroupOffset])
    case description(GroupDescription)
    case list([GroupSummary])

    /// The answer as it crosses between brokers: record batches in the binary form of forwarded
    /// reads (`PeerCall.encode(ReadResult)`), the rest as JSON.
    enum Wire: Sendable, Codable {
        case membership(GroupMembership)
        case poll(membership: GroupMembership, reads: [WireRead])
        case done
        case committed(Int)
        case offsets([GroupOffset])
        case description(GroupDescription)
        case list([GroupSummary])
    }

    struct WireRead: Sendable, Codable {
        var topic: TopicName
        var partition: PartitionID
        var bytes: Data
    }

    var wire: Wire {
        switch self {
        case .membership(let m): .membership(m)
        case .poll(let m, let reads): .poll(membership: m, reads: reads.map { WireRead(topic: $0.topic, partition: $0.partition, bytes: Data(PeerCall.encode($0))) })
        case .done: .done
        case .committed(let n): .committed(n)
        case .offsets(let o): .offsets(o)
        case .description(let d): .description(d)
        case .list(let l): .list(l)
        }
    }

    init(_ wire: Wire) throws(BrokerError) {
        switch wire {
        case .membership(let m): self = .membership(m)
        case .poll(let m, let reads):
            var out: [ReadResult] = []
            for r in reads {
                do { out.append(try PeerCall.decodeReadResult(Array(r.bytes), topic: r.topic, partition: r.partition)) } catch {
                    throw .unavailable("bad poll answer from the group coordinator: \(error)")
                }
            }
            self = .poll(membership: m, reads: out)
        case .done: self = .done
        case .committed(let n): self = .committed(n)
        case .offsets(let o): self = .offsets(o)
        case .description(let d): self = .description(d)
        case .list(let l): self = .list(l)
        }
    }
}

enum GroupWire {
    static func encode<T: Encodable>(_ value: T) -> [UInt8] {
        // Encoding our own value types cannot fail.
        Array(try! JSONEncoder().encode(value))
    }

    static func decode<T: Decodable>(_ type: T.Type, _ bytes: [UInt8]) throws(BrokerError) -> T {
        do {
            return try JSONDecoder().decode(type, from: Data(bytes))
        } catch {
            throw .badRequest("undecodable group call: \(error)")
        }
    }
}

// MARK: - Codable for the vocabulary (validated on decode: a peer's bytes are input like any other)

private func validated<T>(_ decoder: Decoder, _ make: (String) -> T?) throws -> T {
    let text = try decoder.singleValueContainer().decode(String.self)
    guard let value = make(text) else {
        throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "invalid identifier '\(text)'"))
    }
    return value
}

extension TopicName: Codable {
    public init(from decoder: Decoder) throws { self = try validated(decoder, TopicName.init) }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(rawValue)
    }
}

extension GroupID: Codable {
    public init(from decoder: Decoder) throws { self = try validated(decoder, GroupID.init) }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(rawValue)
    }
}

extension MemberID: Codable {
    public init(from decoder: Decoder) throws { self = try validated(decoder, MemberID.init) }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(rawValue)
    }
}

extension Offset: Codable {
    public init(from decoder: Decoder) throws { self = Offset(try decoder.singleValueContainer().decode(Int64.self)) }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(rawValue)
    }
}

extension PartitionID: Codable {
    public init(from decoder: Decoder) throws { self = PartitionID(try decoder.singleValueContainer().decode(Int32.self)) }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(rawValue)
    }
}

extension NodeID: Codable {
    public init(from decoder: Decoder) throws { self = NodeID(try decoder.singleValueContainer().decode(Int32.self)) }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(rawValue)
    }
}

extension TopicPartition: Codable {
    enum CodingKeys: String, CodingKey { case topic, partition }
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(try c.decode(TopicName.self, forKey: .topic), try c.decode(PartitionID.self, forKey: .partition))
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(topic, forKey: .topic)
        try c.encode(partition, forKey: .partition)
    }
}

extension GroupAssignor: Codable {}
extension AutoOffsetReset: Codable {}

extension CommittedOffsetEntry: Codable {
    enum CodingKeys: String, CodingKey { case partition, offset, metadata }
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(partition: try c.decode(TopicPartition.self, forKey: .partition), offset: try c.decode(Offset.self, forKey: .offset),
                  metadata: try c.decode(String.self, forKey: .metadata))
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(partition, forKey: .partition)
        try c.encode(offset, forKey: .offset)
        try c.encode(metadata, forKey: .metadata)
    }
}

/// Typed identifiers. Every id is its own type so an `Offset` never mixes with a `Term`
/// or a `PartitionID` (STYLE.md #6).

/// A position in a partition log: the offset of one record. Int64, increasing; gaps are allowed
/// (control batches occupy offsets too).
public struct Offset: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: Int64
    public init(rawValue: Int64) { self.rawValue = rawValue }
    public init(_ value: Int64) { self.rawValue = value }
    public static let zero = Offset(0)
    public static func < (a: Offset, b: Offset) -> Bool { a.rawValue < b.rawValue }
    public static func + (a: Offset, b: Int64) -> Offset { Offset(a.rawValue + b) }
    public static func - (a: Offset, b: Int64) -> Offset { Offset(a.rawValue - b) }
    /// Number of offsets in the half-open range `[b, a)`.
    public static func - (a: Offset, b: Offset) -> Int64 { a.rawValue - b.rawValue }
    public var description: String { String(rawValue) }
}

/// A Raft term, which is also the partition's leader epoch.
public struct Term: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: Int64
    public init(rawValue: Int64) { self.rawValue = rawValue }
    public init(_ value: Int64) { self.rawValue = value }
    public static let zero = Term(0)
    public static func < (a: Term, b: Term) -> Bool { a.rawValue < b.rawValue }
    public var next: Term { Term(rawValue + 1) }
    public var description: String { String(rawValue) }
}

/// A broker's id within the cluster.
public struct NodeID: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }
    public init(_ value: Int32) { self.rawValue = value }
    public static func < (a: NodeID, b: NodeID) -> Bool { a.rawValue < b.rawValue }
    public var description: String { String(rawValue) }
}

/// A partition number within a topic (0-based, Kafka's int32).
public struct PartitionID: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }
    public init(_ value: Int32) { self.rawValue = value }
    public static func < (a: PartitionID, b: PartitionID) -> Bool { a.rawValue < b.rawValue }
    public var description: String { String(rawValue) }
}

/// A topic name that passed validation: 1...249 characters of `[A-Za-z0-9._-]`, not `.` or `..`
/// (Kafka's rule). Because only these characters are allowed, a `TopicName` is safe to use as a
/// directory name component: it can never contain `/`, NUL, or climb out of the data directory.
public struct TopicName: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let rawValue: String
    public static let lengthMax = 249

    /// Returns nil and a reason when `name` is not a valid topic name.
    public static func validate(_ name: String) -> Result<TopicName, BrokerError> {
        if name.isEmpty { return .failure(.invalidTopicName("topic name must not be empty")) }
        if name.utf8.count > lengthMax {
            return .failure(.invalidTopicName("topic name is \(name.utf8.count) bytes; at most \(lengthMax) are allowed"))
        }
        if name == "." || name == ".." {
            return .failure(.invalidTopicName("topic name must not be '.' or '..'"))
        }
        for byte in name.utf8 where !TopicName.isAllowed(byte) {
            return .failure(.invalidTopicName("topic name may contain only ASCII letters, digits, '.', '_' and '-'"))
        }
        return .success(TopicName(unchecked: name))
    }

    public init?(_ name: String) {
        guard case .success(let topic) = TopicName.validate(name) else { return nil }
        self = topic
    }

    private init(unchecked: String) { self.rawValue = unchecked }

    /// Topics whose name starts with `__` are internal (`__consumer_offsets`, `__cluster`).
    public var isInternal: Bool { rawValue.hasPrefix("__") }

    static func isAllowed(_ b: UInt8) -> Bool {
        (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A)
            || b == 0x2E || b == 0x5F || b == 0x2D
    }
    public static func < (a: TopicName, b: TopicName) -> Bool { a.rawValue < b.rawValue }
    public var description: String { rawValue }
}

/// One partition of one topic.
public struct TopicPartition: Hashable, Sendable, CustomStringConvertible {
    public var topic: TopicName
    public var partition: PartitionID
    public init(_ topic: TopicName, _ partition: PartitionID) {
        self.topic = topic
        self.partition = partition
    }
    public var description: String { "\(topic)-\(partition)" }
}

/// A consumer group id that passed validation: 1...249 bytes of `[A-Za-z0-9._-]` (the topic-name
/// alphabet, so it is safe in a URL path segment and in logs).
public struct GroupID: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let rawValue: String
    public static let lengthMax = 249

    public static func validate(_ text: String, what: String = "group id") -> Result<GroupID, BrokerError> {
        if let problem = IdentifierText.problem(text, what: what, lengthMax: lengthMax) { return .failure(.badRequest(problem)) }
        return .success(GroupID(unchecked: text))
    }

    public init?(_ text: String) {
        guard case .success(let id) = GroupID.validate(text) else { return nil }
        self = id
    }

    private init(unchecked: String) { rawValue = unchecked }
    public static func < (a: GroupID, b: GroupID) -> Bool { a.rawValue < b.rawValue }
    public var description: String { rawValue }
}

/// A member of a consumer group (also a REST Proxy v2 consumer instance name): 1...249 bytes of
/// `[A-Za-z0-9._-]`.
public struct MemberID: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let rawValue: String
    public static let lengthMax = 249

    public static func validate(_ text: String, what: String = "member id") -> Result<MemberID, BrokerError> {
        if let problem = IdentifierText.problem(text, what: what, lengthMax: lengthMax) { return .failure(.badRequest(problem)) }
        return .success(MemberID(unchecked: text))
    }

    public init?(_ text: String) {
        guard case .success(let id) = MemberID.validate(text) else { return nil }
        self = id
    }

    private init(unchecked: String) { rawValue = unchecked }
    public static func < (a: MemberID, b: MemberID) -> Bool { a.rawValue < b.rawValue }
    public var description: String { rawValue }
}

enum IdentifierText {
    static func problem(_ text: String, what: String, lengthMax: Int) -> String? {
        if text.isEmpty { return "\(what) must not be empty" }
        if text.utf8.count > lengthMax { return "\(what) is \(text.utf8.count) bytes; at most \(lengthMax) are allowed" }
        // Clients and proxies remove dot segments from paths: such an id could never be addressed.
        if text == "." || text == ".." { return "\(what) must not be '.' or '..'" }
        for byte in text.utf8 where !TopicName.isAllowed(byte) {
            return "\(what) may contain only ASCII letters, digits, '.', '_' and '-'"
        }
        return nil
    }
}

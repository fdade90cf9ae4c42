/// BrokerError across the wire between brokers: a forwarded request's error reaches the client as
/// if the receiving broker had raised it (same status, same code, same message).
extension BrokerError {
    private enum Tag: Int8 {
        case badRequest = 1, invalidTopicName, invalidConfig, unknownTopic, unknownPartition, notFound, topicExists
        case conflict, offsetOutOfRange, payloadTooLarge, unsupportedMediaType, notAcceptable, unprocessable
        case overloaded, unavailable, notLeader, notEnoughReplicas, storage, shuttingDown
        case unknownGroup, unknownMember, staleGeneration, illegalState
    }

    public func encode(into w: inout ByteWriter) {
        func text(_ tag: Tag, _ s: String) {
            w.int8(tag.rawValue)
            w.sizedString(s)
        }
        switch self {
        case .badRequest(let m): text(.badRequest, m)
        case .invalidTopicName(let m): text(.invalidTopicName, m)
        case .invalidConfig(let m): text(.invalidConfig, m)
        case .unknownTopic(let m): text(.unknownTopic, m)
        case .unknownPartition(let t, let p, let n):
            text(.unknownPartition, t)
            w.int32(p)
            w.int32(n)
        case .notFound(let m): text(.notFound, m)
        case .topicExists(let m): text(.topicExists, m)
        case .conflict(let m): text(.conflict, m)
        case .offsetOutOfRange(let r, let s, let e):
            w.int8(Tag.offsetOutOfRange.rawValue)
            w.int64(r)
            w.int64(s)
            w.int64(e)
        case .payloadTooLarge(let m): text(.payloadTooLarge, m)
        case .unsupportedMediaType(let m): text(.unsupportedMediaType, m)
        case .notAcceptable(let m): text(.notAcceptable, m)
        case .unprocessable(let m): text(.unprocessable, m)
        case .overloaded(let m): text(.overloaded, m)
        case .unavailable(let m): text(.unavailable, m)
        case .notLeader(let m, let leader):
            text(.notLeader, m)
            w.int32(leader?.rawValue ?? -1)
        case .notEnoughReplicas(let m): text(.notEnoughReplicas, m)
        case .storage(let m): text(.storage, m)
        case .shuttingDown: w.int8(Tag.shuttingDown.rawValue)
        case .unknownGroup(let m): text(.unknownGroup, m)
        case .unknownMember(let m): text(.unknownMember, m)
        case .staleGeneration(let m): text(.staleGeneration, m)
        case .illegalState(let m): text(.illegalState, m)
        }
    }

    public static func decode(from r: inout ByteReader) throws(DecodeError) -> BrokerError {
        guard let tag = Tag(rawValue: try r.int8()) else { throw DecodeError("unknown error tag") }
        switch tag {
        case .badRequest: return .badRequest(try r.sizedString())
        case .invalidTopicName: return .invalidTopicName(try r.sizedString())
        case .invalidConfig: return .invalidConfig(try r.sizedString())
        case .unknownTopic: return .unknownTopic(try r.sizedString())
        case .unknownPartition: return .unknownPartition(topic: try r.sizedString(), partition: try r.int32(), partitionCount: try r.int32())
        case .notFound: return .notFound(try r.sizedString())
        case .topicExists: return .topicExists(try r.sizedString())
        case .conflict: return .conflict(try r.sizedString())
        case .offsetOutOfRange: return .offsetOutOfRange(requested: try r.int64(), logStart: try r.int64(), logEnd: try r.int64())
        case .payloadTooLarge: return .payloadTooLarge(try r.sizedString())
        case .unsupportedMediaType: return .unsupportedMediaType(try r.sizedString())
        case .notAcceptable: return .notAcceptable(try r.sizedString())
        case .unprocessable: return .unprocessable(try r.sizedString())
        case .overloaded: return .overloaded(try r.sizedString())
        case .unavailable: return .unavailable(try r.sizedString())
        case .notLeader:
            let m = try r.sizedString()
            let leader = try r.int32()
            return .notLeader(m, leader: leader < 0 ? nil : NodeID(leader))
        case .notEnoughReplicas: return .notEnoughReplicas(try r.sizedString())
        case .storage: return .storage(try r.sizedString())
        case .shuttingDown: return .shuttingDown
        case .unknownGroup: return .unknownGroup(try r.sizedString())
        case .unknownMember: return .unknownMember(try r.sizedString())
        case .staleGeneration: return .staleGeneration(try r.sizedString())
        case .illegalState: return .illegalState(try r.sizedString())
        }
    }
}

extension ByteWriter {
    /// A UTF-8 string with an int32 length prefix.
    public mutating func sizedString(_ s: String) {
        let utf8 = Array(s.utf8)
        int32(Int32(utf8.count))
        append(utf8)
    }
}

extension ByteReader {
    /// Reads what `ByteWriter.sizedString` wrote. Length is checked against the remaining bytes.
    public mutating func sizedString() throws(DecodeError) -> String {
        let n = Int(try int32())
        guard n >= 0, n <= remaining else { throw DecodeError("string length \(n) out of range") }
        return String(decoding: try bytes(n), as: UTF8.self)
    }
}

/// Operating errors a client can cause or see. Each maps to an HTTP status and a five-digit
/// `error_code` whose first three digits are the status (Confluent REST Proxy's convention), so
/// programs written for REST Proxy recognise them. Broken invariants are not errors: they crash.
public enum BrokerError: Error, Equatable, Sendable, CustomStringConvertible {
    case badRequest(String)
    case invalidTopicName(String)
    case invalidConfig(String)
    case unknownTopic(String)
    case unknownPartition(topic: String, partition: Int32, partitionCount: Int32)
    case notFound(String)
    case topicExists(String)
    case conflict(String)
    case offsetOutOfRange(requested: Int64, logStart: Int64, logEnd: Int64)
    case payloadTooLarge(String)
    case unsupportedMediaType(String)
    case notAcceptable(String)
    case unprocessable(String)
    case overloaded(String)
    case unavailable(String)
    /// This broker's replica of the partition is not (or no longer) its leader. `leader` is the
    /// replica it believes leads, if any: a forwarder retries there.
    case notLeader(String, leader: NodeID?)
    /// Fewer in-sync replicas than the topic's `min.insync.replicas`: acks=all is refused.
    case notEnoughReplicas(String)
    /// Consumer groups: the group, or the member (a REST Proxy v2 consumer instance), does not exist.
    case unknownGroup(String)
    case unknownMember(String)
    /// A commit or poll that carries a generation older than the group's (it rebalanced since).
    case staleGeneration(String)
    /// A request that does not fit the member's or group's state (REST Proxy's 40903: subscription
    /// and manual assignment mixed; a group with members cannot be reset or deleted).
    case illegalState(String)
    case storage(String)
    case shuttingDown

    public var httpStatus: Int {
        switch self {
        case .badRequest, .invalidTopicName: 400
        case .unknownTopic, .unknownPartition, .notFound, .unknownGroup, .unknownMember: 404
        case .notAcceptable: 406
        case .topicExists, .conflict, .staleGeneration, .illegalState: 409
        case .payloadTooLarge: 413
        case .unsupportedMediaType: 415
        case .offsetOutOfRange: 416
        case .invalidConfig, .unprocessable: 422
        case .overloaded: 429
        case .storage: 500
        case .unavailable, .notLeader, .notEnoughReplicas, .shuttingDown: 503
        }
    }

    public var errorCode: Int {
        switch self {
        case .badRequest: 40001
        case .invalidTopicName: 40002
        case .unknownTopic: 40401
        case .unknownPartition: 40402
        case .unknownMember: 40403
        case .notFound: 40404
        case .unknownGroup: 40405
        case .notAcceptable: 40601
        case .topicExists: 40901
        case .conflict: 40902
        case .illegalState: 40903
        case .staleGeneration: 40904
        case .payloadTooLarge: 41301
        case .unsupportedMediaType: 41501
        case .offsetOutOfRange: 41601
        case .invalidConfig: 42204
        case .unprocessable: 42201
        case .overloaded: 42901
        case .storage: 50001
        case .unavailable: 50302
        case .shuttingDown: 50303
        case .notLeader: 50304
        case .notEnoughReplicas: 50305
        }
    }

    public var message: String {
        switch self {
        case .badRequest(let m), .invalidTopicName(let m), .invalidConfig(let m), .notFound(let m),
            .conflict(let m), .payloadTooLarge(let m), .unsupportedMediaType(let m), .notAcceptable(let m),
            .unprocessable(let m), .overloaded(let m), .unavailable(let m), .storage(let m),
            .notLeader(let m, _), .notEnoughReplicas(let m), .unknownGroup(let m), .unknownMember(let m),
            .staleGeneration(let m), .illegalState(let m):
            m
        case .unknownTopic(let t): "topic '\(t)' does not exist"
        case .unknownPartition(let t, let p, let n):
            "partition \(p) of topic '\(t)' does not exist (the topic has partitions 0...\(n - 1))"
        case .topicExists(let t): "topic '\(t)' already exists"
        case .offsetOutOfRange(let requested, let start, let end):
            "offset \(requested) is out of range: valid offsets are \(start)...\(end) (log start offset \(start), log end offset \(end))"
        case .shuttingDown: "the broker is shutting down"
        }
    }

    public var description: String { "\(errorCode) \(message)" }
}

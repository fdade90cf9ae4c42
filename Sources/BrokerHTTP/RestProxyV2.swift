import BrokerModel
import BrokerRuntime
import MicroHTTP

/// The Kafka REST Proxy v2 dialect beside `/v1`, so programs written for Confluent's REST Proxy or
/// the Strimzi HTTP bridge work against Petrel unchanged: metadata (`/`, `/brokers`, `/topics...`),
/// produce (`POST /topics/{t}`, `/topics/{t}/partitions/{p}`) and Strimzi's `POST /admin/topics`.
/// Consumer instances (`/consumers/...`) are group members: RestProxyV2Consumers.swift.
///
/// Everything goes through the same `Broker` façade calls as `/v1`; only the shapes differ. Answers
/// (errors included) are `application/vnd.kafka.v2+json` unless the client asked for plain JSON.
enum RestProxyV2 {
    static let mediaType = "application/vnd.kafka.v2+json"

    /// The answer's Content-Type: `application/json` when the client accepts that and not the
    /// vendor type (curl without `Accept`, `*/*`, or the vendor type itself get the vendor type).
    static func responseContentType(accept: String?) -> String {
        guard let accept, !accept.isEmpty else { return mediaType }
        let lowered = accept.lowercased()
        if lowered.contains("application/vnd.kafka") || lowered.contains("*/*") { return mediaType }
        return lowered.contains(MediaType.json) ? MediaType.json : mediaType
    }

    static func response(_ status: Int, _ body: [UInt8], contentType: String) -> HTTPResponse {
        HTTPResponse(status: status, headers: [(name: "Content-Type", value: contentType)], body: body)
    }
}

/// A v2 error: a `BrokerError`'s status and code, or one of Confluent's own codes that Petrel's
/// native API does not use (42203: the JSON body did not convert into records).
struct RestProxyV2Failure: Error, Equatable {
    var status: Int
    var errorCode: Int
    var message: String

    init(status: Int, errorCode: Int, message: String) {
        self.status = status
        self.errorCode = errorCode
        self.message = message
    }

    init(_ error: BrokerError) {
        self.init(status: error.httpStatus, errorCode: error.errorCode, message: error.message)
    }

    /// Confluent's JSON_CONVERSION (422, 42203): well-formed JSON whose records are not what the
    /// embedded format needs (bad base64, a number where text is expected, an unknown field).
    static func conversion(_ message: String) -> Self {
        Self(status: 422, errorCode: 42203, message: "Conversion of JSON to records failed: \(message)")
    }

    func response(contentType: String) -> HTTPResponse {
        var response = RestProxyV2.response(status, Render.error(code: errorCode, message: message), contentType: contentType)
        if status == 429 || status == 503 { response.headers.append((name: "Retry-After", value: "1")) }
        return response
    }
}

extension BrokerService {
    /// Serves one v2 operation. Never throws: every failure is answered as a v2 error. A JSON body
    /// or Content-Type on a GET is ignored (clients send them).
    func restProxyV2(_ operation: Operation, _ params: [String: String], _ request: HTTPRequest, _ responder: Responder) {
        let contentType = RestProxyV2.responseContentType(accept: request.header("Accept"))
        let answer = { (status: Int, body: [UInt8]) in responder.respond(RestProxyV2.response(status, body, contentType: contentType)) }
        do {
            switch operation {
            case .v2GetRoot:
                answer(200, Array("{}".utf8))
            case .v2ListBrokers:
                answer(200, RenderV2.brokers(broker.describeCluster().brokers.map(\.id)))
            case .v2ListTopics:
                answer(200, RenderV2.topicNames(broker.listTopics(includeInternal: false)))
            case .v2GetTopic:
                answer(200, RenderV2.topic(try broker.describeTopic(try Self.topic(params))))
            case .v2ListPartitions:
                answer(200, RenderV2.partitions(try broker.describeTopic(try Self.topic(params)).partitions))
            case .v2GetPartition:
                var w = JSONWriter()
                RenderV2.partition(try partitionDescription(params), into: &w)
                answer(200, w.bytes)
            case .v2GetPartitionOffsets:
                let offsets = try broker.offsets(topic: try Self.topic(params), partition: try Self.partition(params))
                answer(200, RenderV2.offsets(offsets))
            case .v2ProduceToTopic:
                try v2Produce(topic: try Self.topic(params), partition: nil, request, contentType: contentType, responder)
            case .v2ProduceToPartition:
                let partition = try partitionDescription(params).partition
                try v2Produce(topic: try Self.topic(params), partition: partition, request, contentType: contentType, responder)
            case .v2CreateTopic:
                try v2CreateTopic(request, contentType: contentType, responder)
            default:
                preconditionFailure("\(operation) is not a REST Proxy v2 operation")
            }
        } catch let failure as RestProxyV2Failure {
            responder.respond(failure.response(contentType: contentType))
        } catch let error as BrokerError {
            responder.respond(RestProxyV2Failure(error).response(contentType: contentType))
        } catch {
            responder.respond(RestProxyV2Failure(.storage("unexpected error: \(error)")).response(contentType: contentType))
        }
    }

    /// Produce, the v2 way: 200 with one `offsets` entry per record. A record whose explicit
    /// partition the topic does not have fails alone (its entry carries `error_code` 40402 and
    /// `error`); the others are written. Strimzi's `?async=true` answers 204 once the records are
    /// validated and handed to the log (acks=0: nothing is awaited); there a bad record fails the
    /// whole request, since a 204 has no per-record answer.
    func v2Produce(topic: TopicName, partition: PartitionID?, _ request: HTTPRequest, contentType: String, _ responder: Responder) throws {
        let format = try RestProxyV2Produce.format(contentType: request.header("Content-Type"))
        let records = try RestProxyV2Produce.records(body: request.body, format: format, partition: partition)
        let isAsync = try Self.flag(request, "async")
        let partitionCount = Int32(try broker.describeTopic(topic).partitions.count)
        var results = [RenderV2.Placement?](repeating: nil, count: records.count)
        var accepted: [(index: Int, record: ProduceRecord)] = []
        for (i, r) in records.enumerated() {
            if let p = r.partition, p.rawValue >= partitionCount {
                let error = BrokerError.unknownPartition(topic: topic.rawValue, partition: p.rawValue, partitionCount: partitionCount)
                if isAsync { throw error }
                results[i] = .failed(partition: p, error: error)
            } else {
                accepted.append((i, r))
            }
        }
        if accepted.isEmpty {
            responder.respond(RestProxyV2.response(200, RenderV2.produce(results), contentType: contentType))
            return
        }
        let done = results
        let indices = accepted.map(\.index)
        broker.produce(topic: topic, records: accepted.map(\.record), acks: isAsync ? .none : .all) { result in
            switch result {
            case .success(let placements):
                if isAsync { return responder.respond(HTTPResponse(status: 204)) }
                var all = done
                for (k, index) in indices.enumerated() { all[index] = .written(placements[k]) }
                responder.respond(RestProxyV2.response(200, RenderV2.produce(all), contentType: contentType))
            case .failure(let error):
                responder.respond(RestProxyV2Failure(error).response(contentType: contentType))
            }
        }
    }

    /// Strimzi's `POST /admin/topics` `{"topic_name","partitions_count","replication_factor"}`: the
    /// same façade call as `POST /v1/topics` (in a cluster it waits for the controller). 201 with the
    /// topic as `GET /topics/{t}` shows it.
    func v2CreateTopic(_ request: HTTPRequest, contentType: String, _ responder: Responder) throws {
        let body = try Self.jsonObject(request)
        for (key, _) in body.objectValue ?? [] where !["topic_name", "partitions_count", "replication_factor"].contains(key) {
            throw BrokerError.badRequest("unknown field \"\(key)\"; a topic takes \"topic_name\", \"partitions_count\" and \"replication_factor\"")
        }
        guard let nameText = body["topic_name"]?.stringValue else { throw BrokerError.badRequest("\"topic_name\" (a string) is required") }
        let name = try TopicName.validate(nameText).get()
        let partitions = try Self.v2Integer(body["partitions_count"], "partitions_count", range: Int64(Int32.min)...Int64(Int32.max)) ?? 1
        let replicationFactor = try Self.v2Integer(body["replication_factor"], "replication_factor", range: -1...999)
        broker.createTopic(name: name, partitions: Int32(partitions), replicationFactor: replicationFactor.flatMap { $0 == -1 ? nil : Int($0) }, configs: []) { result in
            switch result {
            case .success(let description):
                var response = RestProxyV2.response(201, RenderV2.topic(description), contentType: contentType)
                response.headers.append((name: "Location", value: "/topics/\(name.rawValue)"))
                responder.respond(response)
            case .failure(let error):
                responder.respond(RestProxyV2Failure(error).response(contentType: contentType))
            }
        }
    }

    /// An optional integer field (absent or null = nil); the broker checks the value's meaning.
    static func v2Integer(_ node: JSONNode?, _ name: String, range: ClosedRange<Int64>) throws(BrokerError) -> Int64? {
        guard let node, !node.isNull else { return nil }
        guard let v = node.int64Value, range.contains(v) else { throw .badRequest("\"\(name)\" must be an integer") }
        return v
    }
}

/// JSON shapes of the v2 dialect.
enum RenderV2 {
    /// One produce result: where a record went, or why it was not written.
    enum Placement {
        case written(RecordPlacement)
        case failed(partition: PartitionID, error: BrokerError)
    }

    static func brokers(_ ids: [NodeID]) -> [UInt8] {
        var w = JSONWriter()
        w.raw("{\"brokers\":")
        Render.nodes(ids, into: &w)
        w.raw("}")
        return w.bytes
    }

    static func topicNames(_ names: [TopicName]) -> [UInt8] {
        var w = JSONWriter()
        w.raw("[")
        for (i, name) in names.enumerated() {
            if i > 0 { w.raw(",") }
            w.string(name.rawValue)
        }
        w.raw("]")
        return w.bytes
    }

    static func topic(_ t: TopicDescription) -> [UInt8] {
        var w = JSONWriter(capacity: 256 + t.partitions.count * 120)
        w.raw("{\"name\":")
        w.string(t.name.rawValue)
        w.raw(",\"configs\":")
        Render.configs(t.config, into: &w)
        w.raw(",\"partitions\":")
        partitions(t.partitions, into: &w)
        w.raw("}")
        return w.bytes
    }

    static func partitions(_ list: [PartitionDescription]) -> [UInt8] {
        var w = JSONWriter(capacity: 64 + list.count * 120)
        partitions(list, into: &w)
        return w.bytes
    }

    static func partitions(_ list: [PartitionDescription], into w: inout JSONWriter) {
        w.raw("[")
        for (i, p) in list.enumerated() {
            if i > 0 { w.raw(",") }
            partition(p, into: &w)
        }
        w.raw("]")
    }

    /// `{"partition","leader","replicas":[{"broker","leader","in_sync"}]}`.
    static func partition(_ p: PartitionDescription, into w: inout JSONWriter) {
        w.raw("{\"partition\":")
        w.int(Int64(p.partition.rawValue))
        w.raw(",\"leader\":")
        w.int(Int64(p.leader.rawValue))
        w.raw(",\"replicas\":[")
        for (i, r) in p.replicas.enumerated() {
            if i > 0 { w.raw(",") }
            w.raw("{\"broker\":")
            w.int(Int64(r.rawValue))
            w.raw(",\"leader\":")
            w.bool(r == p.leader)
            w.raw(",\"in_sync\":")
            w.bool(p.inSyncReplicas.contains(r))
            w.raw("}")
        }
        w.raw("]}")
    }

    /// The end offset is the high watermark: what a consumer can read.
    static func offsets(_ o: PartitionOffsets) -> [UInt8] {
        var w = JSONWriter()
        w.raw("{\"beginning_offset\":")
        w.int(o.logStartOffset.rawValue)
        w.raw(",\"end_offset\":")
        w.int(o.highWatermark.rawValue)
        w.raw("}")
        return w.bytes
    }

    /// `{"key_schema_id":null,"value_schema_id":null,"offsets":[...]}`, one entry per record in
    /// request order. Every entry is set by the caller (nil only if a caller forgot one: a bug).
    static func produce(_ results: [Placement?]) -> [UInt8] {
        var w = JSONWriter(capacity: 96 + results.count * 64)
        w.raw("{\"key_schema_id\":null,\"value_schema_id\":null,\"offsets\":[")
        for (i, result) in results.enumerated() {
            guard let result else { preconditionFailure("produce result \(i) was never set") }
            if i > 0 { w.raw(",") }
            switch result {
            case .written(let p):
                w.raw("{\"partition\":")
                w.int(Int64(p.partition.rawValue))
                w.raw(",\"offset\":")
                if let o = p.offset { w.int(o.rawValue) } else { w.raw("null") }
                w.raw(",\"error_code\":null,\"error\":null}")
            case .failed(let partition, let error):
                w.raw("{\"partition\":")
                w.int(Int64(partition.rawValue))
                w.raw(",\"offset\":null,\"error_code\":")
                w.int(error.errorCode)
                w.raw(",\"error\":")
                w.string(error.message)
                w.raw("}")
            }
        }
        w.raw("]}")
        return w.bytes
    }
}

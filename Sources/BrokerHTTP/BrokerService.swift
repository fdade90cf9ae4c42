import BrokerModel
import BrokerRuntime
import Logging
import MicroHTTP
import Synchronization

/// The HTTP face of one broker: validates each request at the edge, turns it into typed values,
/// calls the `Broker` façade, renders the answer. Knows nothing about files or threads.
public final class BrokerService: Sendable {
    let broker: Broker
    let logger: Logger
    /// SSE and NDJSON streams open now (bounded by `Limits.streamsMax`).
    let openStreams = Atomic<Int>(0)

    public init(broker: Broker, logger: Logger = Logger(label: "petrel.http")) {
        self.broker = broker
        self.logger = logger
    }

    /// The MicroHTTP handler.
    public var handler: HTTPHandler { { [self] request, responder in handle(request, responder) } }

    /// Renders errors produced by the HTTP server itself (413, malformed requests, shutdown).
    public static let errorBody: @Sendable (Int, String) -> (contentType: String, body: [UInt8]) = { status, message in
        ("application/json", Render.error(code: status * 100 + 1, message: message))
    }

    func handle(_ request: HTTPRequest, _ responder: Responder) {
        switch Router.match(method: request.method, segments: request.pathSegments) {
        case .notFound:
            responder.respond(Self.failure(.notFound("no route for \(request.method) \(request.path)")))
        case .methodNotAllowed(let allowed):
            var response = Self.json(405, Self.errorBody(405, "method \(request.method) is not allowed on \(request.path); allowed: \(allowed.joined(separator: ", "))").body)
            response.headers.append((name: "Allow", value: allowed.joined(separator: ", ")))
            responder.respond(response)
        case .found(let operation, let params):
            do throws(BrokerError) {
                try dispatch(operation, params, request, responder)
            } catch {
                responder.respond(Self.failure(error))
            }
        }
    }

    func dispatch(_ operation: Operation, _ params: [String: String], _ request: HTTPRequest, _ responder: Responder) throws(BrokerError) {
        switch operation {
        case .getHealth:
            responder.respond(Self.json(200, Array("{\"status\":\"ok\"}".utf8)))
        case .getReadiness:
            if broker.isReady {
                responder.respond(Self.json(200, Array("{\"status\":\"ready\"}".utf8)))
            } else {
                responder.respond(Self.failure(.unavailable("the broker is not ready")))
            }
        case .getMetrics:
            responder.respond(HTTPResponse(status: 200, headers: [(name: "Content-Type", value: "text/plain; version=0.0.4")], body: Array(metricsText().utf8)))
        case .getCluster:
            responder.respond(Self.json(200, Render.cluster(broker.describeCluster())))
        case .listTopics:
            let names = broker.listTopics(includeInternal: request.queryValue("internal") == "true")
            let summaries = names.compactMap { name -> (TopicName, Int)? in
                guard let d = try? broker.describeTopic(name) else { return nil }
                return (name, d.partitions.count)
            }
            responder.respond(Self.json(200, Render.topicSummaries(summaries)))
        case .createTopic:
            let body = try Self.jsonObject(request)
            guard let nameNode = body["name"], let nameText = nameNode.stringValue else { throw .badRequest("\"name\" (a string) is required") }
            let name = try TopicName.validate(nameText).get()
            var partitions: Int32 = 1
            if let p = body["partitions"] {
                guard let v = p.int64Value, v >= Int64(Int32.min), v <= Int64(Int32.max) else { throw .badRequest("\"partitions\" must be an integer") }
                partitions = Int32(v)
            }
            var replicationFactor: Int?
            if let rf = body["replication_factor"], !rf.isNull {
                guard let v = rf.int64Value, v >= -1, v < 1000 else { throw .badRequest("\"replication_factor\" must be an integer") }
                replicationFactor = v == -1 ? nil : Int(v)
            }
            let configs = try Self.configs(body["configs"])
            broker.createTopic(name: name, partitions: partitions, replicationFactor: replicationFactor, configs: configs) { result in
                switch result {
                case .success(let description):
                    var response = Self.json(201, Render.topic(description))
                    response.headers.append((name: "Location", value: "/v1/topics/\(name.rawValue)"))
                    responder.respond(response)
                case .failure(let error): responder.respond(Self.failure(error))
                }
            }
        case .getTopic:
            let topic = try Self.topic(params)
            responder.respond(Self.json(200, Render.topic(try broker.describeTopic(topic))))
        case .updateTopic:
            let topic = try Self.topic(params)
            let body = try Self.jsonObject(request)
            for (key, _) in body.objectValue ?? [] where key != "configs" && key != "partitions" {
                throw .badRequest("unknown field \"\(key)\"; a topic update takes \"configs\" and \"partitions\"")
            }
            var partitions: Int32?
            if let p = body["partitions"] {
                guard let v = p.int64Value, v >= 0, v <= Int64(Int32.max) else { throw .badRequest("\"partitions\" must be a non-negative integer") }
                partitions = Int32(v)
            }
            let configs = try Self.configs(body["configs"])
            broker.alterTopic(topic, configs: configs, partitions: partitions) { result in
                switch result {
                case .success(let description): responder.respond(Self.json(200, Render.topic(description)))
                case .failure(let error): responder.respond(Self.failure(error))
                }
            }
        case .deleteTopic:
            broker.deleteTopic(try Self.topic(params)) { result in
                switch result {
                case .success: responder.respond(HTTPResponse(status: 204))
                case .failure(let error): responder.respond(Self.failure(error))
                }
            }
        case .produceRecords:
            try produce(params, request, responder)
        case .reassignPartition:
            let topic = try Self.topic(params)
            let partition = try Self.partition(params)
            let body = try Self.jsonObject(request)
            for (key, _) in body.objectValue ?? [] where key != "replicas" {
                throw .badRequest("unknown field \"\(key)\"; a reassignment takes \"replicas\"")
            }
            guard let list = body["replicas"]?.arrayValue, !list.isEmpty, list.count <= 32 else {
                throw .badRequest("\"replicas\" must be a non-empty array of at most 32 broker ids")
            }
            var replicas: [NodeID] = []
            for item in list {
                guard let v = item.int64Value, v >= 0, v <= Int64(Int32.max) else { throw .badRequest("\"replicas\" must hold broker ids (non-negative integers)") }
                replicas.append(NodeID(Int32(v)))
            }
            broker.reassignPartition(topic: topic, partition: partition, replicas: replicas) { result in
                switch result {
                case .success(let d): responder.respond(Self.json(202, Render.topic(d)))
                case .failure(let e): responder.respond(Self.failure(e))
                }
            }
        case .cancelReassignment:
            broker.cancelReassignment(topic: try Self.topic(params), partition: try Self.partition(params)) { result in
                switch result {
                case .success(let d): responder.respond(Self.json(200, Render.topic(d)))
                case .failure(let e): responder.respond(Self.failure(e))
                }
            }
        case .rebalanceReplicas:
            broker.rebalanceReplicas { [broker] result in
                switch result {
                case .success: responder.respond(Self.json(202, Render.cluster(broker.describeCluster())))
                case .failure(let e): responder.respond(Self.failure(e))
                }
            }
        case .decommissionBroker, .unregisterBroker:
            guard let text = params["broker"], let id = Int32(text), id >= 0 else { throw .badRequest("broker must be a broker id (a non-negative integer)") }
            let answer: @Sendable (Result<Void, BrokerError>) -> Void = { [broker] result in
                switch result {
                case .success: responder.respond(operation == .unregisterBroker ? HTTPResponse(status: 204) : Self.json(202, Render.cluster(broker.describeCluster())))
                case .failure(let e): responder.respond(Self.failure(e))
                }
            }
            if operation == .decommissionBroker { broker.decommissionBroker(NodeID(id), completion: answer) } else { broker.unregisterBroker(NodeID(id), completion: answer) }
        case .getPartition:
            var w = JSONWriter()
            Render.partition(try partitionDescription(params), into: &w)
            responder.respond(Self.json(200, w.bytes))
        case .readRecords:
            try read(params, request, responder)
        // WebSocket sessions (hooks; the sessions live in WebSocketProduce.swift and WebSocketConsume.swift).
        case .produceWebSocket:
            try openProduceWebSocket(params, request, responder)
        case .consumeWebSocket:
            try openConsumeWebSocket(params, request, responder)
        case .v2GetRoot, .v2ListBrokers, .v2ListTopics, .v2GetTopic, .v2ListPartitions, .v2GetPartition, .v2GetPartitionOffsets,
            .v2ProduceToTopic, .v2ProduceToPartition, .v2CreateTopic:
            restProxyV2(operation, params, request, responder)
        case .groupWebSocket:
            try openGroupWebSocket(params, request, responder)
        case .getPartitionOffsets:
            let topic = try Self.topic(params)
            let partition = try Self.partition(params)
            if let text = request.queryValue("timestamp") {
                guard let ts = Int64(text) else { throw .badRequest("timestamp must be an integer (milliseconds since the epoch), got '\(text)'") }
                let offset = try broker.offset(topic: topic, partition: partition, forTimestamp: ts)
                responder.respond(Self.json(200, Render.timestampLookup(topic: topic, partition: partition, timestamp: ts, offset: offset)))
            } else {
                responder.respond(Self.json(200, Render.offsets(topic: topic, partition: partition, try broker.offsets(topic: topic, partition: partition))))
            }
        case .listGroups, .describeGroup, .deleteGroup, .joinGroup, .leaveGroup, .heartbeatGroupMember, .pollGroupRecords,
             .commitGroupOffsets, .getGroupOffsets, .resetGroupOffsets:
            try dispatchGroup(operation, params, request, responder)
        case .v2CreateConsumer, .v2DeleteConsumer, .v2Subscribe, .v2GetSubscription, .v2Unsubscribe,
             .v2Assign, .v2GetAssignments, .v2Records, .v2CommitOffsets, .v2GetOffsets,
             .v2Seek, .v2SeekBeginning, .v2SeekEnd:
            try dispatchV2Consumer(operation, params, request, responder)
        }
    }

    // MARK: produce and read

    func produce(_ params: [String: String], _ request: HTTPRequest, _ responder: Responder) throws(BrokerError) {
        let topic = try Self.topic(params)
        var acks = Acks.all
        if let text = request.queryValue("acks") {
            guard let a = Acks(parameter: text) else { throw .badRequest("acks must be 0, 1 or all, got '\(text)'") }
            acks = a
        }
        var query = request.query
        if let key = request.header("Petrel-Key"), request.queryValue("key") == nil { query.append((name: "key", value: key)) }
        let records = try ProduceParsing.records(body: request.body, contentType: request.header("Content-Type"), query: query)
        let chosenAcks = acks
        broker.produce(topic: topic, records: records, acks: acks) { result in
            switch result {
            case .success(let placements):
                responder.respond(Self.json(chosenAcks == .none ? 202 : 200, Render.produce(topic: topic, placements: placements)))
            case .failure(let error):
                responder.respond(Self.failure(error))
            }
        }
    }

    func read(_ params: [String: String], _ request: HTTPRequest, _ responder: Responder) throws(BrokerError) {
        let topic = try Self.topic(params)
        let partition = try Self.partition(params)
        let limits = broker.configuration.limits
        var offset = try Self.offset(request)
        let maxRecords = try Self.integer(request, "max_records", default: 500, range: 1...limits.readRecordsMax)
        let maxBytes = try Self.integer(request, "max_bytes", default: 1 << 20, range: 1...limits.readBytesMax)
        let wait = try Self.integer(request, "wait_ms", default: 0, range: 0...limits.waitMillisecondsMax)
        let format = try Self.format(request)
        let accept = request.header("Accept") ?? ""
        if accept.contains("text/event-stream") || accept.contains(MediaType.ndjson) {
            let kind: PartitionStream.Kind = accept.contains("text/event-stream") ? .sse : .ndjson
            if kind == .sse, let lastID = request.header("Last-Event-ID"), !lastID.isEmpty {
                // EventSource reconnects with the id of the last record it received: resume right after it.
                guard let id = Int64(lastID.trimmingSpaces()), id >= -1, id < Int64.max else {
                    throw .badRequest("Last-Event-ID must be a record offset, got '\(lastID)'")
                }
                offset = .exact(Offset(id + 1))
            }
            try startStream(kind, topic: topic, partition: partition, offset: offset, request: request, format: format,
                            batchLimit: maxRecords, maxBytes: maxBytes, responder: responder)
            return
        }
        let readRequest = ReadRequest(topic: topic, partition: partition, offset: offset, maxRecords: maxRecords, maxBytes: maxBytes, waitMilliseconds: wait)
        let chosenFormat = format
        let local = try Self.flag(request, "local")
        broker.read(readRequest, local: local) { result in
            switch result {
            case .success(let read):
                do {
                    responder.respond(Self.json(200, try Render.read(read, format: chosenFormat)))
                } catch {
                    responder.respond(Self.failure(.storage("a stored batch could not be decoded: \(error)")))
                }
            case .failure(let error):
                responder.respond(Self.failure(error))
            }
        }
    }

    func startStream(_ kind: PartitionStream.Kind, topic: TopicName, partition: PartitionID, offset: OffsetSpec, request: HTTPRequest,
                     format: ValueFormat, batchLimit: Int, maxBytes: Int, responder: Responder) throws(BrokerError) {
        let limits = broker.configuration.limits
        let flushSeconds = try Self.integer(request, "batch_flush_timeout", default: 15, range: 1...3600)
        let timeoutSeconds = try Self.integer(request, "stream_timeout", default: 0, range: 0...limits.streamTimeoutSecondsMax)
        let streamLimit = try Self.integer(request, "stream_limit", default: 0, range: 0...Int(Int32.max))
        let batchLimit = try Self.integer(request, "batch_limit", default: batchLimit, range: 1...limits.readRecordsMax)
        try checkStart(offset, topic: topic, partition: partition)
        guard openStreams.wrappingAdd(1, ordering: .relaxed).newValue <= limits.streamsMax else {
            openStreams.wrappingSubtract(1, ordering: .relaxed)
            throw .overloaded("too many open streams (\(limits.streamsMax)); retry later")
        }
        let headers: [(name: String, value: String)] = kind == .sse
            ? [(name: "Content-Type", value: "text/event-stream"), (name: "Cache-Control", value: "no-cache"), (name: "X-Accel-Buffering", value: "no")]
            : [(name: "Content-Type", value: MediaType.ndjson), (name: "Cache-Control", value: "no-cache")]
        let stream = responder.respondStreaming(status: 200, headers: headers, bufferBytesMax: limits.streamBufferBytes)
        stream.onClose { [self] in openStreams.wrappingSubtract(1, ordering: .relaxed) }
        // One read's records must fit the buffer even after JSON expansion (up to ~6x for escaped bytes).
        // Rendering is cut at half the stream buffer anyway; reading much more than that is wasted work.
        let batchBytes = min(maxBytes, limits.streamBufferBytes / 2)
        let settings = PartitionStream.Settings(
            batchLimit: batchLimit, batchMaxBytes: batchBytes, flushTimeoutMilliseconds: flushSeconds * 1000,
            streamTimeoutMilliseconds: timeoutSeconds * 1000, streamLimit: streamLimit, format: format)
        PartitionStream(broker: broker, topic: topic, partition: partition, start: offset, kind: kind, settings: settings,
                        stream: stream, bufferBytes: limits.streamBufferBytes).start()
    }

    // MARK: helpers

    static func json(_ status: Int, _ body: [UInt8]) -> HTTPResponse {
        HTTPResponse(status: status, headers: [(name: "Content-Type", value: "application/json")], body: body)
    }

    static func failure(_ error: BrokerError) -> HTTPResponse {
        var response = json(error.httpStatus, Render.error(error))
        if error.httpStatus == 429 || error.httpStatus == 503 { response.headers.append((name: "Retry-After", value: "1")) }
        return response
    }

    static func topic(_ params: [String: String]) throws(BrokerError) -> TopicName {
        try TopicName.validate(params["topic"] ?? "").get()
    }

    static func partition(_ params: [String: String]) throws(BrokerError) -> PartitionID {
        try ProduceParsing.partition(params["partition"] ?? "")
    }

    /// The path's partition as the broker describes it (404 40401 / 40402 when there is none).
    func partitionDescription(_ params: [String: String]) throws(BrokerError) -> PartitionDescription {
        let topic = try Self.topic(params)
        let partition = try Self.partition(params)
        let description = try broker.describeTopic(topic)
        guard let p = description.partitions.first(where: { $0.partition == partition }) else {
            throw .unknownPartition(topic: topic.rawValue, partition: partition.rawValue, partitionCount: Int32(description.partitions.count))
        }
        return p
    }

    /// Checks a stream's start offset before the stream or socket opens, so a bad one gets a plain
    /// JSON error (416 naming the valid range) instead of a stream that ends at once.
    func checkStart(_ offset: OffsetSpec, topic: TopicName, partition: PartitionID) throws(BrokerError) {
        let offsets = try broker.offsets(topic: topic, partition: partition)
        if case .exact(let o) = offset, o < offsets.logStartOffset || o > offsets.logEndOffset {
            throw .offsetOutOfRange(requested: o.rawValue, logStart: offsets.logStartOffset.rawValue, logEnd: offsets.logEndOffset.rawValue)
        }
    }

    /// `?offset=N|earliest|beginning|latest|end` (default earliest).
    static func offset(_ request: HTTPRequest) throws(BrokerError) -> OffsetSpec {
        guard let text = request.queryValue("offset") else { return .earliest }
        switch text {
        case "earliest", "beginning": return .earliest
        case "latest", "end": return .latest
        default:
            guard let o = Int64(text), o >= 0 else { throw .badRequest("offset must be a non-negative integer, 'earliest' or 'latest', got '\(text)'") }
            return .exact(Offset(o))
        }
    }

    /// `?format=text|json|binary` (default text).
    static func format(_ request: HTTPRequest) throws(BrokerError) -> ValueFormat {
        guard let text = request.queryValue("format") else { return .text }
        guard let f = ValueFormat(rawValue: text) else { throw .badRequest("format must be text, json or binary, got '\(text)'") }
        return f
    }

    /// `?name=true|false` (absent = false).
    static func flag(_ request: HTTPRequest, _ name: String) throws(BrokerError) -> Bool {
        switch request.queryValue(name) {
        case nil, "false": return false
        case "true": return true
        case let other?: throw .badRequest("\(name) must be true or false, got '\(other)'")
        }
    }

    static func integer(_ request: HTTPRequest, _ name: String, default value: Int, range: ClosedRange<Int>) throws(BrokerError) -> Int {
        guard let text = request.queryValue(name) else { return value }
        guard let v = Int(text), range.contains(v) else {
            throw .badRequest("\(name) must be an integer in \(range.lowerBound)...\(range.upperBound), got '\(text)'")
        }
        return v
    }

    static func jsonObject(_ request: HTTPRequest) throws(BrokerError) -> JSONNode {
        let media = MediaType(request.header("Content-Type"))
        // REST Proxy v2 clients send their vendor type on bodies without embedded data.
        guard media.essence == MediaType.json || media.essence == RestProxyV2.mediaType || media.essence.isEmpty || media.essence == MediaType.form else {
            throw .unsupportedMediaType("this operation takes application/json, got '\(request.header("Content-Type") ?? "")'")
        }
        let node: JSONNode
        do { node = try JSONParser.parse(request.body) } catch { throw .badRequest("request body is not valid JSON: \(error)") }
        guard node.objectValue != nil else { throw .badRequest("request body must be a JSON object, got \(node.typeName)") }
        return node
    }

    /// `configs` as `{"name": "value" | number}` or `[{"name": ..., "value": ...}]`.
    static func configs(_ node: JSONNode?) throws(BrokerError) -> [(String, String)] {
        guard let node, !node.isNull else { return [] }
        func text(_ v: JSONNode, _ name: String) throws(BrokerError) -> String {
            switch v.value {
            case .string(let s): return s
            case .number(let n): return n
            default: throw .badRequest("config '\(name)' must be a string or a number")
            }
        }
        if let members = node.objectValue {
            var out: [(String, String)] = []
            for (k, v) in members { out.append((k, try text(v, k))) }
            return out
        }
        if let items = node.arrayValue {
            var out: [(String, String)] = []
            for item in items {
                guard let name = item["name"]?.stringValue, let v = item["value"] else { throw .badRequest("each config needs \"name\" and \"value\"") }
                out.append((name, try text(v, name)))
            }
            return out
        }
        throw .badRequest("\"configs\" must be an object of name: value")
    }

    func metricsText() -> String {
        let cluster = broker.describeCluster()
        return """
            # HELP petrel_records_produced_total Records appended by produce requests.
            # TYPE petrel_records_produced_total counter
            petrel_records_produced_total \(broker.metrics.recordsProduced.load(ordering: .relaxed))
            # HELP petrel_records_read_total Records returned by reads.
            # TYPE petrel_records_read_total counter
            petrel_records_read_total \(broker.metrics.recordsRead.load(ordering: .relaxed))
            # HELP petrel_parked_requests Requests waiting for data or durability.
            # TYPE petrel_parked_requests gauge
            petrel_parked_requests \(broker.parkedRequests)
            # HELP petrel_topics Topics on this broker.
            # TYPE petrel_topics gauge
            petrel_topics \(cluster.topicCount)
            # HELP petrel_partitions Partitions on this broker.
            # TYPE petrel_partitions gauge
            petrel_partitions \(cluster.partitionCount)

            """
    }
}

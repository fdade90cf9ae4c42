import BrokerModel
import BrokerRuntime
import MicroHTTP

/// Kafka REST Proxy v2 consumer instances (`/consumers/{group}/instances/{instance}/...`), both the
/// Confluent and the Strimzi bridge variants, on the group machinery: an instance is a group member
/// named after the instance. It is created with an empty manual assignment and then subscribes
/// (the group rebalances) or is assigned partitions. Unlike either peer, any broker serves any
/// instance URL (requests go to the group's coordinator).
///
/// Per instance the dialect is remembered (in the member's properties): Confluent stores a
/// committed offset as "last consumed" + 1 and answers 200, Strimzi stores it as given and answers
/// 204; Strimzi is recognised by its typed `enable.auto.commit` or its other keys.
extension BrokerService {
    enum V2Dialect: String { case confluent, strimzi }

    typealias V2Format = RestProxyV2Produce.Format

    static let v2MediaType = RestProxyV2.mediaType
    static let v2Properties = (format: "v2.format", dialect: "v2.dialect", timeout: "v2.request_timeout_ms")

    func dispatchV2Consumer(_ operation: Operation, _ params: [String: String], _ request: HTTPRequest, _ responder: Responder) throws(BrokerError) {
        let group = try Self.group(params)
        if operation == .v2CreateConsumer { return try createV2Consumer(group, request, responder) }
        let instance = try MemberID.validate(params["instance"] ?? "", what: "consumer instance name").get()
        switch operation {
        case .v2DeleteConsumer:
            broker.leaveGroup(group, member: instance) { result in responder.respond(Self.v2NoContent(result)) }
        case .v2Subscribe:
            let body = try Self.v2Body(request)
            var topics = try Self.topicList(body["topics"], "topics", limit: broker.configuration.groupLimits.topicsPerMemberMax)
            if let pattern = body["topic_pattern"]?.stringValue {
                guard topics.isEmpty else { throw .badRequest("give \"topics\" or \"topic_pattern\", not both") }
                let regex: Regex<AnyRegexOutput>
                do { regex = try Regex(pattern) } catch { throw .unprocessable("topic_pattern is not a valid regular expression: \(error)") }
                // Matched once, now (Kafka re-evaluates on metadata changes; not yet here).
                topics = broker.listTopics().filter { (try? regex.wholeMatch(in: $0.rawValue)) != nil }
            }
            guard !topics.isEmpty else { throw .badRequest("\"topics\" (a non-empty array) or \"topic_pattern\" is required") }
            let subscribed = topics
            withMembership(group, instance, responder) { [self] m in
                if let manual = m.manualPartitions, !manual.isEmpty {
                    return responder.respond(Self.failure(.illegalState("Subscription to topics, partitions and pattern are mutually exclusive (this instance has assigned partitions)")))
                }
                broker.updateSubscription(group, member: instance, topics: subscribed, manualPartitions: nil) { result in
                    responder.respond(Self.v2NoContent(result.map { _ in () }))
                }
            }
        case .v2GetSubscription:
            withMembership(group, instance, responder) { m in
                var w = JSONWriter(capacity: 64)
                w.raw("{\"topics\":[")
                for (i, t) in m.topics.enumerated() {
                    if i > 0 { w.raw(",") }
                    w.string(t.rawValue)
                }
                w.raw("]}")
                responder.respond(Self.v2JSON(200, w.bytes))
            }
        case .v2Unsubscribe:
            broker.updateSubscription(group, member: instance, topics: [], manualPartitions: []) { result in
                responder.respond(Self.v2NoContent(result.map { _ in () }))
            }
        case .v2Assign:
            let body = try Self.v2Body(request)
            let partitions = try Self.partitionList(body["partitions"], "partitions", limit: broker.configuration.groupLimits.assignmentPartitionsMax)
            withMembership(group, instance, responder) { [self] m in
                if !m.topics.isEmpty {
                    return responder.respond(Self.failure(.illegalState("Subscription to topics, partitions and pattern are mutually exclusive (this instance is subscribed)")))
                }
                broker.updateSubscription(group, member: instance, topics: [], manualPartitions: partitions) { result in
                    responder.respond(Self.v2NoContent(result.map { _ in () }))
                }
            }
        case .v2GetAssignments:
            withMembership(group, instance, responder) { m in
                var w = JSONWriter(capacity: 64)
                w.raw("{\"partitions\":")
                Render.partitions(m.assignment, into: &w)
                w.raw("}")
                responder.respond(Self.v2JSON(200, w.bytes))
            }
        case .v2Records:
            try v2Records(group, instance, request, responder)
        case .v2CommitOffsets:
            try v2Commit(group, instance, request, responder)
        case .v2GetOffsets:
            let body = try Self.v2Body(request)
            let partitions = try Self.partitionList(body["partitions"], "partitions", limit: broker.configuration.groupLimits.commitOffsetsMax)
            broker.groupOffsets(group, member: nil, partitions: partitions) { result in
                responder.respond(Self.v2Answer(result) { offsets in
                    var w = JSONWriter(capacity: 64 + offsets.count * 64)
                    w.raw("{\"offsets\":")
                    // Kafka's "no committed offset" is -1.
                    Render.offsetList(offsets.map { ($0.partition, $0.offset?.rawValue, $0.metadata) }, missing: "-1", into: &w)
                    w.raw("}")
                    return w.bytes
                })
            }
        case .v2Seek:
            let body = try Self.v2Body(request)
            var seeks: [MemberSeek] = []
            if let offsets = body["offsets"], !offsets.isNull {
                for e in try Self.offsetEntries(offsets, limits: broker.configuration.groupLimits) {
                    seeks.append(MemberSeek(partition: e.partition, position: .offset(e.offset)))
                }
            }
            if let stamps = body["timestamps"]?.arrayValue {
                let tps = try Self.partitionList(body["timestamps"], "timestamps", limit: broker.configuration.groupLimits.commitOffsetsMax)
                for (item, tp) in zip(stamps, tps) {
                    guard let ms = item["timestamp"]?.int64Value else { throw .badRequest("each timestamp entry needs \"timestamp\" (milliseconds since the epoch)") }
                    seeks.append(MemberSeek(partition: tp, position: .timestamp(ms)))
                }
            }
            guard !seeks.isEmpty else { throw .badRequest("\"offsets\" (or \"timestamps\") must list at least one partition") }
            broker.seekMember(group, member: instance, positions: seeks) { result in responder.respond(Self.v2NoContent(result)) }
        case .v2SeekBeginning, .v2SeekEnd:
            let body = try Self.v2Body(request)
            let tps = try Self.partitionList(body["partitions"], "partitions", limit: broker.configuration.groupLimits.assignmentPartitionsMax)
            let position: SeekPosition = operation == .v2SeekBeginning ? .beginning : .end
            broker.seekMember(group, member: instance, positions: tps.map { MemberSeek(partition: $0, position: position) }) { result in
                responder.respond(Self.v2NoContent(result))
            }
        default:
            throw .notFound("no REST Proxy v2 consumer operation \(operation.rawValue)")
        }
    }

    // MARK: create

    private func createV2Consumer(_ group: GroupID, _ request: HTTPRequest, _ responder: Responder) throws(BrokerError) {
        let body = try Self.v2Body(request)
        var dialect = V2Dialect.confluent
        for key in ["enable.auto.commit", "fetch.min.bytes", "consumer.request.timeout.ms", "isolation.level"] where body[key] != nil { dialect = .strimzi }
        var join = JoinGroupRequest(group: group, clientID: "rest-proxy-v2", topics: [], manualPartitions: [],
                                    sessionTimeoutMilliseconds: broker.configuration.restProxyInstanceTimeoutMilliseconds,
                                    autoOffsetReset: .latest, autoCommit: true)
        if let n = body["name"], !n.isNull {
            guard let text = n.stringValue else { throw .badRequest("\"name\" must be a string") }
            join.memberName = try MemberID.validate(text, what: "consumer instance name").get()
        }
        var format = V2Format.binary
        if let f = body["format"], !f.isNull {
            guard let text = f.stringValue else { throw .badRequest("\"format\" must be a string") }
            switch text.lowercased() {
            case "binary": format = .binary
            case "json": format = .json
            case "text":
                format = .text
                dialect = .strimzi
            case "avro", "jsonschema", "protobuf":
                throw .unprocessable("format '\(text)' needs a schema registry, which Petrel does not have; use binary, json or text")
            default: throw .unprocessable("format must be binary, json or text, got '\(text)'")
            }
        }
        if let r = body["auto.offset.reset"], !r.isNull {
            switch r.stringValue?.lowercased() {
            case "earliest", "smallest": join.autoOffsetReset = .earliest
            case "latest", "largest": join.autoOffsetReset = .latest
            case "none": join.autoOffsetReset = .none
            default: throw .unprocessable("auto.offset.reset must be earliest, latest or none")
            }
        }
        // Confluent: a string "true"/"false"; Strimzi: a boolean.
        for key in ["auto.commit.enable", "enable.auto.commit"] {
            guard let v = body[key], !v.isNull else { continue }
            if let b = v.boolValue { join.autoCommit = b } else if let s = v.stringValue, s == "true" || s == "false" { join.autoCommit = s == "true" } else {
                throw .unprocessable("\(key) must be true or false")
            }
        }
        var timeout = 1_000
        if let t = body["consumer.request.timeout.ms"], !t.isNull {
            guard let v = t.int64Value ?? t.stringValue.flatMap({ Int64($0) }), v >= 0, v <= Int64(broker.configuration.limits.waitMillisecondsMax) else {
                throw .unprocessable("consumer.request.timeout.ms must be an integer in 0...\(broker.configuration.limits.waitMillisecondsMax)")
            }
            timeout = Int(v)
        }
        join.properties = [Self.v2Properties.format: format.rawValue, Self.v2Properties.dialect: dialect.rawValue, Self.v2Properties.timeout: String(timeout)]
        let host = request.header("Host") ?? "\(broker.configuration.advertisedHost):\(broker.advertisedPort.load(ordering: .relaxed))"
        broker.joinGroup(join) { result in
            responder.respond(Self.v2Answer(result) { m in
                var w = JSONWriter(capacity: 128)
                w.raw("{\"instance_id\":")
                w.string(m.member.rawValue)
                w.raw(",\"base_uri\":")
                w.string("http://\(host)/consumers/\(group.rawValue)/instances/\(m.member.rawValue)")
                w.raw("}")
                return w.bytes
            })
        }
    }

    // MARK: records and offsets

    private func v2Records(_ group: GroupID, _ instance: MemberID, _ request: HTTPRequest, _ responder: Responder) throws(BrokerError) {
        let limits = broker.configuration.limits
        let maxBytes = try Self.integer(request, "max_bytes", default: 1 << 20, range: 1...limits.readBytesMax)
        let timeout = try request.queryValue("timeout").map { _ throws(BrokerError) in try Self.integer(request, "timeout", default: 1_000, range: 0...limits.waitMillisecondsMax) }
        let accept = MediaType(request.header("Accept")).essence
        withMembership(group, instance, responder) { [self] m in
            let format = V2Format(rawValue: m.properties[Self.v2Properties.format] ?? "binary") ?? .binary
            // Accept must name the instance's format (REST Proxy's 40601); */* and plain JSON pass.
            let accepted = accept.isEmpty || accept == "*/*" || accept == MediaType.json || accept == format.mediaType
            guard accepted else {
                return responder.respond(Self.failure(.notAcceptable("The requested embedded data format does not match the deserializer for this consumer instance (it reads \(format.rawValue): Accept \(format.mediaType))")))
            }
            let wait = timeout ?? Int(m.properties[Self.v2Properties.timeout] ?? "") ?? 1_000
            let poll = GroupPollRequest(group: group, member: instance, maxRecords: limits.readRecordsMax, maxBytes: maxBytes, waitMilliseconds: wait)
            broker.pollGroup(poll) { result in
                responder.respond(Self.v2Answer(result, contentType: format.mediaType) { (r: GroupPollResult) throws(DecodeError) -> [UInt8] in try Self.v2RenderRecords(r, format: format) })
            }
        }
    }

    private func v2Commit(_ group: GroupID, _ instance: MemberID, _ request: HTTPRequest, _ responder: Responder) throws(BrokerError) {
        let entries: [CommittedOffsetEntry]
        if request.body.isEmpty {
            entries = []
        } else {
            entries = try Self.offsetEntries(try Self.v2Body(request)["offsets"], limits: broker.configuration.groupLimits)
        }
        withMembership(group, instance, responder) { [self] m in
            let dialect = V2Dialect(rawValue: m.properties[Self.v2Properties.dialect] ?? "") ?? .confluent
            // Confluent's offset is the last record consumed; Kafka stores the next one to read.
            let stored = dialect == .confluent ? entries.map { CommittedOffsetEntry(partition: $0.partition, offset: $0.offset + 1, metadata: $0.metadata) } : entries
            let commit = GroupCommitRequest(group: group, member: instance, generation: nil, offsets: stored)
            broker.commitGroupOffsets(commit) { result in
                switch (result, dialect) {
                case (.failure(let e), _): responder.respond(Self.failure(e))
                case (.success, .confluent): responder.respond(Self.v2JSON(200, Array("[]".utf8)))
                case (.success, .strimzi): responder.respond(HTTPResponse(status: 204, headers: [], body: []))
                }
            }
        }
    }

    // MARK: helpers

    /// Runs `body` with the instance's membership (404 40403 when it does not exist).
    private func withMembership(_ group: GroupID, _ instance: MemberID, _ responder: Responder, _ body: @escaping @Sendable (GroupMembership) -> Void) {
        broker.heartbeat(group, member: instance) { result in
            switch result {
            case .failure(.unknownMember): responder.respond(Self.failure(.unknownMember("Consumer instance not found.")))
            case .failure(let e): responder.respond(Self.failure(e))
            case .success(let m): body(m)
            }
        }
    }

    /// A v2 request body: JSON under any of the v2 media types (or none); an empty body is `{}`.
    static func v2Body(_ request: HTTPRequest) throws(BrokerError) -> JSONNode {
        let media = MediaType(request.header("Content-Type")).essence
        guard media.isEmpty || media == MediaType.json || media == MediaType.form || (media.hasPrefix("application/vnd.kafka.") && media.hasSuffix("+json")) else {
            throw .unsupportedMediaType("this operation takes \(v2MediaType), got '\(request.header("Content-Type") ?? "")'")
        }
        let bytes = request.body.isEmpty ? Array("{}".utf8) : request.body
        let node: JSONNode
        do { node = try JSONParser.parse(bytes) } catch { throw .badRequest("request body is not valid JSON: \(error)") }
        guard node.objectValue != nil else { throw .badRequest("request body must be a JSON object, got \(node.typeName)") }
        return node
    }

    static func v2JSON(_ status: Int, _ body: [UInt8], contentType: String = v2MediaType) -> HTTPResponse {
        HTTPResponse(status: status, headers: [(name: "Content-Type", value: contentType)], body: body)
    }

    static func v2NoContent(_ result: Result<Void, BrokerError>) -> HTTPResponse {
        switch result {
        case .failure(.unknownMember): failure(.unknownMember("Consumer instance not found."))
        case .failure(let e): failure(e)
        case .success: HTTPResponse(status: 204, headers: [], body: [])
        }
    }

    static func v2Answer<T>(_ result: Result<T, BrokerError>, contentType: String = v2MediaType, _ render: (T) throws(DecodeError) -> [UInt8]) -> HTTPResponse {
        switch result {
        case .failure(.unknownMember): return failure(.unknownMember("Consumer instance not found."))
        case .failure(let e): return failure(e)
        case .success(let value):
            do { return v2JSON(200, try render(value), contentType: contentType) } catch { return failure(.storage("a stored record could not be decoded: \(error)")) }
        }
    }

    /// The bare array of records, keys and values embedded per the instance's format.
    static func v2RenderRecords(_ r: GroupPollResult, format: V2Format) throws(DecodeError) -> [UInt8] {
        var w = JSONWriter(capacity: 64 + r.reads.reduce(0) { $0 + $1.batches.reduce(0) { $0 + $1.sizeBytes } } * 2)
        w.raw("[")
        var first = true
        for read in r.reads {
            try read.forEachRecordView { (v: RecordView) throws(DecodeError) -> Bool in
                if !first { w.raw(",") }
                first = false
                w.raw("{\"topic\":")
                w.string(read.topic.rawValue)
                v2Field("key", v.key, format: format, into: &w)
                v2Field("value", v.value, format: format, into: &w)
                w.raw(",\"partition\":")
                w.int(Int64(read.partition.rawValue))
                w.raw(",\"offset\":")
                w.int(v.offset.rawValue)
                w.raw(",\"timestamp\":")
                w.int(v.timestamp)
                w.raw(",\"headers\":[")
                var firstHeader = true
                try v.forEachHeader { key, value in
                    if !firstHeader { w.raw(",") }
                    firstHeader = false
                    w.raw("{\"key\":")
                    w.string(String(decoding: key, as: UTF8.self))
                    // Strimzi's header values are base64 whatever the format.
                    w.raw(",\"value\":")
                    if let value { w.base64String(Array(value.assumingMemoryBound(to: UInt8.self))) } else { w.raw("null") }
                    w.raw("}")
                }
                w.raw("]}")
                return true
            }
        }
        w.raw("]")
        return w.bytes
    }

    static func v2Field(_ name: StaticString, _ bytes: UnsafeRawBufferPointer?, format: V2Format, into w: inout JSONWriter) {
        switch format {
        case .binary:
            w.raw(",\"")
            w.raw(name)
            w.raw("\":")
            if let bytes { w.base64String(Array(bytes.assumingMemoryBound(to: UInt8.self))) } else { w.raw("null") }
        case .json: Render.field(name, bytes, format: .json, into: &w)
        case .text: Render.field(name, bytes, format: .text, into: &w)
        }
    }
}

extension RestProxyV2Produce.Format {
    /// The `Accept` a consumer instance of this format is fetched with.
    var mediaType: String { "application/vnd.kafka.\(rawValue).v2+json" }
}

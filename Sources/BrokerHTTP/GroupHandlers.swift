import BrokerModel
import BrokerRuntime
import MicroHTTP

/// The native consumer-group API (`/v1/groups/...`): validation at the edge, the `Broker` façade's
/// group calls, JSON answers. The REST Proxy v2 consumer instances use the same façade calls.
extension BrokerService {
    func dispatchGroup(_ operation: Operation, _ params: [String: String], _ request: HTTPRequest, _ responder: Responder) throws(BrokerError) {
        switch operation {
        case .listGroups:
            broker.listGroups { result in responder.respond(Self.answer(result, Render.groupList)) }
        case .describeGroup:
            broker.describeGroup(try Self.group(params)) { result in responder.respond(Self.answer(result, Render.group)) }
        case .deleteGroup:
            broker.deleteGroup(try Self.group(params)) { result in responder.respond(Self.noContent(result)) }
        case .joinGroup:
            let join = try Self.joinRequest(try Self.group(params), try Self.jsonObject(request), limits: broker.configuration.groupLimits)
            broker.joinGroup(join) { result in responder.respond(Self.answer(result, Render.membership)) }
        case .leaveGroup:
            broker.leaveGroup(try Self.group(params), member: try Self.member(params)) { result in responder.respond(Self.noContent(result)) }
        case .heartbeatGroupMember:
            broker.heartbeat(try Self.group(params), member: try Self.member(params)) { result in responder.respond(Self.answer(result, Render.membership)) }
        case .pollGroupRecords:
            let limits = broker.configuration.limits
            let poll = GroupPollRequest(
                group: try Self.group(params), member: try Self.member(params),
                maxRecords: try Self.integer(request, "max_records", default: 500, range: 1...limits.readRecordsMax),
                maxBytes: try Self.integer(request, "max_bytes", default: 1 << 20, range: 1...limits.readBytesMax),
                waitMilliseconds: try Self.integer(request, "wait_ms", default: 0, range: 0...limits.waitMillisecondsMax))
            let format = try Self.format(request)
            let accept = request.header("Accept") ?? ""
            if accept.contains("text/event-stream") || accept.contains(MediaType.ndjson) {
                return try startGroupStream(accept.contains("text/event-stream") ? .sse : .ndjson, poll: poll, request: request, format: format, responder: responder)
            }
            broker.pollGroup(poll) { result in
                responder.respond(Self.answer(result) { (r: GroupPollResult) throws(DecodeError) -> [UInt8] in try Render.groupPoll(r, format: format) })
            }
        case .commitGroupOffsets:
            let body = try Self.jsonObject(request)
            let commit = GroupCommitRequest(group: try Self.group(params), member: try Self.optionalMember(body["member_id"]),
                                            generation: try Self.optionalInt32(body["generation"], "generation"),
                                            offsets: try Self.offsetEntries(body["offsets"], limits: broker.configuration.groupLimits))
            guard commit.member != nil || !commit.offsets.isEmpty else { throw .badRequest("\"offsets\" must list at least one {\"topic\",\"partition\",\"offset\"}") }
            broker.commitGroupOffsets(commit) { result in
                responder.respond(Self.answer(result) { n in Array("{\"committed\":\(n)}".utf8) })
            }
        case .getGroupOffsets:
            let group = try Self.group(params)
            let member = try request.queryValue("member_id").map { text throws(BrokerError) in try MemberID.validate(text, what: "member_id").get() }
            var partitions: [TopicPartition]?
            if request.queryValue("partition") != nil && request.queryValue("topic") == nil {
                throw .badRequest("?partition= needs ?topic= as well")
            }
            if let t = request.queryValue("topic") {
                let topic = try TopicName.validate(t).get()
                if let p = request.queryValue("partition") {
                    partitions = [TopicPartition(topic, try ProduceParsing.partition(p))]
                } else {
                    let count = try broker.describeTopic(topic).partitions.count
                    partitions = (0..<Int32(count)).map { TopicPartition(topic, PartitionID($0)) }
                }
            }
            broker.groupOffsets(group, member: member, partitions: partitions) { result in
                responder.respond(Self.answer(result) { o in Render.groupOffsets(group, o) })
            }
        case .resetGroupOffsets:
            let body = try Self.jsonObject(request)
            let group = try Self.group(params)
            let (topics, target) = try Self.resetTarget(body, limits: broker.configuration.groupLimits)
            broker.resetGroupOffsets(group, topics: topics, to: target) { result in
                responder.respond(Self.answer(result) { o in Render.groupOffsets(group, o) })
            }
        default:
            throw .notFound("no group operation \(operation.rawValue)")
        }
    }

    /// SSE or NDJSON on a member's records (GroupStream.swift); settings as for partition streams,
    /// plus `max_uncommitted`.
    func startGroupStream(_ kind: PartitionStream.Kind, poll: GroupPollRequest, request: HTTPRequest, format: ValueFormat, responder: Responder) throws(BrokerError) {
        let limits = broker.configuration.limits
        var seeks: [MemberSeek] = []
        if kind == .sse, let lastID = request.header("Last-Event-ID"), !lastID.trimmingSpaces().isEmpty {
            guard let parsed = GroupStream.parseCursor(lastID.trimmingSpaces()) else {
                throw .badRequest("Last-Event-ID must be a group stream cursor (topic/partition/offset,...), got '\(lastID)'")
            }
            seeks = parsed
        }
        let settings = GroupStream.Settings(
            kind: kind,
            batchLimit: try Self.integer(request, "batch_limit", default: poll.maxRecords, range: 1...limits.readRecordsMax),
            // Rendering is never cut (positions already moved): keep one poll well inside the buffer.
            batchMaxBytes: min(poll.maxBytes, limits.streamBufferBytes / 8),
            flushTimeoutMilliseconds: try Self.integer(request, "batch_flush_timeout", default: 15, range: 1...3600) * 1000,
            streamTimeoutMilliseconds: try Self.integer(request, "stream_timeout", default: 0, range: 0...limits.streamTimeoutSecondsMax) * 1000,
            streamLimit: try Self.integer(request, "stream_limit", default: 0, range: 0...Int(Int32.max)),
            maxUncommitted: try Self.integer(request, "max_uncommitted", default: 0, range: 0...Int(Int32.max)),
            format: format)
        guard openStreams.wrappingAdd(1, ordering: .relaxed).newValue <= limits.streamsMax else {
            openStreams.wrappingSubtract(1, ordering: .relaxed)
            throw .overloaded("too many open streams (\(limits.streamsMax)); retry later")
        }
        // The member must exist before a 200 goes out: an unknown one gets a plain 404.
        let (group, member, resume) = (poll.group, poll.member, seeks)
        broker.heartbeat(group, member: member) { [self] result in
            if case .failure(let e) = result {
                openStreams.wrappingSubtract(1, ordering: .relaxed)
                return responder.respond(Self.failure(e))
            }
            let headers: [(name: String, value: String)] = kind == .sse
                ? [(name: "Content-Type", value: "text/event-stream"), (name: "Cache-Control", value: "no-cache"), (name: "X-Accel-Buffering", value: "no")]
                : [(name: "Content-Type", value: MediaType.ndjson), (name: "Cache-Control", value: "no-cache")]
            let stream = responder.respondStreaming(status: 200, headers: headers, bufferBytesMax: limits.streamBufferBytes)
            stream.onClose { [self] in openStreams.wrappingSubtract(1, ordering: .relaxed) }
            GroupStream(broker: broker, group: group, member: member, settings: settings, stream: stream).start(resumeFrom: resume)
        }
    }

    // MARK: answers

    static func answer<T>(_ result: Result<T, BrokerError>, _ render: (T) throws(DecodeError) -> [UInt8]) -> HTTPResponse {
        switch result {
        case .failure(let e): return failure(e)
        case .success(let value):
            do { return json(200, try render(value)) } catch { return failure(.storage("a stored record could not be decoded: \(error)")) }
        }
    }

    static func noContent(_ result: Result<Void, BrokerError>) -> HTTPResponse {
        switch result {
        case .failure(let e): failure(e)
        case .success: HTTPResponse(status: 204, headers: [], body: [])
        }
    }

    // MARK: validation

    static func group(_ params: [String: String]) throws(BrokerError) -> GroupID {
        try GroupID.validate(params["group"] ?? "").get()
    }

    static func member(_ params: [String: String]) throws(BrokerError) -> MemberID {
        try MemberID.validate(params["member"] ?? "").get()
    }

    static func optionalMember(_ node: JSONNode?) throws(BrokerError) -> MemberID? {
        guard let node, !node.isNull else { return nil }
        guard let text = node.stringValue else { throw .badRequest("\"member_id\" must be a string") }
        return try MemberID.validate(text, what: "member_id").get()
    }

    static func optionalInt32(_ node: JSONNode?, _ name: String) throws(BrokerError) -> Int32? {
        guard let node, !node.isNull else { return nil }
        guard let v = node.int64Value, let i = Int32(exactly: v) else { throw .badRequest("\"\(name)\" must be a 32-bit integer") }
        return i
    }

    static func topicList(_ node: JSONNode?, _ name: String, limit: Int) throws(BrokerError) -> [TopicName] {
        guard let node, !node.isNull else { return [] }
        guard let items = node.arrayValue else { throw .badRequest("\"\(name)\" must be an array of topic names") }
        guard items.count <= limit else { throw .unprocessable("\"\(name)\" lists \(items.count) topics; at most \(limit) are allowed") }
        var out: [TopicName] = []
        for item in items {
            guard let text = item.stringValue else { throw .badRequest("\"\(name)\" must be an array of topic names") }
            out.append(try TopicName.validate(text).get())
        }
        return out
    }

    /// `[{"topic","partition"}]`.
    static func partitionList(_ node: JSONNode?, _ name: String, limit: Int) throws(BrokerError) -> [TopicPartition] {
        guard let items = node?.arrayValue else { throw .badRequest("\"\(name)\" must be an array of {\"topic\",\"partition\"}") }
        guard items.count <= limit else { throw .unprocessable("\"\(name)\" lists \(items.count) partitions; at most \(limit) are allowed") }
        var out: [TopicPartition] = []
        for item in items {
            guard let t = item["topic"]?.stringValue, let p = item["partition"]?.int64Value, let pid = Int32(exactly: p), pid >= 0 else {
                throw .badRequest("each entry of \"\(name)\" needs \"topic\" (a string) and \"partition\" (an integer ≥ 0)")
            }
            out.append(TopicPartition(try TopicName.validate(t).get(), PartitionID(pid)))
        }
        return out
    }

    /// `[{"topic","partition","offset","metadata"?}]`.
    static func offsetEntries(_ node: JSONNode?, limits: GroupLimits) throws(BrokerError) -> [CommittedOffsetEntry] {
        guard let node, !node.isNull else { return [] }
        guard let items = node.arrayValue else { throw .badRequest("\"offsets\" must be an array of {\"topic\",\"partition\",\"offset\"}") }
        guard items.count <= limits.commitOffsetsMax else {
            throw .unprocessable("\"offsets\" lists \(items.count) entries; at most \(limits.commitOffsetsMax) are allowed in one commit")
        }
        let partitions = try partitionList(node, "offsets", limit: limits.commitOffsetsMax)
        var out: [CommittedOffsetEntry] = []
        for (item, tp) in zip(items, partitions) {
            guard let o = item["offset"]?.int64Value, o >= 0 else { throw .badRequest("each offset needs \"offset\": an integer ≥ 0 (the next offset to read)") }
            var metadata = ""
            if let m = item["metadata"], !m.isNull {
                guard let text = m.stringValue else { throw .badRequest("\"metadata\" must be a string") }
                guard text.utf8.count <= limits.metadataBytesMax else {
                    throw .unprocessable("\"metadata\" is \(text.utf8.count) bytes; at most \(limits.metadataBytesMax) are allowed")
                }
                metadata = text
            }
            out.append(CommittedOffsetEntry(partition: tp, offset: Offset(o), metadata: metadata))
        }
        return out
    }

    static func joinRequest(_ group: GroupID, _ body: JSONNode, limits: GroupLimits) throws(BrokerError) -> JoinGroupRequest {
        var join = JoinGroupRequest(group: group, topics: try topicList(body["topics"], "topics", limit: limits.topicsPerMemberMax))
        if let p = body["partitions"], !p.isNull {
            guard join.topics.isEmpty else { throw .illegalState("give either \"topics\" (subscription) or \"partitions\" (manual assignment), not both") }
            join.manualPartitions = try partitionList(p, "partitions", limit: limits.assignmentPartitionsMax)
        } else if join.topics.isEmpty {
            throw .badRequest("\"topics\" (an array of topic names) or \"partitions\" (an array of {\"topic\",\"partition\"}) is required")
        }
        if let n = body["member_name"], !n.isNull {
            guard let text = n.stringValue else { throw .badRequest("\"member_name\" must be a string") }
            join.memberName = try MemberID.validate(text, what: "member_name").get()
        }
        if let c = body["client_id"], !c.isNull {
            guard let text = c.stringValue else { throw .badRequest("\"client_id\" must be a string") }
            guard text.utf8.count <= limits.clientIDBytesMax else {
                throw .unprocessable("\"client_id\" is \(text.utf8.count) bytes; at most \(limits.clientIDBytesMax) are allowed")
            }
            join.clientID = text
        }
        if let t = body["session_timeout_ms"], !t.isNull {
            guard let v = t.int64Value, limits.sessionTimeoutMillisecondsRange.contains(v) else {
                throw .badRequest("\"session_timeout_ms\" must be an integer in \(limits.sessionTimeoutMillisecondsRange.lowerBound)...\(limits.sessionTimeoutMillisecondsRange.upperBound)")
            }
            join.sessionTimeoutMilliseconds = v
        }
        if let r = body["auto_offset_reset"], !r.isNull {
            guard let text = r.stringValue, let reset = AutoOffsetReset(rawValue: text) else { throw .badRequest("\"auto_offset_reset\" must be earliest, latest or none") }
            join.autoOffsetReset = reset
        }
        if let a = body["auto_commit"], !a.isNull {
            guard let v = a.boolValue else { throw .badRequest("\"auto_commit\" must be true or false") }
            join.autoCommit = v
        }
        if let a = body["assignor"], !a.isNull {
            guard let text = a.stringValue, let assignor = GroupAssignor(rawValue: text) else { throw .badRequest("\"assignor\" must be range, roundrobin or sticky") }
            join.assignor = assignor
        }
        return join
    }

    /// `{"topics":[...], "to":"earliest"|"latest"}`, `{"topics":[...], "timestamp":ms}` or `{"offsets":[...]}`.
    static func resetTarget(_ body: JSONNode, limits: GroupLimits) throws(BrokerError) -> ([TopicName], OffsetResetTarget) {
        if let o = body["offsets"], !o.isNull {
            let entries = try offsetEntries(o, limits: limits)
            guard !entries.isEmpty else { throw .badRequest("\"offsets\" must not be empty") }
            return ([], .exact(entries))
        }
        let topics = try topicList(body["topics"], "topics", limit: limits.topicsPerMemberMax)
        guard !topics.isEmpty else { throw .badRequest("\"topics\" (with \"to\" or \"timestamp\") or \"offsets\" is required") }
        if let t = body["timestamp"], !t.isNull {
            guard let ms = t.int64Value else { throw .badRequest("\"timestamp\" must be milliseconds since the epoch") }
            return (topics, .timestamp(ms))
        }
        switch body["to"]?.stringValue {
        case "earliest", "beginning": return (topics, .earliest)
        case "latest", "end": return (topics, .latest)
        default: throw .badRequest("\"to\" must be earliest or latest (or give \"timestamp\" or \"offsets\")")
        }
    }
}

// MARK: - rendering

extension Render {
    static func partitions(_ tps: [TopicPartition], into w: inout JSONWriter) {
        w.raw("[")
        for (i, tp) in tps.enumerated() {
            if i > 0 { w.raw(",") }
            w.raw("{\"topic\":")
            w.string(tp.topic.rawValue)
            w.raw(",\"partition\":")
            w.int(Int64(tp.partition.rawValue))
            w.raw("}")
        }
        w.raw("]")
    }

    static func membershipFields(_ m: GroupMembership, into w: inout JSONWriter) {
        w.raw("\"group\":")
        w.string(m.group.rawValue)
        w.raw(",\"member_id\":")
        w.string(m.member.rawValue)
        w.raw(",\"generation\":")
        w.int(Int64(m.generation))
        w.raw(",\"assignment\":")
        partitions(m.assignment, into: &w)
        w.raw(",\"session_timeout_ms\":")
        w.int(m.sessionTimeoutMilliseconds)
        w.raw(",\"auto_commit\":")
        w.bool(m.autoCommit)
    }

    static func membership(_ m: GroupMembership) -> [UInt8] {
        var w = JSONWriter(capacity: 256)
        w.raw("{")
        membershipFields(m, into: &w)
        w.raw("}")
        return w.bytes
    }

    static func groupPoll(_ r: GroupPollResult, format: ValueFormat) throws(DecodeError) -> [UInt8] {
        var w = JSONWriter(capacity: 256 + r.reads.reduce(0) { $0 + $1.batches.reduce(0) { $0 + $1.sizeBytes } } * 2)
        w.raw("{")
        membershipFields(r.membership, into: &w)
        w.raw(",\"records\":[")
        var first = true
        for read in r.reads {
            try read.forEachRecordView { (s: RecordView) throws(DecodeError) -> Bool in
                if !first { w.raw(",") }
                first = false
                try record(s, format: format, from: (read.topic, read.partition), into: &w)
                return true
            }
        }
        w.raw("]}")
        return w.bytes
    }

    static func groupOffsets(_ group: GroupID, _ offsets: [GroupOffset]) -> [UInt8] {
        var w = JSONWriter(capacity: 64 + offsets.count * 64)
        w.raw("{\"group\":")
        w.string(group.rawValue)
        w.raw(",\"offsets\":")
        offsetList(offsets.map { ($0.partition, $0.offset?.rawValue, $0.metadata) }, missing: "null", into: &w)
        w.raw("}")
        return w.bytes
    }

    /// `[{"topic","partition","offset"[,"metadata"]}]`; `missing` is written for an absent offset,
    /// and `metadata` only where the entry has some (nil).
    static func offsetList(_ entries: [(TopicPartition, Int64?, String?)], missing: StaticString, into w: inout JSONWriter) {
        w.raw("[")
        for (i, (tp, offset, metadata)) in entries.enumerated() {
            if i > 0 { w.raw(",") }
            w.raw("{\"topic\":")
            w.string(tp.topic.rawValue)
            w.raw(",\"partition\":")
            w.int(Int64(tp.partition.rawValue))
            w.raw(",\"offset\":")
            if let offset { w.int(offset) } else { w.raw(missing) }
            if let metadata {
                w.raw(",\"metadata\":")
                w.string(metadata)
            }
            w.raw("}")
        }
        w.raw("]")
    }

    static func group(_ d: GroupDescription) -> [UInt8] {
        var w = JSONWriter(capacity: 512)
        w.raw("{\"group\":")
        w.string(d.group.rawValue)
        w.raw(",\"state\":")
        w.string(d.state)
        w.raw(",\"generation\":")
        w.int(Int64(d.generation))
        w.raw(",\"assignor\":")
        w.string(d.assignor.rawValue)
        w.raw(",\"coordinator\":")
        w.int(Int64(d.coordinator.rawValue))
        w.raw(",\"members\":[")
        for (i, m) in d.members.enumerated() {
            if i > 0 { w.raw(",") }
            w.raw("{\"member_id\":")
            w.string(m.member.rawValue)
            w.raw(",\"client_id\":")
            w.string(m.clientID)
            w.raw(",\"topics\":[")
            for (k, t) in m.topics.enumerated() {
                if k > 0 { w.raw(",") }
                w.string(t.rawValue)
            }
            w.raw("],\"manual\":")
            w.bool(m.isManual)
            w.raw(",\"assignment\":")
            partitions(m.assignment, into: &w)
            w.raw(",\"session_timeout_ms\":")
            w.int(m.sessionTimeoutMilliseconds)
            w.raw(",\"idle_ms\":")
            if let idle = m.idleMilliseconds { w.int(idle) } else { w.raw("null") }
            w.raw("}")
        }
        w.raw("],\"partitions\":[")
        var totalLag: Int64 = 0
        for (i, p) in d.partitions.enumerated() {
            if i > 0 { w.raw(",") }
            w.raw("{\"topic\":")
            w.string(p.partition.topic.rawValue)
            w.raw(",\"partition\":")
            w.int(Int64(p.partition.partition.rawValue))
            w.raw(",\"member_id\":")
            if let o = p.owner { w.string(o.rawValue) } else { w.raw("null") }
            w.raw(",\"committed_offset\":")
            if let c = p.committedOffset { w.int(c.rawValue) } else { w.raw("null") }
            w.raw(",\"high_watermark\":")
            if let h = p.highWatermark { w.int(h.rawValue) } else { w.raw("null") }
            w.raw(",\"lag\":")
            if let l = p.lag {
                w.int(l)
                totalLag += l
            } else {
                w.raw("null")
            }
            w.raw("}")
        }
        w.raw("],\"total_lag\":")
        w.int(totalLag)
        w.raw("}")
        return w.bytes
    }

    static func groupList(_ groups: [GroupSummary]) -> [UInt8] {
        var w = JSONWriter(capacity: 64 + groups.count * 64)
        w.raw("{\"groups\":[")
        for (i, g) in groups.enumerated() {
            if i > 0 { w.raw(",") }
            w.raw("{\"group\":")
            w.string(g.group.rawValue)
            w.raw(",\"state\":")
            w.string(g.state)
            w.raw(",\"members\":")
            w.int(g.memberCount)
            w.raw(",\"coordinator\":")
            w.int(Int64(g.coordinator.rawValue))
            w.raw("}")
        }
        w.raw("]}")
        return w.bytes
    }
}

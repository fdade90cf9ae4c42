import BrokerModel
import BrokerRuntime
import Dispatch
import MicroHTTP
import WebSocketCodec
import Synchronization

/// `GET /v1/groups/{group}/ws`: one consumer-group member whose life is the socket's.
///
/// Client → server (JSON text messages):
///
///     {"type":"join","topics":["orders"],"auto_commit":false,...}   the native join body plus a type;
///                                                                   must come first, exactly once
///     {"type":"credit","records":N}  and/or "bytes":B               added to what is left
///     {"type":"commit","id":...,"generation":G,"offsets":[{"topic","partition","offset"}]}
///                                                                   no offsets: everything this socket
///                                                                   delivered; no generation: the last
///                                                                   one this socket announced
///
/// Server → client:
///
///     {"type":"joined","group","member_id","generation","assignment":[{"topic","partition"}],...}
///     {"type":"records","generation":G,"records":[{"topic","partition","offset","timestamp","key","value","headers"}]}
///     {"type":"rebalance","group","member_id","generation","assignment":[...],...}
///     {"type":"committed","id":...,"generation":G,"offsets":[{"topic","partition","offset"}]}
///     {"type":"error","id":...,"error_code":...,"message":...}
///
/// The member's poll, repeated as in ``GroupStream``, paced by credit as in ``ConsumeSocket``: one
/// poll at a time (with a long-poll wait), only while every kind of credit granted is positive, and
/// the next one only after the client took the send buffer down (`whenDrained`), so a slow client is
/// never flooded. While there is no credit the socket heartbeats instead, so the member stays alive
/// and a rebalance is still pushed. Polls and heartbeats never overlap (`isBusy`): a `rebalance`
/// message always precedes the records of its generation.
///
/// Closing the socket (either side, a drop, or server shutdown) leaves the group at once: the
/// group rebalances without waiting for the session timeout. A socket that sends no join within
/// ``Settings/joinTimeoutMilliseconds`` is closed with 1008.
final class GroupSocket: WebSocketHandler {
    struct Settings: Sendable {
        var batchRecordsMax: Int
        var batchBytesMax: Int
        var waitMilliseconds: Int
        var format: ValueFormat
        var bufferBytes: Int
        var joinTimeoutMilliseconds: Int = 10_000
    }

    enum Phase: Equatable {
        case awaitingJoin
        case joining
        case joined(MemberID)
    }

    struct State {
        var phase = Phase.awaitingJoin
        var creditRecords: Int?
        var creditBytes: Int?
        /// A poll or a heartbeat is running (at most one at a time).
        var isBusy = false
        var isClosed = false
        var connection: WebSocketConnection?
        /// The generation and assignment last told to the client.
        var generation: Int32 = 0
        var assignment: [TopicPartition] = []
        /// Next offset per partition after what this socket sent (the empty commit's offsets).
        var delivered: [TopicPartition: Offset] = [:]
        var heartbeatMilliseconds = 1_000
        var lastContact = DispatchTime.now()
        var hasCredit: Bool {
            (creditRecords != nil || creditBytes != nil) && (creditRecords ?? 1) > 0 && (creditBytes ?? 1) > 0
        }
        var member: MemberID? {
            if case .joined(let m) = phase { m } else { nil }
        }
    }

    let broker: Broker
    let group: GroupID
    let groupLimits: GroupLimits
    let settings: Settings
    let onClose: @Sendable () -> Void
    let state = Mutex(State())

    init(broker: Broker, group: GroupID, settings: Settings, onClose: @escaping @Sendable () -> Void) {
        self.broker = broker
        self.group = group
        groupLimits = broker.configuration.groupLimits
        self.settings = settings
        self.onClose = onClose
    }

    // MARK: socket events (on the WebSocket loop thread; nothing here blocks)

    func opened(_ connection: WebSocketConnection) {
        state.withLock { $0.connection = connection }
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(settings.joinTimeoutMilliseconds)) { [self] in
            guard state.withLock({ $0.phase == .awaitingJoin && !$0.isClosed }) else { return }
            connection.close(code: .policyViolation, reason: "no join message within \(settings.joinTimeoutMilliseconds) ms")
        }
    }

    func received(_ message: WebSocketMessage, on connection: WebSocketConnection) {
        guard case .text(let text) = message else {
            connection.close(code: .unsupportedData, reason: "group messages are JSON text")
            return
        }
        let body = Array(text.utf8)
        var id: [UInt8] = Array("null".utf8)
        do throws(BrokerError) {
            let node = try ProduceSocket.message(body, id: &id)
            switch node["type"]?.stringValue {
            case "join": try join(node, on: connection)
            case "credit": try credit(node)
            case "commit": try commit(node, id: id, on: connection)
            default: throw .badRequest("\"type\" must be \"join\", \"credit\" or \"commit\"")
            }
        } catch {
            connection.send(text: Self.error(id: id, error))
        }
    }

    func closed(_ connection: WebSocketConnection, code: WebSocketCloseCode, reason: String) {
        let member = state.withLock { state -> MemberID? in
            state.isClosed = true
            state.connection = nil
            return state.member
        }
        if let member { leave(member) }  // a join still running leaves when it answers (join)
        onClose()
    }

    // MARK: messages

    private func join(_ node: JSONNode, on connection: WebSocketConnection) throws(BrokerError) {
        let request = try BrokerService.joinRequest(group, node, limits: groupLimits)
        let admitted = state.withLock { state -> Bool in
            guard state.phase == .awaitingJoin else { return false }
            state.phase = .joining
            return true
        }
        guard admitted else { throw .illegalState("this socket already joined (one member per socket)") }
        broker.joinGroup(request) { [self] result in
            DispatchQueue.global().async { self.joined(result, on: connection) }
        }
    }

    private func joined(_ result: Result<GroupMembership, BrokerError>, on connection: WebSocketConnection) {
        let membership: GroupMembership
        switch result {
        case .failure(let error):
            state.withLock { $0.phase = .awaitingJoin }
            connection.send(text: Self.error(id: Array("null".utf8), error))
            return
        case .success(let m): membership = m
        }
        let stillOpen = state.withLock { state -> Bool in
            guard !state.isClosed else { return false }
            state.phase = .joined(membership.member)
            state.generation = membership.generation
            state.assignment = membership.assignment
            state.lastContact = .now()
            // A third of the session, as Kafka's heartbeat.interval.ms; often enough to push a
            // rebalance soon while the client grants no credit.
            state.heartbeatMilliseconds = Int(min(max(membership.sessionTimeoutMilliseconds / 3, 100), 2_000))
            return true
        }
        guard stillOpen else { return leave(membership.member) }  // the client left while joining
        connection.send(text: Self.message("joined", membership))
        scheduleHeartbeat()
        pump()
    }

    private func credit(_ node: JSONNode) throws(BrokerError) {
        let (records, bytes) = try ConsumeSocket.creditGrant(node)
        state.withLock { state in
            if let records { state.creditRecords = min(ConsumeSocket.creditMax, (state.creditRecords ?? 0) + records) }
            if let bytes { state.creditBytes = min(ConsumeSocket.creditMax, (state.creditBytes ?? 0) + bytes) }
        }
        pump()  // credit before the join is kept: the first poll starts once joined
    }

    private func commit(_ node: JSONNode, id: [UInt8], on connection: WebSocketConnection) throws(BrokerError) {
        var offsets = try BrokerService.offsetEntries(node["offsets"], limits: groupLimits)
        let given = try BrokerService.optionalInt32(node["generation"], "generation")
        let snapshot = state.withLock { ($0.member, $0.generation, $0.delivered) }
        guard let member = snapshot.0 else { throw .illegalState("join the group before committing") }
        if offsets.isEmpty {
            offsets = snapshot.2.sorted { ($0.key.topic, $0.key.partition) < ($1.key.topic, $1.key.partition) }
                .map { CommittedOffsetEntry(partition: $0.key, offset: $0.value) }
        }
        let generation = given ?? snapshot.1
        guard !offsets.isEmpty else {
            connection.send(text: Self.committed(id: id, generation: generation, offsets: []))
            return
        }
        let entries = offsets
        let request = GroupCommitRequest(group: group, member: member, generation: generation, offsets: entries)
        broker.commitGroupOffsets(request) { result in
            switch result {
            case .success: connection.send(text: Self.committed(id: id, generation: generation, offsets: entries))
            case .failure(let error): connection.send(text: Self.error(id: id, error))
            }
        }
    }

    private func leave(_ member: MemberID) {
        // A failed leave (the broker stopping, the coordinator moving) still ends the member: its
        // session times out.
        broker.leaveGroup(group, member: member) { _ in }
    }

    // MARK: the poll loop

    /// Starts a poll when joined, idle and granted credit.
    private func pump() {
        let request: GroupPollRequest? = state.withLock { state in
            guard !state.isClosed, !state.isBusy, state.hasCredit, let member = state.member else { return nil }
            state.isBusy = true
            let records = min(state.creditRecords ?? settings.batchRecordsMax, settings.batchRecordsMax)
            let bytes = min(state.creditBytes ?? settings.batchBytesMax, settings.batchBytesMax)
            return GroupPollRequest(group: group, member: member, maxRecords: max(1, records), maxBytes: max(1, bytes),
                                    waitMilliseconds: settings.waitMilliseconds)
        }
        guard let request else { return }
        broker.pollGroup(request) { [self] result in
            // Never continue inside the completion: it may run synchronously.
            DispatchQueue.global().async { self.deliver(result) }
        }
    }

    private func deliver(_ result: Result<GroupPollResult, BrokerError>) {
        guard let connection = state.withLock({ $0.connection }) else { return }
        let poll: GroupPollResult
        switch result {
        case .failure(let error):
            return failed(error, on: connection)
        case .success(let r):
            poll = r
        }
        let rebalance = noteMembership(poll.membership)
        var message: [UInt8] = []
        var count = 0
        do {
            (message, count) = try Self.records(poll, format: settings.format)
        } catch {
            connection.send(text: Self.error(id: Array("null".utf8), .storage("a stored batch could not be decoded: \(error)")))
            connection.close(code: .internalError, reason: "read failed")
            return
        }
        state.withLock { state in
            state.lastContact = .now()
            for read in poll.reads { state.delivered[TopicPartition(read.topic, read.partition)] = read.nextOffset }
            if count > 0 {
                if let records = state.creditRecords { state.creditRecords = records - count }
                if let bytes = state.creditBytes { state.creditBytes = bytes - message.count }
            }
        }
        // `isBusy` stays set until these messages are on the socket, so nothing overtakes them.
        var sent = WebSocketConnection.SendResult.accepted
        if let rebalance { sent = connection.send(text: rebalance) }
        if sent == .accepted && count > 0 { sent = connection.send(text: String(decoding: message, as: UTF8.self)) }
        state.withLock { $0.isBusy = false }
        switch sent {
        case .accepted where count == 0:
            pump()  // the wait ended without records (or with a rebalance): poll again if credit remains
        case .accepted:
            // Wait until the client took most of it; a poll's message is at most about a quarter of
            // the buffer (batchBytesMax is an eighth), so the next one fits.
            connection.whenDrained(below: settings.bufferBytes / 4) { [self] in pump() }
        case .bufferFull, .closed:
            return  // the socket is closing; closed() leaves the group
        }
    }

    /// Records a generation the client has not seen: the `rebalance` message to send first, and
    /// partitions that moved away leave the delivered cursor (their progress is the new owner's).
    private func noteMembership(_ m: GroupMembership) -> String? {
        let changed = state.withLock { state -> Bool in
            guard m.generation != state.generation || m.assignment != state.assignment else { return false }
            state.generation = m.generation
            state.assignment = m.assignment
            let owned = Set(m.assignment)
            state.delivered = state.delivered.filter { owned.contains($0.key) }
            return true
        }
        return changed ? Self.message("rebalance", m) : nil
    }

    private func failed(_ error: BrokerError, on connection: WebSocketConnection) {
        switch error {
        case .shuttingDown:
            connection.close(code: .goingAway, reason: "broker shutting down")
        case .unknownMember, .unknownGroup:
            // The session expired or the group was deleted: this socket's member is gone.
            connection.send(text: Self.error(id: Array("null".utf8), error))
            state.withLock { $0.phase = .awaitingJoin }
            connection.close(code: .internalError, reason: "the member left the group")
        default:
            // Transient (no leader, coordinator moving) or the member's own state (offset reset
            // none): say so, and try again in a second, keeping the member.
            connection.send(text: Self.error(id: Array("null".utf8), error))
            DispatchQueue.global().asyncAfter(deadline: .now() + .seconds(1)) { [self] in
                state.withLock { $0.isBusy = false }
                pump()
            }
        }
    }

    // MARK: heartbeats

    private func scheduleHeartbeat() {
        let interval = state.withLock { $0.heartbeatMilliseconds }
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(interval)) { [self] in heartbeat() }
    }

    /// Keeps the member alive while no poll runs (no credit, or the client is slow to read), and
    /// reschedules itself for as long as the member lives.
    private func heartbeat() {
        let (member, isLive): (MemberID?, Bool) = state.withLock { state in
            guard !state.isClosed, let member = state.member else { return (nil, false) }
            let quiet = DispatchTime.now().uptimeNanoseconds - state.lastContact.uptimeNanoseconds
            guard !state.isBusy, quiet >= UInt64(state.heartbeatMilliseconds) * 1_000_000 else { return (nil, true) }
            state.isBusy = true
            return (member, true)
        }
        guard isLive else { return }
        scheduleHeartbeat()
        guard let member else { return }
        broker.heartbeat(group, member: member) { [self] result in
            DispatchQueue.global().async { self.heartbeatAnswered(result) }
        }
    }

    private func heartbeatAnswered(_ result: Result<GroupMembership, BrokerError>) {
        guard let connection = state.withLock({ $0.connection }) else { return }
        switch result {
        case .failure(let error):
            return failed(error, on: connection)
        case .success(let membership):
            let rebalance = noteMembership(membership)
            state.withLock { $0.lastContact = .now() }
            if let rebalance { connection.send(text: rebalance) }
            state.withLock { $0.isBusy = false }
            pump()
        }
    }

    // MARK: rendering

    static func message(_ type: String, _ m: GroupMembership) -> String {
        var w = JSONWriter(capacity: 256)
        w.raw("{\"type\":")
        w.string(type)
        w.raw(",")
        Render.membershipFields(m, into: &w)
        w.raw("}")
        return String(decoding: w.bytes, as: UTF8.self)
    }

    /// The `records` message and how many records it holds (an empty message for none).
    static func records(_ poll: GroupPollResult, format: ValueFormat) throws(DecodeError) -> ([UInt8], Int) {
        var w = JSONWriter(capacity: 64 + poll.reads.reduce(0) { $0 + $1.batches.reduce(0) { $0 + $1.sizeBytes } } * 2)
        w.raw("{\"type\":\"records\",\"generation\":")
        w.int(Int64(poll.membership.generation))
        w.raw(",\"records\":[")
        var count = 0
        for read in poll.reads {
            try read.forEachRecordView { (r: RecordView) throws(DecodeError) -> Bool in
                if count > 0 { w.raw(",") }
                count += 1
                try Render.record(r, format: format, from: (read.topic, read.partition), into: &w)
                return true
            }
        }
        w.raw("]}")
        return count > 0 ? (w.bytes, count) : ([], 0)
    }

    static func committed(id: [UInt8], generation: Int32, offsets: [CommittedOffsetEntry]) -> String {
        var w = JSONWriter(capacity: 64 + offsets.count * 48)
        w.raw("{\"type\":\"committed\",\"id\":")
        w.raw(id)
        w.raw(",\"generation\":")
        w.int(Int64(generation))
        w.raw(",\"offsets\":")
        Render.offsetList(offsets.map { ($0.partition, $0.offset.rawValue, nil) }, missing: "null", into: &w)
        w.raw("}")
        return String(decoding: w.bytes, as: UTF8.self)
    }

    static func error(id: [UInt8], _ error: BrokerError) -> String { ProduceSocket.error(id: id, error) }
}

extension BrokerService {
    func openGroupWebSocket(_ params: [String: String], _ request: HTTPRequest, _ responder: Responder) throws(BrokerError) {
        let group = try Self.group(params)  // a bad name is a plain 400, before any upgrade
        let limits = broker.configuration.limits
        var socketLimits = webSocketLimits
        // Only small control messages come in (a commit of every offset is well below this).
        socketLimits.messageBytesMax = min(socketLimits.messageBytesMax, 1 << 20)
        let settings = GroupSocket.Settings(
            batchRecordsMax: try Self.integer(request, "max_records", default: 500, range: 1...limits.readRecordsMax),
            batchBytesMax: min(try Self.integer(request, "max_bytes", default: 1 << 20, range: 1...limits.readBytesMax), socketLimits.sendBufferBytesMax / 8),
            waitMilliseconds: min(15_000, limits.waitMillisecondsMax), format: try Self.format(request),
            bufferBytes: socketLimits.sendBufferBytesMax)
        // Group sockets count against the same limit as SSE/NDJSON streams.
        guard openStreams.wrappingAdd(1, ordering: .relaxed).newValue <= limits.streamsMax else {
            openStreams.wrappingSubtract(1, ordering: .relaxed)
            throw .overloaded("too many open streams (\(limits.streamsMax)); retry later")
        }
        let session = GroupSocket(broker: broker, group: group, settings: settings) { [self] in
            openStreams.wrappingSubtract(1, ordering: .relaxed)
        }
        if responder.upgradeToWebSocket(request, limits: socketLimits, handler: session) != .upgrading {
            openStreams.wrappingSubtract(1, ordering: .relaxed)
        }
    }
}

import BrokerModel
import BrokerRuntime
import Dispatch
import MicroHTTP
import WebSocketCodec
import Synchronization

/// `GET /v1/topics/{topic}/partitions/{partition}/ws?offset=...`: a partition read pushed over one
/// WebSocket, paced by credit the client grants.
///
/// Client → server: `{"type":"credit","records":N}` and/or `"bytes":B` (added to what is left). The
/// server sends only while every kind of credit granted so far is positive (`bytes` counts the JSON
/// text sent, so it may overshoot by one message).
///
/// Server → client: `{"type":"records","topic":...,"partition":...,"records":[...],"next_offset":...,
/// "high_watermark":...,"log_start_offset":...}` — the read path's rendering (Rendering.swift) with a
/// `type` — and `{"type":"error","error_code":...,"message":...}` for a bad message or a failed read.
///
/// Like ``PartitionStream`` it is the long-poll read repeated: read from `next` with a wait (returns as
/// soon as a record is committed), send, then wait until the client has taken the bytes down to half the
/// send buffer (`whenDrained`) before reading again. No thread waits on the client or on new data.
/// Closing the socket ends the session (a read already parked finishes within its wait and is dropped).
final class ConsumeSocket: WebSocketHandler {
    struct Settings: Sendable {
        var batchRecordsMax: Int
        var batchBytesMax: Int
        var waitMilliseconds: Int
        var format: ValueFormat
        /// The socket's send buffer; one message is rendered to at most half of it.
        var bufferBytes: Int
    }

    struct State {
        var next: OffsetSpec
        var creditRecords: Int?
        var creditBytes: Int?
        var isReading = false
        var isClosed = false
        var connection: WebSocketConnection?
        var hasCredit: Bool {
            (creditRecords != nil || creditBytes != nil) && (creditRecords ?? 1) > 0 && (creditBytes ?? 1) > 0
        }
    }

    /// Credit beyond this is clamped (a client cannot make a counter overflow).
    static let creditMax = Int(Int32.max)

    let broker: Broker
    let topic: TopicName
    let partition: PartitionID
    let settings: Settings
    let onClose: @Sendable () -> Void
    let state: Mutex<State>

    init(broker: Broker, topic: TopicName, partition: PartitionID, start: OffsetSpec, settings: Settings,
         onClose: @escaping @Sendable () -> Void) {
        self.broker = broker
        self.topic = topic
        self.partition = partition
        self.settings = settings
        self.onClose = onClose
        state = Mutex(State(next: start))
    }

    func opened(_ connection: WebSocketConnection) {
        state.withLock { $0.connection = connection }
    }

    func received(_ message: WebSocketMessage, on connection: WebSocketConnection) {
        guard case .text(let text) = message else {
            connection.close(code: .unsupportedData, reason: "credit messages are JSON text")
            return
        }
        let body = Array(text.utf8)
        do throws(BrokerError) {
            let node: JSONNode
            do { node = try JSONParser.parse(body) } catch { throw .badRequest("message is not valid JSON: \(error)") }
            guard node["type"]?.stringValue == "credit" else { throw .badRequest("\"type\" must be \"credit\"") }
            let (records, bytes) = try Self.creditGrant(node)
            state.withLock { state in
                if let records { state.creditRecords = min(Self.creditMax, (state.creditRecords ?? 0) + records) }
                if let bytes { state.creditBytes = min(Self.creditMax, (state.creditBytes ?? 0) + bytes) }
            }
            pump()
        } catch {
            connection.send(text: Self.error(error))
        }
    }

    func closed(_ connection: WebSocketConnection, code: WebSocketCloseCode, reason: String) {
        state.withLock {
            $0.isClosed = true
            $0.connection = nil
        }
        onClose()
    }

    /// Starts a read when there is credit and none is running.
    private func pump() {
        let request: ReadRequest? = state.withLock { state in
            guard !state.isClosed, !state.isReading, state.hasCredit else { return nil }
            state.isReading = true
            let records = min(state.creditRecords ?? settings.batchRecordsMax, settings.batchRecordsMax)
            let bytes = min(state.creditBytes ?? settings.batchBytesMax, settings.batchBytesMax)
            return ReadRequest(topic: topic, partition: partition, offset: state.next, maxRecords: records,
                               maxBytes: max(1, bytes), waitMilliseconds: settings.waitMilliseconds)
        }
        guard let request else { return }
        broker.read(request) { [self] result in
            // Never continue inside the completion: it may run synchronously (see PartitionStream).
            DispatchQueue.global().async { self.deliver(result) }
        }
    }

    private func deliver(_ result: Result<ReadResult, BrokerError>) {
        guard let connection = state.withLock({ $0.connection }) else { return }
        let read: ReadResult
        switch result {
        case .failure(.shuttingDown):
            connection.close(code: .goingAway, reason: "broker shutting down")
            return
        case .failure(let error):
            connection.send(text: Self.error(error))
            connection.close(code: .internalError, reason: "read failed")
            return
        case .success(let r):
            read = r
        }
        let rendered: (bytes: [UInt8], count: Int, nextOffset: Offset)
        do {
            rendered = try Render.read(read, format: settings.format, byteBudget: settings.bufferBytes / 2)
        } catch {
            connection.send(text: Self.error(.storage("a stored batch could not be decoded: \(error)")))
            connection.close(code: .internalError, reason: "read failed")
            return
        }
        var message: [UInt8] = []
        if rendered.count > 0 {
            // The read path's object with a "type" member first: {"type":"records","topic":...}.
            message.reserveCapacity(rendered.bytes.count + 17)
            message += Array("{\"type\":\"records\",".utf8)
            message += rendered.bytes.dropFirst()
        }
        state.withLock { state in
            state.next = .exact(rendered.nextOffset)
            if rendered.count > 0 {
                if let records = state.creditRecords { state.creditRecords = records - rendered.count }
                if let bytes = state.creditBytes { state.creditBytes = bytes - message.count }
            }
        }
        // `isReading` stays set until this answer is on the socket: a credit message arriving in
        // between must not start the next read, whose answer could otherwise be sent first and
        // reach the client out of order.
        let sent = message.isEmpty ? .accepted : connection.send(text: String(decoding: message, as: UTF8.self))
        state.withLock { $0.isReading = false }
        switch sent {
        case .accepted where message.isEmpty:
            pump()  // the wait ended without records: read again (if credit remains)
        case .accepted:
            connection.whenDrained(below: settings.bufferBytes / 2) { [self] in pump() }
        case .bufferFull, .closed:
            return  // the socket is closing; closed() ends the session
        }
    }

    static func error(_ error: BrokerError) -> String {
        var w = JSONWriter(capacity: 128)
        w.raw("{\"type\":\"error\",\"error_code\":")
        w.int(error.errorCode)
        w.raw(",\"message\":")
        w.string(error.message)
        w.raw("}")
        return String(decoding: w.bytes, as: UTF8.self)
    }
}

extension BrokerService {
    func openConsumeWebSocket(_ params: [String: String], _ request: HTTPRequest, _ responder: Responder) throws(BrokerError) {
        let topic = try Self.topic(params)
        let partition = try Self.partition(params)
        let limits = broker.configuration.limits
        let offset = try Self.offset(request)
        let maxRecords = try Self.integer(request, "max_records", default: 500, range: 1...limits.readRecordsMax)
        let maxBytes = try Self.integer(request, "max_bytes", default: 1 << 20, range: 1...limits.readBytesMax)
        let format = try Self.format(request)
        try checkStart(offset, topic: topic, partition: partition)
        // Consume sessions count against the same limit as SSE/NDJSON streams.
        guard openStreams.wrappingAdd(1, ordering: .relaxed).newValue <= limits.streamsMax else {
            openStreams.wrappingSubtract(1, ordering: .relaxed)
            throw .overloaded("too many open streams (\(limits.streamsMax)); retry later")
        }
        let socketLimits = webSocketLimits
        let settings = ConsumeSocket.Settings(
            batchRecordsMax: maxRecords, batchBytesMax: min(maxBytes, socketLimits.sendBufferBytesMax / 2),
            waitMilliseconds: min(15_000, limits.waitMillisecondsMax), format: format, bufferBytes: socketLimits.sendBufferBytesMax)
        let session = ConsumeSocket(broker: broker, topic: topic, partition: partition, start: offset, settings: settings) { [self] in
            openStreams.wrappingSubtract(1, ordering: .relaxed)
        }
        if responder.upgradeToWebSocket(request, limits: socketLimits, handler: session) != .upgrading {
            openStreams.wrappingSubtract(1, ordering: .relaxed)
        }
    }
}

extension ConsumeSocket {
    /// A credit message's `records` and/or `bytes` (non-negative, capped at `creditMax`); the
    /// partition and group sockets take credit the same way.
    static func creditGrant(_ node: JSONNode) throws(BrokerError) -> (records: Int?, bytes: Int?) {
        func amount(_ name: String) throws(BrokerError) -> Int? {
            guard let field = node[name] else { return nil }
            guard let value = field.int64Value, value >= 0 else { throw .badRequest("\"\(name)\" must be a non-negative integer") }
            return Int(min(value, Int64(creditMax)))
        }
        let records = try amount("records")
        let bytes = try amount("bytes")
        guard records != nil || bytes != nil else { throw .badRequest("a credit message needs \"records\" and/or \"bytes\"") }
        return (records, bytes)
    }
}

import BrokerModel
import BrokerRuntime
import Dispatch
import MicroHTTP
import WebSocketCodec
import Synchronization

/// `GET /v1/topics/{topic}/ws`: a produce session over one WebSocket.
///
/// Client → server, one JSON text message per request:
///
///     {"type":"produce","id":"<correlation id>","acks":"all","records":[ProduceRecord, ...]}
///
/// Server → client, exactly one answer per request, in completion order (pipelining: the client may
/// send many before the first answer; `id` correlates):
///
///     {"type":"ack","id":...,"offsets":[{"partition":0,"offset":42}, ...]}
///     {"type":"error","id":...,"error_code":40001,"message":"..."}
///
/// `id` is echoed verbatim (any JSON scalar); `acks` is `0`, `1` or `all` (default `all`), like the
/// HTTP produce. Binary messages close the socket with 1003.
///
/// Order and bounds: the requests of one socket are parsed and appended one after the other, in arrival
/// order, on a serial queue of the socket's own (never on the shared WebSocket loop thread, which a slow
/// disk write would stall for every socket). At most ``inFlightMax`` requests wait for their ack: beyond
/// it a request is answered at once with error_code 42901 (nothing appended). Messages received but not
/// yet parsed are bounded in bytes (``queuedBytesMax``); a client that pipelines past that is closed
/// with 1013 (try again later) rather than buffered.
final class ProduceSocket: WebSocketHandler {
    static let inFlightMax = 1_000

    /// Messages merged into one produce at most (they also share one batch of the log).
    static let batchMessagesMax = 256

    struct Load {
        var queuedBytes = 0
        var inFlight = 0
        /// Received, not yet parsed (text, bytes); a drain on the serial queue takes them in order.
        var pending: [(String, Int)] = []
        var isDraining = false
    }

    let broker: Broker
    let topic: TopicName
    let queuedBytesMax: Int
    let load = Mutex(Load())
    /// Serial: keeps this socket's requests in arrival order.
    let queue = DispatchQueue(label: "petrel.websocket.produce")

    init(broker: Broker, topic: TopicName, queuedBytesMax: Int) {
        self.broker = broker
        self.topic = topic
        self.queuedBytesMax = queuedBytesMax
    }

    func received(_ message: WebSocketMessage, on connection: WebSocketConnection) {
        guard case .text(let text) = message else {
            connection.close(code: .unsupportedData, reason: "produce messages are JSON text")
            return
        }
        let size = text.utf8.count
        let accepted = load.withLock { load -> Bool in
            guard load.queuedBytes + size <= queuedBytesMax else { return false }
            load.queuedBytes += size
            return true
        }
        guard accepted else {
            connection.close(code: .tryAgainLater, reason: "too many unprocessed produce requests")
            return
        }
        let schedule = load.withLock { load -> Bool in
            load.pending.append((text, size))
            defer { load.isDraining = true }
            return !load.isDraining
        }
        if schedule { queue.async { [self] in drain(on: connection) } }
    }

    /// Takes every message queued so far and processes them as one batch (on the serial queue):
    /// consecutive requests with the same `acks` become one append and one group commit, then one
    /// ack per request, in order. Under pipelining this is what lets one socket go past one disk
    /// write and one wake-up per message.
    private func drain(on connection: WebSocketConnection) {
        while true {
            let batch = load.withLock { load -> [(String, Int)] in
                let taken = Array(load.pending.prefix(Self.batchMessagesMax))
                load.pending.removeFirst(taken.count)
                if taken.isEmpty { load.isDraining = false }
                return taken
            }
            if batch.isEmpty { return }
            var parsed: [Request] = []
            for (text, _) in batch {
                if let request = parse(text, on: connection) { parsed.append(request) }
            }
            var start = 0
            while start < parsed.count {
                var end = start + 1
                while end < parsed.count && parsed[end].acks == parsed[start].acks { end += 1 }
                produce(Array(parsed[start..<end]), on: connection, fallBackAlone: end - start > 1)
                start = end
            }
            let bytes = batch.reduce(0) { $0 + $1.1 }
            load.withLock { $0.queuedBytes -= bytes }
        }
    }

    /// One parsed, admitted request: its correlation id, acks and records.
    struct Request {
        var id: [UInt8]
        var acks: Acks
        var records: [ProduceRecord]
    }

    /// Produces `requests` as one call and answers each. A merged call refused for bad input (one
    /// request's record too large, say) is retried request by request, so one bad request never
    /// fails its neighbours.
    private func produce(_ requests: [Request], on connection: WebSocketConnection, fallBackAlone: Bool) {
        let records = requests.flatMap(\.records)
        broker.produce(topic: topic, records: records, acks: requests[0].acks) { [self] result in
            if case .failure(let error) = result, fallBackAlone, error.httpStatus < 500 {
                for r in requests { produce([r], on: connection, fallBackAlone: false) }
                return
            }
            load.withLock { $0.inFlight -= requests.count }
            switch result {
            case .success(let placements):
                var at = 0
                for r in requests {
                    connection.send(text: Self.ack(id: r.id, placements: Array(placements[at..<(at + r.records.count)])))
                    at += r.records.count
                }
            case .failure(let error):
                for r in requests { connection.send(text: Self.error(id: r.id, error)) }
            }
        }
    }

    /// Parses and admits one request (on the socket's serial queue); a bad one is answered here.
    private func parse(_ text: String, on connection: WebSocketConnection) -> Request? {
        guard !connection.isClosed else { return nil }  // the client left: do not append for nobody
        let body = Array(text.utf8)
        var id: [UInt8] = Array("null".utf8)
        do throws(BrokerError) {
            let node = try Self.message(body, id: &id)
            guard node["type"]?.stringValue == "produce" else { throw .badRequest("\"type\" must be \"produce\"") }
            var acks = Acks.all
            if let acksNode = node["acks"] {
                let text = acksNode.stringValue ?? acksNode.int64Value.map(String.init) ?? ""
                guard let parsed = Acks(parameter: text) else { throw .badRequest("\"acks\" must be 0, 1 or \"all\"") }
                acks = parsed
            }
            guard let items = node["records"]?.arrayValue, !items.isEmpty else {
                throw .badRequest("\"records\" must be a non-empty array")
            }
            var records: [ProduceRecord] = []
            records.reserveCapacity(items.count)
            for (index, item) in items.enumerated() {
                records.append(try ProduceParsing.record(item, body: body, context: "records[\(index)]"))
            }
            let admitted = load.withLock { load -> Bool in
                guard load.inFlight < Self.inFlightMax else { return false }
                load.inFlight += 1
                return true
            }
            guard admitted else {
                throw .overloaded("more than \(Self.inFlightMax) produce requests in flight on this socket; wait for acks")
            }
            return Request(id: id, acks: acks, records: records)
        } catch {
            connection.send(text: Self.error(id: id, error))
            return nil
        }
    }

    func closed(_ connection: WebSocketConnection, code: WebSocketCloseCode, reason: String) {
        // In-flight produces still complete (the records are appended); their answers are dropped.
    }

    static func ack(id: [UInt8], placements: [RecordPlacement]) -> String {
        var w = JSONWriter(capacity: 48 + placements.count * 36)
        w.raw("{\"type\":\"ack\",\"id\":")
        w.raw(id)
        w.raw(",\"offsets\":[")
        for (index, placement) in placements.enumerated() {
            if index > 0 { w.raw(",") }
            w.raw("{\"partition\":")
            w.int(Int64(placement.partition.rawValue))
            w.raw(",\"offset\":")
            if let offset = placement.offset { w.int(offset.rawValue) } else { w.raw("null") }
            w.raw("}")
        }
        w.raw("]}")
        return String(decoding: w.bytes, as: UTF8.self)
    }

    static func error(id: [UInt8], _ error: BrokerError) -> String {
        var w = JSONWriter(capacity: 128)
        w.raw("{\"type\":\"error\",\"id\":")
        w.raw(id)
        w.raw(",\"error_code\":")
        w.int(error.errorCode)
        w.raw(",\"message\":")
        w.string(error.message)
        w.raw("}")
        return String(decoding: w.bytes, as: UTF8.self)
    }
}

extension BrokerService {
    /// WebSocket limits for broker sessions: messages as large as a produce body, a send buffer as large
    /// as a stream's.
    var webSocketLimits: WebSocketLimits {
        let limits = broker.configuration.limits
        var socket = WebSocketLimits()
        socket.messageBytesMax = limits.requestBodyBytesMax
        socket.sendBufferBytesMax = limits.streamBufferBytes
        return socket
    }

    func openProduceWebSocket(_ params: [String: String], _ request: HTTPRequest, _ responder: Responder) throws(BrokerError) {
        let topic = try Self.topic(params)
        _ = try broker.describeTopic(topic)  // an unknown topic is a plain 404, before any upgrade
        let limits = webSocketLimits
        let session = ProduceSocket(broker: broker, topic: topic, queuedBytesMax: 2 * limits.messageBytesMax)
        responder.upgradeToWebSocket(request, limits: limits, handler: session)
    }
}

extension ProduceSocket {
    /// Parses one client message: a JSON object, with its `id` (string or number) kept as written
    /// so answers echo it byte for byte. `id` stays `null` when absent or when parsing fails first.
    static func message(_ body: [UInt8], id: inout [UInt8]) throws(BrokerError) -> JSONNode {
        let node: JSONNode
        do { node = try JSONParser.parse(body) } catch { throw .badRequest("message is not valid JSON: \(error)") }
        guard node.objectValue != nil else { throw .badRequest("message must be a JSON object, got \(node.typeName)") }
        if let idNode = node["id"] {
            guard idNode.arrayValue == nil && idNode.objectValue == nil else { throw .badRequest("\"id\" must be a string or a number") }
            id = Array(body[idNode.range])
        }
        return node
    }
}

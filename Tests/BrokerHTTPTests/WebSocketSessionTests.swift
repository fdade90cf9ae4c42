import WebSocketCodec
import BrokerModel
import BrokerRuntime
import Foundation
import Glibc
import MicroHTTP
import Testing
@testable import BrokerHTTP

/// A broker behind a real HTTP server on an ephemeral port, for the WebSocket sessions.
final class WebSocketHarness {
    let directory = NSTemporaryDirectory() + "petrel-ws-\(UUID().uuidString)"
    let broker: Broker
    let service: BrokerService
    let server: HTTPServer

    init() throws {
        var config = BrokerConfiguration()
        config.dataDirectory = directory
        broker = Broker(configuration: config)
        try broker.start()
        service = BrokerService(broker: broker)
        var http = HTTPServerConfiguration()
        http.port = 0
        http.errorBody = BrokerService.errorBody
        server = HTTPServer(configuration: http, handler: service.handler)
        try server.start()
    }

    deinit {
        server.stop(timeoutSeconds: 1)
        broker.shutdown()
        try? FileManager.default.removeItem(atPath: directory)
    }

    func createTopic(_ name: String, partitions: Int = 1) throws {
        _ = try broker.createTopic(name: TopicName.validate(name).get(), partitions: Int32(partitions), replicationFactor: nil, configs: [])
    }
}

/// A blocking WebSocket client over a raw socket (masks its frames, reads with the codec).
final class WebSocketSessionClient {
    let fd: Int32
    private var buffer: [UInt8] = []
    private var parser = WebSocketFrameParser(role: .client, framePayloadBytesMax: 64 << 20)
    private var frames: [WebSocketFrame] = []
    private(set) var status = 0
    private(set) var responseBody = ""

    init(port: UInt16, path: String, upgrade: Bool = true) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var timeout = timeval(tv_sec: 20, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw ClientError("connect failed: errno \(errno)") }
        var head = "GET \(path) HTTP/1.1\r\nHost: localhost\r\n"
        if upgrade {
            head += "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        }
        try sendRaw(Array((head + "\r\n").utf8))
        let end = try readUntilHeadEnd()
        let headText = String(decoding: buffer[..<end], as: UTF8.self)
        buffer.removeFirst(end + 4)
        status = Int(headText.split(separator: " ")[1]) ?? 0
        if status != 101, let line = headText.split(separator: "\r\n").first(where: { $0.lowercased().hasPrefix("content-length:") }),
            let length = Int(line.split(separator: ":")[1].trimmingCharacters(in: .whitespaces))
        {
            while buffer.count < length { guard try receiveMore() else { break } }
            responseBody = String(decoding: buffer.prefix(length), as: UTF8.self)
        }
    }

    deinit { close(fd) }

    struct ClientError: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }

    func sendRaw(_ bytes: [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw ClientError("send failed: errno \(errno)") }
            sent += n
        }
    }

    func send(text: String) throws {
        try sendRaw(WebSocketFrame(opcode: .text, payload: Array(text.utf8)).serialized(maskingKey: (1, 2, 3, 4)))
    }

    /// The next text message as a JSON object (pings and pongs skipped), or nil at close/EOF.
    func readJSON() throws -> [String: Any]? {
        while true {
            guard let frame = try readFrame() else { return nil }
            switch frame.opcode {
            case .text:
                return try JSONSerialization.jsonObject(with: Data(frame.payload)) as? [String: Any]
            case .close: return nil
            default: continue
            }
        }
    }

    func readFrame() throws -> WebSocketFrame? {
        while frames.isEmpty {
            if !buffer.isEmpty {
                frames += try parser.parse(buffer)
                buffer = []
                continue
            }
            guard try receiveMore() else { return nil }
        }
        return frames.removeFirst()
    }

    private func readUntilHeadEnd() throws -> Int {
        let marker: [UInt8] = [13, 10, 13, 10]
        while true {
            if buffer.count >= 4 {
                for start in 0...(buffer.count - 4) where buffer[start..<(start + 4)].elementsEqual(marker) { return start }
            }
            guard try receiveMore() else { throw ClientError("closed before the response head") }
        }
    }

    private func receiveMore() throws -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65536)
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n < 0 {
            if errno == ECONNRESET { return false }
            throw ClientError("recv failed: errno \(errno)")
        }
        if n == 0 { return false }
        buffer += chunk[..<n]
        return true
    }
}

@Suite struct WebSocketSessionTests {
    @Test func producePipelinedWithAcksAndErrors() throws {
        let harness = try WebSocketHarness()
        try harness.createTopic("orders")
        let client = try WebSocketSessionClient(port: harness.server.port, path: "/v1/topics/orders/ws")
        #expect(client.status == 101)
        try client.send(text: #"{"type":"produce","id":"a","records":[{"value":"one"},{"value":"two"}]}"#)
        try client.send(text: #"{"type":"produce","id":2,"acks":"1","records":[{"value":"three","partition":0}]}"#)
        try client.send(text: #"{"type":"produce","id":"bad","records":[{"nonsense":1}]}"#)
        try client.send(text: #"not json"#)
        var answers: [String: [String: Any]] = [:]
        for _ in 0..<4 {
            let answer = try #require(try client.readJSON())
            answers["\(answer["id"] ?? "null")"] = answer
        }
        #expect(answers["a"]?["type"] as? String == "ack")
        let offsetsA = try #require(answers["a"]?["offsets"] as? [[String: Any]])
        #expect(offsetsA.count == 2)
        #expect(answers["2"]?["type"] as? String == "ack")
        let offsetsB = try #require(answers["2"]?["offsets"] as? [[String: Any]])
        // Offsets 0, 1 and 2 were each given once.
        let all = (offsetsA + offsetsB).compactMap { $0["offset"] as? Int }.sorted()
        #expect(all == [0, 1, 2])
        #expect(answers["bad"]?["type"] as? String == "error")
        #expect(answers["bad"]?["error_code"] as? Int == 40001)
        #expect(answers["<null>"]?["type"] as? String == "error" || answers["null"]?["type"] as? String == "error")
    }

    @Test func unknownTopicAndPlainGetAreHTTPErrors() throws {
        let harness = try WebSocketHarness()
        let missing = try WebSocketSessionClient(port: harness.server.port, path: "/v1/topics/nope/ws")
        #expect(missing.status == 404)
        try harness.createTopic("t")
        let plain = try WebSocketSessionClient(port: harness.server.port, path: "/v1/topics/t/ws", upgrade: false)
        #expect(plain.status == 426)
        #expect(plain.responseBody.contains("error_code"))
        let badOffset = try WebSocketSessionClient(port: harness.server.port, path: "/v1/topics/t/partitions/0/ws?offset=99")
        #expect(badOffset.status == 416)
    }

    @Test func byteCreditStopsAfterOneMessageUntilMoreIsGranted() throws {
        let harness = try WebSocketHarness()
        try harness.createTopic("bytes")
        let producer = try WebSocketSessionClient(port: harness.server.port, path: "/v1/topics/bytes/ws")
        let records = (0..<30).map { #"{"value":"v\#($0)"}"# }.joined(separator: ",")
        try producer.send(text: #"{"type":"produce","id":1,"records":[\#(records)]}"#)
        #expect(try producer.readJSON()?["type"] as? String == "ack")
        let consumer = try WebSocketSessionClient(port: harness.server.port, path: "/v1/topics/bytes/partitions/0/ws?max_records=7")
        // One byte of credit: one message (bytes may be overshot by one message), then nothing more.
        try consumer.send(text: #"{"type":"credit","bytes":1}"#)
        let first = try #require(try consumer.readJSON())
        #expect((first["records"] as? [Any])?.count == 7)
        #expect(first["next_offset"] as? Int == 7)
        // Now records are limited too: had anything been sent in between, this message would not
        // start at offset 7 with exactly 3 records.
        try consumer.send(text: #"{"type":"credit","records":3,"bytes":1000000}"#)
        let second = try #require(try consumer.readJSON())
        let batch = try #require(second["records"] as? [[String: Any]])
        #expect(batch.count == 3)
        #expect(batch.first?["offset"] as? Int == 7)
        #expect(second["next_offset"] as? Int == 10)
    }

    @Test func consumeSendsOnlyWithinCreditThenLongPolls() throws {
        let harness = try WebSocketHarness()
        try harness.createTopic("events")
        let producer = try WebSocketSessionClient(port: harness.server.port, path: "/v1/topics/events/ws")
        let records = (0..<50).map { #"{"value":"v\#($0)"}"# }.joined(separator: ",")
        try producer.send(text: #"{"type":"produce","id":1,"records":[\#(records)]}"#)
        #expect(try producer.readJSON()?["type"] as? String == "ack")

        let consumer = try WebSocketSessionClient(port: harness.server.port, path: "/v1/topics/events/partitions/0/ws?offset=0&max_records=7")
        #expect(consumer.status == 101)
        var values: [String] = []
        var lastNext = 0
        func receive(until count: Int) throws {
            while values.count < count {
                let message = try #require(try consumer.readJSON())
                #expect(message["type"] as? String == "records")
                let batch = try #require(message["records"] as? [[String: Any]])
                #expect(batch.count <= 7)
                values += batch.compactMap { $0["value"] as? String }
                lastNext = message["next_offset"] as? Int ?? -1
            }
        }
        try consumer.send(text: #"{"type":"credit","records":10}"#)
        try receive(until: 10)
        // Exactly the credit: 10 records, not one more (the next message would only come with credit).
        #expect(values.count == 10)
        #expect(lastNext == 10)
        try consumer.send(text: #"{"type":"credit","records":1000}"#)
        try receive(until: 50)
        #expect(values == (0..<50).map { "v\($0)" })
        // Credit left: a record produced now arrives through the long-poll.
        try producer.send(text: #"{"type":"produce","id":2,"records":[{"value":"late"}]}"#)
        try receive(until: 51)
        #expect(values.last == "late")
        #expect(lastNext == 51)
        try consumer.send(text: #"{"type":"credit"}"#)
        let error = try #require(try consumer.readJSON())
        #expect(error["type"] as? String == "error")
    }

    /// The group socket: join, records only within credit, commits (and a stale generation is an
    /// error, not a close), a second member's join pushes a rebalance, and closing leaves at once.
    @Test func groupSocketJoinsConsumesCommitsAndLeavesOnClose() throws {
        let harness = try WebSocketHarness()
        try harness.createTopic("events", partitions: 2)
        let producer = try WebSocketSessionClient(port: harness.server.port, path: "/v1/topics/events/ws")
        let records = (0..<20).map { #"{"value":"v\#($0)","partition":\#($0 % 2)}"# }.joined(separator: ",")
        try producer.send(text: #"{"type":"produce","id":1,"records":[\#(records)]}"#)
        #expect(try producer.readJSON()?["type"] as? String == "ack")

        let first = try WebSocketSessionClient(port: harness.server.port, path: "/v1/groups/g1/ws")
        #expect(first.status == 101)
        try first.send(text: #"{"type":"commit"}"#)
        #expect(try first.readJSON()?["error_code"] as? Int == 40903)  // not joined yet
        try first.send(text: #"{"type":"join","topics":["events"],"auto_offset_reset":"earliest","auto_commit":false}"#)
        try first.send(text: #"{"type":"credit","records":5}"#)
        let joined = try #require(try first.readJSON())
        #expect(joined["type"] as? String == "joined")
        #expect((joined["assignment"] as? [Any])?.count == 2)
        let generation = try #require(joined["generation"] as? Int)
        var got: [[String: Any]] = []
        while got.count < 5 {
            let m = try #require(try first.readJSON())
            #expect(m["type"] as? String == "records")
            #expect(m["generation"] as? Int == generation)
            got += try #require(m["records"] as? [[String: Any]])
        }
        #expect(got.count == 5)  // exactly the credit
        try first.send(text: #"{"type":"commit","id":"c1"}"#)
        let committed = try #require(try first.readJSON())
        #expect(committed["type"] as? String == "committed")
        #expect(committed["id"] as? String == "c1")
        let total = (committed["offsets"] as? [[String: Any]] ?? []).compactMap { $0["offset"] as? Int }.reduce(0, +)
        #expect(total == 5)  // next offsets after the 5 records sent, summed over partitions
        try first.send(text: #"{"type":"commit","id":"old","generation":\#(generation - 1),"offsets":[{"topic":"events","partition":0,"offset":1}]}"#)
        let stale = try #require(try first.readJSON())
        #expect(stale["error_code"] as? Int == 40904)
        #expect(stale["id"] as? String == "old")

        // A second member joins: the first learns the rebalance (through its heartbeat: no credit).
        let second = try WebSocketSessionClient(port: harness.server.port, path: "/v1/groups/g1/ws")
        try second.send(text: #"{"type":"join","topics":["events"],"auto_offset_reset":"earliest","auto_commit":false}"#)
        let secondJoined = try #require(try second.readJSON())
        #expect((secondJoined["assignment"] as? [Any])?.count == 1)
        let rebalance = try #require(try first.readJSON())
        #expect(rebalance["type"] as? String == "rebalance")
        #expect((rebalance["assignment"] as? [Any])?.count == 1)
        #expect(rebalance["generation"] as? Int ?? 0 > generation)

        // The second closes: the group rebalances at once and the first gets both partitions back.
        try second.sendRaw(WebSocketFrame(opcode: .close, payload: WebSocketClose(code: .normalClosure).encoded()).serialized(maskingKey: (1, 2, 3, 4)))
        let back = try #require(try first.readJSON())
        #expect(back["type"] as? String == "rebalance")
        #expect((back["assignment"] as? [Any])?.count == 2)
    }
}

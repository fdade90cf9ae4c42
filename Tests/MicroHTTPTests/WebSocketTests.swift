import Dispatch
import Glibc
import Synchronization
import Testing
import WebSocketCodec

@testable import MicroHTTP

/// Echoes every message; records how each socket closed.
final class EchoSocketHandler: WebSocketHandler {
    let closes = Mutex<[(code: WebSocketCloseCode, reason: String)]>([])
    let opened = Atomic<Int>(0)

    func opened(_ connection: WebSocketConnection) { opened.add(1, ordering: .relaxed) }

    func received(_ message: WebSocketMessage, on connection: WebSocketConnection) {
        switch message {
        case .text(let text): connection.send(text: text)
        case .binary(let bytes): connection.send(binary: bytes)
        }
    }

    func closed(_ connection: WebSocketConnection, code: WebSocketCloseCode, reason: String) {
        closes.withLock { $0.append((code, reason)) }
    }

    var closeCodes: [UInt16] { closes.withLock { $0.map(\.code.rawValue) } }
}

func startWebSocketServer(
    limits: WebSocketLimits = WebSocketLimits(), _ configure: (inout HTTPServerConfiguration) -> Void = { _ in },
    handler: any WebSocketHandler
) throws -> HTTPServer {
    try startServer(configure) { request, responder in
        if request.path == "/ws" {
            responder.upgradeToWebSocket(request, limits: limits, handler: handler)
        } else {
            responder.respond(HTTPResponse(status: 200, body: Array("plain".utf8)))
        }
    }
}

@Suite struct WebSocketTests {
    @Test func handshakeAndEcho() throws {
        let handler = EchoSocketHandler()
        let server = try startWebSocketServer(handler: handler)
        defer { server.stop(timeoutSeconds: 1) }
        let client = try WebSocketTestClient(port: server.port)
        let response = try client.handshake()
        #expect(response.status == 101)
        #expect(response.header("Sec-WebSocket-Accept") == WebSocketTestClient.sampleAccept)
        #expect(response.header("Upgrade")?.lowercased() == "websocket")
        #expect(response.header("Connection")?.lowercased().contains("upgrade") == true)
        try client.send(text: "héllo")
        #expect(try client.readFrame() == WebSocketFrame(opcode: .text, payload: Array("héllo".utf8)))
        let big = (0..<200_000).map { UInt8(truncatingIfNeeded: $0) }
        try client.send(.binary, big)
        #expect(try client.readFrame() == WebSocketFrame(opcode: .binary, payload: big))
        #expect(handler.opened.load(ordering: .relaxed) == 1)
    }

    @Test func firstFrameInTheSamePacketAsTheHandshake() throws {
        let server = try startWebSocketServer(handler: EchoSocketHandler())
        defer { server.stop(timeoutSeconds: 1) }
        let client = try WebSocketTestClient(port: server.port)
        let frame = WebSocketFrame(opcode: .text, payload: Array("early".utf8)).serialized(maskingKey: (5, 6, 7, 8))
        #expect(try client.handshake(trailing: frame).status == 101)
        #expect(try client.readFrame()?.payload == Array("early".utf8))
    }

    @Test func badHandshakesAreRefused() throws {
        let server = try startWebSocketServer(handler: EchoSocketHandler())
        defer { server.stop(timeoutSeconds: 1) }
        let key = WebSocketTestClient.sampleKey
        let cases: [(headers: [(String, String)], status: Int)] = [
            ([("Connection", "Upgrade"), ("Sec-WebSocket-Version", "13"), ("Sec-WebSocket-Key", key)], 426),
            ([("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13"), ("Sec-WebSocket-Key", key)], 400),
            ([("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Version", "8"), ("Sec-WebSocket-Key", key)], 426),
            ([("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Version", "13"), ("Sec-WebSocket-Key", "c2hvcnQ=")], 400),
            ([("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Version", "13")], 400),
        ]
        for (headers, status) in cases {
            let client = try WebSocketTestClient(port: server.port)
            let response = try client.handshake(headers: headers)
            #expect(response.status == status, "\(headers)")
            #expect(response.text.contains("\"error_code\":\(status)"))
        }
        // POST is refused too, and plain requests still work.
        let http = try TestClient(port: server.port)
        let post = try http.request(
            "POST", "/ws", headers: [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Version", "13"), ("Sec-WebSocket-Key", key)],
            body: [])
        #expect(post.status == 400)
        #expect(try http.request("GET", "/other").text == "plain")
    }

    @Test func fragmentedClientMessageIsDeliveredWhole() throws {
        let server = try startWebSocketServer(handler: EchoSocketHandler())
        defer { server.stop(timeoutSeconds: 1) }
        let client = try WebSocketTestClient(port: server.port)
        #expect(try client.handshake().status == 101)
        try client.send(.text, Array("frag".utf8), isFinal: false)
        try client.send(.ping, [1])
        try client.send(.continuation, Array("ment".utf8), isFinal: false)
        try client.send(.continuation, Array("ed".utf8))
        #expect(try client.readFrame() == WebSocketFrame(opcode: .pong, payload: [1]))
        #expect(try client.readFrame() == WebSocketFrame(opcode: .text, payload: Array("fragmented".utf8)))
    }

    @Test func closeHandshakeInitiatedByTheClient() throws {
        let handler = EchoSocketHandler()
        let server = try startWebSocketServer(handler: handler)
        defer { server.stop(timeoutSeconds: 1) }
        let client = try WebSocketTestClient(port: server.port)
        #expect(try client.handshake().status == 101)
        try client.send(.close, WebSocketClose(code: .normalClosure, reason: "bye").encoded())
        #expect(try client.readUntilClose() == WebSocketClose(code: .normalClosure))
        #expect(try client.readsEOF())
        waitFor { !handler.closeCodes.isEmpty }
        #expect(handler.closes.withLock { $0.map(\.reason) } == ["bye"])
        #expect(handler.closeCodes == [1000])
    }

    @Test func closeInitiatedByTheServer() throws {
        final class Closer: WebSocketHandler {
            let codes = Mutex<[UInt16]>([])
            func received(_ message: WebSocketMessage, on connection: WebSocketConnection) {
                connection.close(code: WebSocketCloseCode(rawValue: 4000), reason: "done")
                #expect(connection.send(text: "late") == .closed)
            }
            func closed(_ connection: WebSocketConnection, code: WebSocketCloseCode, reason: String) {
                codes.withLock { $0.append(code.rawValue) }
            }
        }
        let handler = Closer()
        let server = try startWebSocketServer(handler: handler)
        defer { server.stop(timeoutSeconds: 1) }
        let client = try WebSocketTestClient(port: server.port)
        #expect(try client.handshake().status == 101)
        try client.send(text: "please close")
        #expect(try client.readUntilClose() == WebSocketClose(code: WebSocketCloseCode(rawValue: 4000), reason: "done"))
        try client.send(.close, WebSocketClose(code: WebSocketCloseCode(rawValue: 4000)).encoded())
        #expect(try client.readsEOF())
        waitFor { !handler.codes.withLock { $0.isEmpty } }
        #expect(handler.codes.withLock { $0 } == [4000])
    }

    @Test func oversizeMessageIsClosedWith1009() throws {
        let handler = EchoSocketHandler()
        var limits = WebSocketLimits()
        limits.messageBytesMax = 1000
        let server = try startWebSocketServer(limits: limits, handler: handler)
        defer { server.stop(timeoutSeconds: 1) }
        let client = try WebSocketTestClient(port: server.port)
        #expect(try client.handshake().status == 101)
        try client.send(.binary, [UInt8](repeating: 1, count: 600), isFinal: false)
        try client.send(.continuation, [UInt8](repeating: 2, count: 600))
        #expect(try client.readUntilClose()?.code == .messageTooBig)
        #expect(try client.readsEOF())
        waitFor { !handler.closeCodes.isEmpty }
        #expect(handler.closeCodes == [1009])
    }

    @Test func unmaskedFrameIsClosedWith1002() throws {
        let handler = EchoSocketHandler()
        let server = try startWebSocketServer(handler: handler)
        defer { server.stop(timeoutSeconds: 1) }
        let client = try WebSocketTestClient(port: server.port)
        #expect(try client.handshake().status == 101)
        try client.sendRaw(WebSocketFrame(opcode: .text, payload: Array("naked".utf8)).serialized())
        #expect(try client.readUntilClose()?.code == .protocolError)
        #expect(try client.readsEOF())
        waitFor { !handler.closeCodes.isEmpty }
        #expect(handler.closeCodes == [1002])
    }

    @Test func invalidUTF8TextIsClosedWith1007() throws {
        let handler = EchoSocketHandler()
        let server = try startWebSocketServer(handler: handler)
        defer { server.stop(timeoutSeconds: 1) }
        let client = try WebSocketTestClient(port: server.port)
        #expect(try client.handshake().status == 101)
        try client.send(.text, [0x61, 0xC0, 0x80])  // overlong encoding of NUL
        #expect(try client.readUntilClose()?.code == .invalidPayloadData)
        #expect(try client.readsEOF())
        waitFor { !handler.closeCodes.isEmpty }
        #expect(handler.closeCodes == [1007])
    }

    @Test func recorderRecordsAnUpgradeAndRefusesABadHandshake() {
        let good = ResponseRecorder()
        let request = HTTPRequest(
            method: "GET", rawPath: "/ws",
            headers: [
                ("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Version", "13"),
                ("Sec-WebSocket-Key", WebSocketTestClient.sampleKey),
            ])
        #expect(good.responder.upgradeToWebSocket(request, handler: EchoSocketHandler()) == .upgrading)
        #expect(good.isWebSocketUpgrade)
        #expect(good.response == nil)
        let bad = ResponseRecorder()
        var wrongVersion = request
        wrongVersion.headers[2].value = "12"
        #expect(bad.responder.upgradeToWebSocket(wrongVersion, handler: EchoSocketHandler()) == .refused(status: 426))
        #expect(!bad.isWebSocketUpgrade)
        #expect(bad.response?.status == 426)
        #expect(bad.response?.headers.contains { $0.name == "Sec-WebSocket-Version" && $0.value == "13" } == true)
    }

    @Test func lyingLengthIsRefusedAndTheServerStaysUp() throws {
        let handler = EchoSocketHandler()
        let server = try startWebSocketServer(handler: handler)
        defer { server.stop(timeoutSeconds: 1) }
        let client = try WebSocketTestClient(port: server.port)
        #expect(try client.handshake().status == 101)
        // Claims 2^62 bytes, sends 3.
        try client.sendRaw([0x82, 0xFF, 0x40, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 9, 9, 9])
        #expect(try client.readUntilClose()?.code == .messageTooBig)
        let second = try WebSocketTestClient(port: server.port)
        #expect(try second.handshake().status == 101)
        try second.send(text: "still here")
        #expect(try second.readFrame()?.payload == Array("still here".utf8))
    }

    @Test(arguments: [UInt64(7), 99])
    func garbageAfterTheHandshakeClosesOnlyThatSocket(seed: UInt64) throws {
        var random = SplitMix64(seed: seed)
        let handler = EchoSocketHandler()
        var limits = WebSocketLimits()
        limits.messageBytesMax = 4096
        limits.closeTimeoutSeconds = 0.5
        let server = try startWebSocketServer(limits: limits, handler: handler)
        defer { server.stop(timeoutSeconds: 1) }
        for round in 0..<20 {
            let client = try WebSocketTestClient(port: server.port)
            #expect(try client.handshake().status == 101)
            var garbage = (0..<Int.random(in: 2...3000, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
            if round % 2 == 0 { garbage[1] |= 0x80 }  // masked: gets past the first checks more often
            try? client.sendRaw(garbage)
            // Half-close: if the garbage happened to be a valid prefix (say, a header promising more), the
            // server sees EOF and drops the socket instead of waiting for the rest.
            shutdown(client.fd, Int32(SHUT_WR))
            // Either a close with a protocol-level code, or the connection just ends.
            if let close = try client.readUntilClose() {
                #expect([nil, 1000, 1002, 1007, 1009].contains(close.code?.rawValue), "seed \(seed) round \(round): \(close)")
            }
        }
        waitFor { server.webSocketCount == 0 }
        #expect(server.webSocketCount == 0, "seed \(seed)")
        let healthy = try WebSocketTestClient(port: server.port)
        #expect(try healthy.handshake().status == 101)
        try healthy.send(text: "fine")
        #expect(try healthy.readFrame()?.payload == Array("fine".utf8))
    }

    @Test func clientThatNeverReadsIsDisconnectedWithBoundedMemory() throws {
        final class Flooder: WebSocketHandler {
            let results = Mutex<[WebSocketConnection.SendResult]>([])
            let maxBuffered = Atomic<Int>(0)
            let closedCode = Mutex<UInt16?>(nil)
            func opened(_ connection: WebSocketConnection) {
                let chunk = [UInt8](repeating: 7, count: 64 * 1024)
                // Send from another thread, as an application would; stop at the first refusal.
                DispatchQueue.global().async { [self] in
                    for _ in 0..<100_000 {
                        let result = connection.send(binary: chunk)
                        let buffered = connection.bufferedBytes
                        if buffered > maxBuffered.load(ordering: .relaxed) { maxBuffered.store(buffered, ordering: .relaxed) }
                        if result != .accepted {
                            results.withLock { $0.append(result) }
                            return
                        }
                    }
                }
            }
            func received(_ message: WebSocketMessage, on connection: WebSocketConnection) {}
            func closed(_ connection: WebSocketConnection, code: WebSocketCloseCode, reason: String) {
                closedCode.withLock { $0 = code.rawValue }
            }
        }
        let handler = Flooder()
        var limits = WebSocketLimits()
        limits.sendBufferBytesMax = 1 << 20
        limits.closeTimeoutSeconds = 0.3
        let server = try startWebSocketServer(limits: limits, handler: handler)
        defer { server.stop(timeoutSeconds: 1) }
        let client = try WebSocketTestClient(port: server.port, receiveBufferBytes: 4096)
        #expect(try client.handshake().status == 101)
        // The client never reads: the server's buffer fills, the socket is closed, memory stayed bounded.
        waitFor { handler.closedCode.withLock { $0 } != nil }
        #expect(handler.results.withLock { $0 } == [.bufferFull])
        #expect(handler.maxBuffered.load(ordering: .relaxed) <= (1 << 20) + 200)
        #expect(handler.closedCode.withLock { $0 } == 1008)
    }

    /// Pongs are queued for the client too: one that floods pings and never reads the pongs must hit
    /// the send buffer limit (1008), not grow the server's memory by 127 bytes per ping.
    @Test func pingFloodFromAClientThatNeverReadsIsBounded() throws {
        let handler = EchoSocketHandler()
        var limits = WebSocketLimits()
        limits.sendBufferBytesMax = 64 * 1024
        limits.closeTimeoutSeconds = 0.3
        let server = try startWebSocketServer(limits: limits, handler: handler)
        defer { server.stop(timeoutSeconds: 1) }
        let client = try WebSocketTestClient(port: server.port, receiveBufferBytes: 4096)
        #expect(try client.handshake().status == 101)
        let ping = WebSocketFrame(opcode: .ping, payload: [UInt8](repeating: 0x70, count: 125)).serialized(maskingKey: (1, 2, 3, 4))
        let burst = Array([[UInt8]](repeating: ping, count: 1_000).joined())
        // 20 MB of pongs would be owed; the server gives up long before (a send then fails: fine).
        for _ in 0..<150 {
            if (try? client.sendRaw(burst)) == nil { break }
            if !handler.closeCodes.isEmpty { break }
        }
        waitFor { !handler.closeCodes.isEmpty }
        #expect(handler.closeCodes == [1008])
    }

    @Test func unansweredPingsDropTheClient() throws {
        let handler = EchoSocketHandler()
        var limits = WebSocketLimits()
        limits.pingIntervalSeconds = 0.1
        limits.pongTimeoutSeconds = 0.2
        let server = try startWebSocketServer(limits: limits, handler: handler)
        defer { server.stop(timeoutSeconds: 1) }
        let client = try WebSocketTestClient(port: server.port)
        #expect(try client.handshake().status == 101)
        #expect(try client.readFrame()?.opcode == .ping)
        // No answer: the server drops the connection.
        #expect(try client.readsEOF())
        waitFor { !handler.closeCodes.isEmpty }
        #expect(handler.closeCodes == [1006])
    }

    @Test func upgradedSocketHasNagleOff() throws {
        // libmicrohttpd clears TCP_NODELAY before handing the socket over; small frames would then wait
        // for the client's delayed ACK of the previous one (40 ms on Linux).
        final class NoDelayRecorder: WebSocketHandler {
            let noDelay = Atomic<Int32>(-1)
            func opened(_ connection: WebSocketConnection) {
                var value: Int32 = -1
                var length = socklen_t(MemoryLayout<Int32>.size)
                _ = getsockopt(connection.fd, Int32(IPPROTO_TCP), TCP_NODELAY, &value, &length)
                noDelay.store(value, ordering: .relaxed)
            }
            func received(_ message: WebSocketMessage, on connection: WebSocketConnection) {}
            func closed(_ connection: WebSocketConnection, code: WebSocketCloseCode, reason: String) {}
        }
        let handler = NoDelayRecorder()
        let server = try startWebSocketServer(handler: handler)
        defer { server.stop(timeoutSeconds: 1) }
        let client = try WebSocketTestClient(port: server.port)
        #expect(try client.handshake().status == 101)
        waitFor { handler.noDelay.load(ordering: .relaxed) != -1 }
        #expect(handler.noDelay.load(ordering: .relaxed) == 1)
    }

    @Test func manySocketsShareOneLoopThread() throws {
        final class ThreadRecorder: WebSocketHandler {
            let threads = Mutex<Set<UInt>>([])
            func received(_ message: WebSocketMessage, on connection: WebSocketConnection) {
                threads.withLock { _ = $0.insert(UInt(pthread_self())) }
                if case .text(let text) = message { connection.send(text: text) }
            }
            func closed(_ connection: WebSocketConnection, code: WebSocketCloseCode, reason: String) {}
        }
        let handler = ThreadRecorder()
        let server = try startWebSocketServer(handler: handler)
        defer { server.stop(timeoutSeconds: 1) }
        let failures = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 24) { index in
            do {
                let client = try WebSocketTestClient(port: server.port)
                guard try client.handshake().status == 101 else { throw TestClientError(description: "no 101") }
                for message in 0..<40 { try client.send(text: "\(index)-\(message)") }
                for message in 0..<40 {
                    let frame = try client.readFrame()
                    if frame?.payload != Array("\(index)-\(message)".utf8) { throw TestClientError(description: "client \(index) message \(message) out of order") }
                }
            } catch {
                failures.withLock { $0.append("\(error)") }
            }
        }
        #expect(failures.withLock { $0 } == [])
        #expect(handler.threads.withLock { $0.count } == 1)
    }

    @Test func idleSocketOutlivesTheHTTPIdleTimeout() throws {
        // libmicrohttpd's connection timeout must not apply to an upgraded socket (our pings do).
        let server = try startWebSocketServer({ $0.connectionTimeoutSeconds = 1 }, handler: EchoSocketHandler())
        defer { server.stop(timeoutSeconds: 1) }
        let client = try WebSocketTestClient(port: server.port)
        #expect(try client.handshake().status == 101)
        usleep(2_500_000)  // not a timing assertion: waits past the HTTP timeout, then checks the socket works
        try client.send(text: "awake")
        #expect(try client.readFrame()?.payload == Array("awake".utf8))
    }

    @Test func socketLimitAnswers503() throws {
        let server = try startWebSocketServer({ $0.webSocketsMax = 1 }, handler: EchoSocketHandler())
        defer { server.stop(timeoutSeconds: 1) }
        let first = try WebSocketTestClient(port: server.port)
        #expect(try first.handshake().status == 101)
        let second = try WebSocketTestClient(port: server.port)
        #expect(try second.handshake().status == 503)
        // Closing the first frees the slot.
        try first.send(.close, [])
        #expect(try first.readsEOF())
        waitFor { server.webSocketCount == 0 }
        let third = try WebSocketTestClient(port: server.port)
        #expect(try third.handshake().status == 101)
    }

    @Test func clientLeavingRightAfterItsHandshakeFreesItsSlot() throws {
        let handshakes = Atomic<Int>(0)
        let handler = EchoSocketHandler()
        let server = try startServer({ $0.webSocketsMax = 1 }) { request, responder in
            responder.upgradeToWebSocket(request, handler: handler)
            handshakes.add(1, ordering: .relaxed)
        }
        defer { server.stop(timeoutSeconds: 1) }
        do {
            let vanishing = try WebSocketTestClient(port: server.port)
            try vanishing.sendRaw(vanishing.handshakeBytes())
            waitFor { handshakes.load(ordering: .relaxed) == 1 }
        }  // closed without reading the 101
        waitFor { server.webSocketCount == 0 }
        #expect(server.webSocketCount == 0)
        let next = try WebSocketTestClient(port: server.port)
        #expect(try next.handshake().status == 101)
    }

    @Test func clientLeavingBeforeADeferredUpgradeFreesItsSlot() throws {
        // The handler answers later; meanwhile the client is gone, so the 101 is never delivered and
        // libmicrohttpd never calls the upgrade callback: the request's completion must free the slot.
        let parked = Mutex<(HTTPRequest, Responder)?>(nil)
        let server = try startServer({ $0.webSocketsMax = 1 }) { request, responder in
            if request.path == "/later" {
                parked.withLock { $0 = (request, responder) }
            } else {
                responder.upgradeToWebSocket(request, handler: EchoSocketHandler())
            }
        }
        defer { server.stop(timeoutSeconds: 1) }
        do {
            let vanishing = try WebSocketTestClient(port: server.port)
            try vanishing.sendRaw(vanishing.handshakeBytes(path: "/later"))
            waitFor { parked.withLock { $0 } != nil }
            vanishing.resetOnClose()
        }  // the client resets the connection while its request is parked
        let (request, responder) = try #require(parked.withLock { $0 })
        #expect(responder.upgradeToWebSocket(request, handler: EchoSocketHandler()) == .upgrading)
        waitFor { server.webSocketCount == 0 }
        #expect(server.webSocketCount == 0)
        let next = try WebSocketTestClient(port: server.port)
        #expect(try next.handshake().status == 101)
    }

    @Test func stopWithOpenSocketsClosesThemWith1001() throws {
        let handler = EchoSocketHandler()
        let server = try startWebSocketServer(handler: handler)
        let clients = try (0..<3).map { _ in try WebSocketTestClient(port: server.port) }
        for client in clients {
            #expect(try client.handshake().status == 101)
            try client.send(text: "hi")
            #expect(try client.readFrame()?.payload == Array("hi".utf8))
        }
        server.stop(timeoutSeconds: 1)
        for client in clients {
            #expect(try client.readUntilClose()?.code == .goingAway)
            #expect(try client.readsEOF())
        }
        #expect(handler.closeCodes.sorted() == [1001, 1001, 1001])
    }
}

/// Seeded generator (SplitMix64) so a failure replays from its printed seed.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

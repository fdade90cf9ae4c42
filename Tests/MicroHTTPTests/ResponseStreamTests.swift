import Dispatch
import Glibc
import Synchronization
import Testing

@testable import MicroHTTP

@Suite struct ResponseStreamTests {
    @Test func streamsChunksWrittenLaterFromAnotherThread() throws {
        let streams = Mutex<[ResponseStream]>([])
        let closed = Atomic<Int>(0)
        let server = try startServer { request, responder in
            if request.path == "/plain" {
                responder.respond(HTTPResponse(status: 200, body: Array("plain".utf8)))
                return
            }
            let stream = responder.respondStreaming(status: 200, headers: [("Content-Type", "text/event-stream")])
            stream.onClose { closed.add(1, ordering: .relaxed) }
            streams.withLock { $0.append(stream) }
            #expect(stream.write(Array("data: 1\n\n".utf8)) == .accepted)
            DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(30)) {
                stream.write(Array("data: 2\n\n".utf8))
                DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(30)) {
                    stream.write(Array("data: 3\n\n".utf8))
                    stream.finish()
                }
            }
        }
        defer { server.stop(timeoutSeconds: 1) }
        let client = try TestClient(port: server.port)
        let response = try client.request("GET", "/events")
        #expect(response.status == 200)
        #expect(response.header("Content-Type") == "text/event-stream")
        #expect(response.header("Transfer-Encoding")?.lowercased() == "chunked")
        #expect(response.text == "data: 1\n\ndata: 2\n\ndata: 3\n\n")
        // The connection is reusable after the stream ended.
        #expect(try client.request("GET", "/plain").text == "plain")
        let stream = try #require(streams.withLock { $0.first })
        waitFor { stream.isClosed }
        #expect(stream.isClosed)
        #expect(closed.load(ordering: .relaxed) == 1)
        #expect(stream.write([1]) == .closed)
    }

    @Test func bufferIsBoundedAndStreamIsOnceOnly() throws {
        let results = Mutex<[ResponseStream.WriteResult]>([])
        let server = try startServer { _, responder in
            let stream = responder.respondStreaming(status: 200, bufferBytesMax: 10)
            let tooBig = stream.write([UInt8](repeating: 65, count: 11))
            let fits = stream.write([UInt8](repeating: 66, count: 10))
            // Already answered: a second answer of either kind is ignored.
            let second = responder.respondStreaming(status: 500)
            responder.respond(HTTPResponse(status: 500))
            stream.finish()
            let afterFinish = stream.write([1])
            results.withLock { $0 = [tooBig, fits, second.isClosed ? .closed : .accepted, afterFinish] }
        }
        defer { server.stop(timeoutSeconds: 1) }
        let response = try TestClient(port: server.port).request("GET", "/")
        #expect(response.status == 200)
        #expect(response.text == "BBBBBBBBBB")
        #expect(results.withLock { $0 } == [.bufferFull, .accepted, .closed, .closed])
        #expect(server.duplicateResponseCount == 2)
    }

    @Test func clientLeavingIsNoticedByWrites() throws {
        let stream = Mutex<ResponseStream?>(nil)
        let server = try startServer { _, responder in
            let opened = responder.respondStreaming(status: 200)
            opened.write(Array("hello\n".utf8))
            stream.withLock { $0 = opened }
        }
        defer { server.stop(timeoutSeconds: 1) }
        do {
            let client = try TestClient(port: server.port)
            try client.sendRequest("GET", "/stream")
            waitFor { stream.withLock { $0 } != nil }
        }  // the client's socket closes here
        let opened = try #require(stream.withLock { $0 })
        // Heartbeats until a send fails; bounded.
        var attempts = 0
        while opened.write(Array(": heartbeat\n".utf8)) != .closed && attempts < 5_000 {
            usleep(2_000)
            attempts += 1
        }
        #expect(opened.isClosed)
        waitFor { server.suspendedCount == 0 }
    }

    @Test func stopEndsOpenStreamsWithoutAborting() throws {
        let opened = Atomic<Int>(0)
        let server = try startServer { _, responder in
            let stream = responder.respondStreaming(status: 200)
            stream.write(Array("first\n".utf8))
            opened.add(1, ordering: .relaxed)
            // Never finished by the application: stop() must end it.
        }
        var clients: [TestClient] = []
        for _ in 0..<3 {
            let client = try TestClient(port: server.port)
            try client.sendRequest("GET", "/forever")
            clients.append(client)
        }
        waitFor { opened.load(ordering: .relaxed) == 3 }
        usleep(50_000)  // let the readers drain the buffers and suspend (not required for correctness)
        server.quiesce()
        server.stop(timeoutSeconds: 0.05)
        for client in clients {
            let response = try client.readResponse()
            #expect(response.status == 200)
            #expect(response.text == "first\n")
        }
    }
}

@Suite struct StreamAndParkingRaceTests {
    @Test func manySmallWritesRacingTheReaderArriveInOrder() throws {
        let lines = 3_000
        let server = try startServer { _, responder in
            let stream = responder.respondStreaming(status: 200, bufferBytesMax: 256)
            DispatchQueue.global().async {
                var index = 0
                while index < lines {
                    switch stream.write(Array("\(index)\n".utf8)) {
                    case .accepted:
                        index += 1
                        if index % 7 == 0 { sched_yield() }
                    case .bufferFull: usleep(100)
                    case .closed: return
                    }
                }
                stream.finish()
            }
        }
        defer { server.stop(timeoutSeconds: 1) }
        let client = try TestClient(port: server.port)
        for _ in 0..<3 {
            let response = try client.request("GET", "/numbers")
            let expected = (0..<lines).map { "\($0)\n" }.joined()
            #expect(response.text == expected)
        }
    }

    @Test func parkedRequestWhoseClientLeftIsCleanedUpOnRespond() throws {
        let parked = Mutex<Responder?>(nil)
        let server = try startServer { request, responder in
            if request.path == "/x" { return responder.respond(HTTPResponse(status: 204)) }
            parked.withLock { $0 = responder }
        }
        defer { server.stop(timeoutSeconds: 1) }
        do {
            let client = try TestClient(port: server.port)
            try client.sendRequest("GET", "/gone")
            waitFor { server.suspendedCount == 1 }
        }  // the client leaves while the request is parked
        #expect(server.suspendedCount == 1)  // MHD cannot notice while suspended
        try #require(parked.withLock { $0 }).respond(HTTPResponse(status: 200, body: Array("nobody listens".utf8)))
        waitFor { server.suspendedCount == 0 }
        #expect(server.suspendedCount == 0)
        // The server still works.
        #expect(try TestClient(port: server.port).request("GET", "/x").status == 204)
    }
}

@Suite struct DeferredStreamTests {
    @Test func streamStartedLaterFromAnotherThreadAndHead() throws {
        let server = try startServer { _, responder in
            DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(20)) {
                let stream = responder.respondStreaming(status: 201, headers: [("Content-Type", "application/x-ndjson")])
                stream.write(Array("{\"a\":1}\n".utf8))
                stream.finish()
            }
        }
        defer { server.stop(timeoutSeconds: 1) }
        let client = try TestClient(port: server.port)
        let response = try client.request("GET", "/later")
        #expect(response.status == 201)
        #expect(response.header("Content-Type") == "application/x-ndjson")
        #expect(response.text == "{\"a\":1}\n")
        let head = try client.request("HEAD", "/later")
        #expect(head.status == 201)
        #expect(try client.request("GET", "/again").text == "{\"a\":1}\n")
        waitFor { server.suspendedCount == 0 }
        #expect(server.suspendedCount == 0)
    }
}

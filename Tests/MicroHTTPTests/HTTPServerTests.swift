import Dispatch
import Glibc
import Synchronization
import Testing

@testable import MicroHTTP

/// Starts a server on an ephemeral port; the caller must stop it (tests use `defer`).
func startServer(
    _ configure: (inout HTTPServerConfiguration) -> Void = { _ in }, handler: @escaping HTTPHandler
) throws -> HTTPServer {
    var configuration = HTTPServerConfiguration()
    configuration.port = 0
    configuration.errorBody = { status, message in
        ("application/json", Array("{\"error_code\":\(status),\"message\":\"\(message)\"}".utf8))
    }
    configure(&configuration)
    let server = HTTPServer(configuration: configuration, handler: handler)
    try server.start()
    return server
}

/// Waits (bounded, generous) for a condition reached by other threads. Not a timing assertion: the test
/// checks the condition afterwards.
func waitFor(seconds: Double = 20, _ condition: () -> Bool) {
    var waited = 0.0
    while !condition() && waited < seconds {
        usleep(2_000)
        waited += 0.002
    }
}

let echoHandler: HTTPHandler = { request, responder in
    var text = "\(request.method) \(request.path)"
    if !request.body.isEmpty { text += " " + String(decoding: request.body, as: UTF8.self) }
    responder.respond(
        HTTPResponse(status: 200, headers: [("Content-Type", "text/plain"), ("X-Echo", "yes")], body: Array(text.utf8)))
}

@Suite struct HTTPServerTests {
    @Test func getAndPostEchoWithHeaders() throws {
        let server = try startServer(handler: echoHandler)
        defer { server.stop(timeoutSeconds: 1) }
        #expect(server.port != 0)
        let client = try TestClient(port: server.port)
        let get = try client.request("GET", "/hello")
        #expect(get.status == 200)
        #expect(get.text == "GET /hello")
        #expect(get.header("content-type") == "text/plain")
        #expect(get.header("X-Echo") == "yes")
        let post = try client.request("POST", "/things", body: Array("payload bytes".utf8))
        #expect(post.status == 200)
        #expect(post.text == "POST /things payload bytes")
        let head = try client.request("HEAD", "/hello")
        #expect(head.status == 200)
        #expect(head.header("Content-Length") == "11")  // "HEAD /hello"
        // The connection is still usable after HEAD: no stray body bytes were sent.
        #expect(try client.request("GET", "/again").text == "GET /again")
    }

    @Test func queryAndPercentDecoding() throws {
        let seen = Mutex<HTTPRequest?>(nil)
        let server = try startServer { request, responder in
            seen.withLock { $0 = request }
            responder.respond(HTTPResponse(status: 204))
        }
        defer { server.stop(timeoutSeconds: 1) }
        let client = try TestClient(port: server.port)
        let response = try client.request("GET", "/v1/topics/a%2Fb/x%20y?x=1&y=a%20b%26c&x=2&p=a+b&flag&e=%E2%82%AC")
        #expect(response.status == 204)
        let request = try #require(seen.withLock { $0 })
        #expect(request.rawPath == "/v1/topics/a%2Fb/x%20y")
        #expect(request.path == "/v1/topics/a/b/x y")
        #expect(request.pathSegments == ["v1", "topics", "a/b", "x y"])
        #expect(request.query.map(\.name) == ["x", "y", "x", "p", "flag", "e"])
        #expect(request.query.map(\.value) == ["1", "a b&c", "2", "a b", "", "€"])
        #expect(request.queryValue("x") == "1")
        #expect(request.queryValue("missing") == nil)
        #expect(request.remoteAddress == "127.0.0.1")
    }

    @Test func headerLookupIsCaseInsensitive() throws {
        let server = try startServer { request, responder in
            let value = request.header("x-custom-thing") ?? "none"
            let upper = request.header("X-CUSTOM-THING") ?? "none"
            responder.respond(HTTPResponse(status: 200, body: Array("\(value)|\(upper)".utf8)))
        }
        defer { server.stop(timeoutSeconds: 1) }
        let client = try TestClient(port: server.port)
        #expect(try client.request("GET", "/", headers: [("X-Custom-Thing", "V1")]).text == "V1|V1")
        #expect(try client.request("GET", "/").text == "none|none")
    }

    @Test func keepAliveServesManyRequestsOnOneConnection() throws {
        let server = try startServer(handler: echoHandler)
        defer { server.stop(timeoutSeconds: 1) }
        let client = try TestClient(port: server.port)
        for index in 0..<20 {
            let response = try client.request("POST", "/n/\(index)", body: Array("\(index)".utf8))
            #expect(response.text == "POST /n/\(index) \(index)")
        }
        // Pipelined: two requests in one write, two answers in order.
        try client.send("GET /p1 HTTP/1.1\r\nHost: x\r\n\r\nGET /p2 HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(try client.readResponse().text == "GET /p1")
        #expect(try client.readResponse().text == "GET /p2")
        // Connection: close is honoured.
        let last = try client.request("GET", "/bye", headers: [("Connection", "close")])
        #expect(last.text == "GET /bye")
        #expect(try client.isClosedByServer())
    }

    @Test func oversizedBodyWithContentLengthIsRefusedUpFront() throws {
        let handled = Atomic<Int>(0)
        let server = try startServer({ $0.requestBodyBytesMax = 1000 }) { _, responder in
            handled.add(1, ordering: .relaxed)
            responder.respond(HTTPResponse(status: 200))
        }
        defer { server.stop(timeoutSeconds: 1) }
        let client = try TestClient(port: server.port)
        // Announce 10 MB but send none of it: the answer must come without the body being read.
        try client.send("POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
        let response = try client.readResponse()
        #expect(response.status == 413)
        #expect(response.header("Content-Type") == "application/json")
        #expect(response.text.contains("\"error_code\":413"))
        #expect(handled.load(ordering: .relaxed) == 0)
        // Exactly at the limit is fine.
        let ok = try TestClient(port: server.port).request("POST", "/ok", body: [UInt8](repeating: 7, count: 1000))
        #expect(ok.status == 200)
    }

    @Test func oversizedChunkedBodyIsCountedAndRefused() throws {
        let server = try startServer({ $0.requestBodyBytesMax = 1000 }, handler: echoHandler)
        defer { server.stop(timeoutSeconds: 1) }
        let client = try TestClient(port: server.port)
        var request = "POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        for _ in 0..<4 { request += "258\r\n" + String(repeating: "z", count: 600) + "\r\n" }
        request += "0\r\n\r\n"
        try client.send(request)
        let response = try client.readResponse()
        #expect(response.status == 413)
        #expect(response.text.contains("\"error_code\":413"))
        // The body was drained, so the connection stays usable; a small chunked body still works.
        try client.send("POST /small HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        #expect(try client.readResponse().text == "POST /small abcde")
    }

    @Test func deferredRespondFromAnotherThread() throws {
        let server = try startServer { request, responder in
            DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(50)) {
                responder.respond(HTTPResponse(status: 202, body: Array("later \(request.path)".utf8)))
            }
        }
        defer { server.stop(timeoutSeconds: 1) }
        let client = try TestClient(port: server.port)
        for index in 0..<3 {
            let response = try client.request("GET", "/d\(index)")
            #expect(response.status == 202)
            #expect(response.text == "later /d\(index)")
        }
        waitFor { server.suspendedCount == 0 }
        #expect(server.suspendedCount == 0)
        #expect(server.duplicateResponseCount == 0)
    }

    @Test func twoHundredParkedRequestsAnsweredOutOfOrder() throws {
        let parked = Mutex<[Int: Responder]>([:])
        let server = try startServer { request, responder in
            let index = Int(request.pathSegments[1])!
            parked.withLock { $0[index] = responder }
        }
        defer { server.stop(timeoutSeconds: 1) }
        let count = 200
        var clients: [TestClient] = []
        for index in 0..<count {
            let client = try TestClient(port: server.port)
            try client.sendRequest("GET", "/park/\(index)")
            clients.append(client)
        }
        waitFor { server.suspendedCount == count }
        #expect(server.suspendedCount == count)
        let responders = parked.withLock { $0 }
        #expect(responders.count == count)
        // Answer from several threads in a scrambled order.
        let order = (0..<count).map { ($0 * 73) % count }
        DispatchQueue.concurrentPerform(iterations: 4) { lane in
            for position in stride(from: lane, to: count, by: 4) {
                let index = order[position]
                responders[index]!.respond(HTTPResponse(status: 200, body: Array("answer \(index)".utf8)))
            }
        }
        for (index, client) in clients.enumerated() {
            let response = try client.readResponse()
            #expect(response.status == 200)
            #expect(response.text == "answer \(index)")
        }
        waitFor { server.suspendedCount == 0 }
        #expect(server.suspendedCount == 0)
    }

    @Test func respondRacingHandlerReturnNeverLosesOrDuplicates() throws {
        // respond() from another thread at about the moment the handler returns: sometimes before the
        // suspend, sometimes during, sometimes after. Every request must get exactly its own answer.
        let server = try startServer { request, responder in
            let body = Array(request.path.utf8)
            DispatchQueue.global().async { responder.respond(HTTPResponse(status: 200, body: body)) }
            if request.path.hasSuffix("0") { sched_yield() }
        }
        defer { server.stop(timeoutSeconds: 1) }
        let lanes = 4, perLane = 500
        let failures = Atomic<Int>(0)
        DispatchQueue.concurrentPerform(iterations: lanes) { lane in
            do {
                let client = try TestClient(port: server.port)
                for index in 0..<perLane {
                    let response = try client.request("GET", "/r/\(lane)/\(index)")
                    if response.status != 200 || response.text != "/r/\(lane)/\(index)" { failures.add(1, ordering: .relaxed) }
                }
            } catch {
                failures.add(1000, ordering: .relaxed)
            }
        }
        #expect(failures.load(ordering: .relaxed) == 0)
        waitFor { server.suspendedCount == 0 }
        #expect(server.suspendedCount == 0)
        #expect(server.duplicateResponseCount == 0)
    }

    @Test func secondRespondIsIgnoredAndCounted() throws {
        let server = try startServer { _, responder in
            responder.respond(HTTPResponse(status: 200, body: Array("first".utf8)))
            responder.respond(HTTPResponse(status: 500, body: Array("second".utf8)))
        }
        defer { server.stop(timeoutSeconds: 1) }
        let client = try TestClient(port: server.port)
        #expect(try client.request("GET", "/").text == "first")
        #expect(try client.request("GET", "/").text == "first")
        #expect(server.duplicateResponseCount == 2)
    }

    @Test func stopAnswersParkedRequestsWith503() throws {
        let parked = Mutex<[Responder]>([])
        let server = try startServer { _, responder in parked.withLock { $0.append(responder) } }
        var clients: [TestClient] = []
        for index in 0..<5 {
            let client = try TestClient(port: server.port)
            try client.sendRequest("GET", "/wait/\(index)")
            clients.append(client)
        }
        waitFor { server.suspendedCount == 5 }
        #expect(server.suspendedCount == 5)
        server.quiesce()
        server.stop(timeoutSeconds: 0.05)
        for client in clients {
            let response = try client.readResponse()
            #expect(response.status == 503)
            #expect(response.text.contains("\"error_code\":503"))
        }
        // Late answers from the application are harmless.
        for responder in parked.withLock({ $0 }) { responder.respond(HTTPResponse(status: 200)) }
        #expect(server.duplicateResponseCount == 0)
        #expect(server.suspendedCount == 0)
        server.stop(timeoutSeconds: 0)  // idempotent
    }

    @Test func stopWaitsForParkedRequestsAnsweredInTime() throws {
        let server = try startServer { _, responder in
            DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(100)) {
                responder.respond(HTTPResponse(status: 200, body: Array("done".utf8)))
            }
        }
        let client = try TestClient(port: server.port)
        try client.sendRequest("GET", "/slow")
        waitFor { server.suspendedCount == 1 }
        server.quiesce()
        server.stop(timeoutSeconds: 30)
        let response = try client.readResponse()
        #expect(response.status == 200)
        #expect(response.text == "done")
    }

    @Test func quiesceThenStopWithIdleKeepAliveConnection() throws {
        let server = try startServer(handler: echoHandler)
        let client = try TestClient(port: server.port)
        #expect(try client.request("GET", "/one").text == "GET /one")
        server.quiesce()
        server.quiesce()  // idempotent
        // An open keep-alive connection is still served after quiesce.
        #expect(try client.request("GET", "/two").text == "GET /two")
        server.stop(timeoutSeconds: 1)
        #expect(try client.isClosedByServer())
        #expect(server.port == 0)
    }

    @Test func startFailsClearlyWhenPortIsTaken() throws {
        let first = try startServer(handler: echoHandler)
        defer { first.stop(timeoutSeconds: 1) }
        var configuration = HTTPServerConfiguration()
        configuration.port = first.port
        let second = HTTPServer(configuration: configuration, handler: echoHandler)
        defer { second.stop(timeoutSeconds: 0) }
        #expect {
            try second.start()
        } throws: { error in
            guard case HTTPServerError.startFailed(_, let port, _, _) = error else { return false }
            return port == first.port && "\(error)".contains("\(first.port)")
        }
    }

    @Test func invalidConfigurationIsRejected() throws {
        var configuration = HTTPServerConfiguration()
        configuration.port = 0
        configuration.connectionTimeoutSeconds = 0
        let server = HTTPServer(configuration: configuration, handler: echoHandler)
        defer { server.stop(timeoutSeconds: 0) }
        #expect(throws: HTTPServerError.invalidConfiguration("connectionTimeoutSeconds must be >= 1 (0 would mean never)")) {
            try server.start()
        }
    }
}

@Suite struct PercentDecodingTests {
    @Test func decodesEscapesAndKeepsMalformedOnes() {
        #expect(PercentDecoding.decode("a%20b%2fc", plusIsSpace: false) == "a b/c")
        #expect(PercentDecoding.decode("a+b", plusIsSpace: false) == "a+b")
        #expect(PercentDecoding.decode("a+b%2B", plusIsSpace: true) == "a b+")
        #expect(PercentDecoding.decode("100%", plusIsSpace: false) == "100%")
        #expect(PercentDecoding.decode("%zz%4", plusIsSpace: false) == "%zz%4")
    }

    @Test func splitsSegmentsBeforeDecoding() {
        #expect(PercentDecoding.segments(ofRawPath: "/") == [])
        #expect(PercentDecoding.segments(ofRawPath: "/a%2Fb/c") == ["a/b", "c"])
        #expect(PercentDecoding.segments(ofRawPath: "/v1/topics/") == ["v1", "topics", ""])
    }
}

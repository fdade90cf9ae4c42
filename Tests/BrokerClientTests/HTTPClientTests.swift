import BrokerClient
import Foundation
import MicroHTTP
import Testing

/// The client against a real libmicrohttpd server on an ephemeral port.
@Suite struct HTTPClientTests {
    func echoServer() throws -> HTTPServer {
        var config = HTTPServerConfiguration()
        config.port = 0
        let server = HTTPServer(configuration: config) { request, responder in
            let query = request.query.map { "\($0.name)=\($0.value)" }.joined(separator: "&")
            let summary = "\(request.method) \(request.path) \(query) \(request.header("X-Test") ?? "-") \(request.body.count)"
            responder.respond(HTTPResponse(status: request.path == "/missing" ? 404 : 200,
                                           headers: [(name: "X-Summary", value: summary)], body: request.body))
        }
        try server.start()
        return server
    }

    @Test func methodsBodiesHeadersAndStatus() throws {
        let server = try echoServer()
        defer { server.stop(timeoutSeconds: 1) }
        let client = try HTTPClient(baseURL: "http://127.0.0.1:\(server.port)")
        let post = try client.request("POST", "/v1/x?a=1&b=two", headers: [("X-Test", "yes")], body: Array("hello".utf8))
        #expect(post.status == 200)
        #expect(post.text == "hello")
        #expect(post.header("x-summary") == "POST /v1/x a=1&b=two yes 5")
        let get = try client.request("GET", "/missing")
        #expect(get.status == 404)
        #expect(get.body.isEmpty)
        let empty = try client.request("POST", "/e", body: [])
        #expect(empty.header("X-Summary") == "POST /e  - 0")
        let big = [UInt8](repeating: 7, count: 300_000)
        #expect(try client.request("PUT", "/big", body: big).body == big)
    }

    @Test func manyRequestsOnOneClient() throws {
        let server = try echoServer()
        defer { server.stop(timeoutSeconds: 1) }
        let client = try HTTPClient(baseURL: "http://127.0.0.1:\(server.port)/")
        for i in 0..<200 {
            #expect(try client.request("POST", "/n", body: Array("\(i)".utf8)).text == "\(i)")
        }
    }

    @Test func connectionRefusedIsAnError() throws {
        let client = try HTTPClient(baseURL: "http://127.0.0.1:1", timeoutMilliseconds: 2000)
        #expect(throws: HTTPClient.Failure.self) { try client.request("GET", "/") }
    }
}

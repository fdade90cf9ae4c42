import Glibc
import Testing

@testable import MicroHTTP

@Suite struct LimitsTests {
    @Test func expectContinueWithOversizedBodyGets413Without100() throws {
        let server = try startServer({ $0.requestBodyBytesMax = 10 }, handler: echoHandler)
        defer { server.stop(timeoutSeconds: 1) }
        let client = try TestClient(port: server.port)
        try client.send("POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n")
        let response = try client.readResponse()
        #expect(response.status == 413)  // not 100: the client never sends the body
    }

    @Test func expectContinueWithinLimitWorks() throws {
        let server = try startServer({ $0.requestBodyBytesMax = 10 }, handler: echoHandler)
        defer { server.stop(timeoutSeconds: 1) }
        let client = try TestClient(port: server.port)
        try client.send("POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        #expect(try client.readResponse().status == 100)
        try client.send("hello")
        #expect(try client.readResponse().text == "POST /x hello")
    }

    @Test func headersLargerThanConnectionMemoryAreRefusedByLibmicrohttpd() throws {
        // libmicrohttpd answers this itself (before any callback), so errorBody is not used here.
        let server = try startServer({ $0.connectionMemoryBytes = 8 * 1024 }, handler: echoHandler)
        defer { server.stop(timeoutSeconds: 1) }
        let client = try TestClient(port: server.port)
        let response = try client.request("GET", "/", headers: [("X-Big", String(repeating: "a", count: 16 * 1024))])
        #expect(response.status == 431)  // HTML body from libmicrohttpd, then Connection: close
    }

    @Test func idleKeepAliveConnectionIsClosedAfterTheTimeout() throws {
        let server = try startServer({ $0.connectionTimeoutSeconds = 1 }, handler: echoHandler)
        defer { server.stop(timeoutSeconds: 1) }
        let client = try TestClient(port: server.port)
        #expect(try client.request("GET", "/").status == 200)
        // Blocks until the server closes (bounded by the client's 20 s receive timeout).
        #expect(try client.isClosedByServer())
    }
}

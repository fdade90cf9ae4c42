import Glibc
import Testing

import MicroHTTP

/// Not a test: serves an empty 200 for manual load measurement, only when MICROHTTP_BENCH_PORT is set:
///     MICROHTTP_BENCH_PORT=18082 swift test --filter MicroHTTPTests.benchmarkServer &
///     wrk -t1 -c32 -d5s http://127.0.0.1:18082/
@Test(.enabled(if: getenv("MICROHTTP_BENCH_PORT") != nil))
func benchmarkServer() throws {
    var configuration = HTTPServerConfiguration()
    configuration.port = UInt16(String(cString: getenv("MICROHTTP_BENCH_PORT")))!
    let server = HTTPServer(configuration: configuration) { _, responder in
        responder.respond(HTTPResponse(status: 200))
    }
    try server.start()
    defer { server.stop(timeoutSeconds: 1) }
    let seconds = getenv("MICROHTTP_BENCH_SECONDS").flatMap { UInt32(String(cString: $0)) } ?? 20
    sleep(seconds)
}

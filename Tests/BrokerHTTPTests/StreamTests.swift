import BrokerModel
import BrokerRuntime
import Foundation
import MicroHTTP
import Testing
@testable import BrokerHTTP

/// A broker + service on a temporary directory; requests go through the real handler into a
/// `ResponseRecorder` (no sockets).
final class ServiceHarness {
    let directory = NSTemporaryDirectory() + "petrel-http-\(UUID().uuidString)"
    let broker: Broker
    let service: BrokerService

    init(limits: Limits = .defaults) throws {
        var config = BrokerConfiguration()
        config.dataDirectory = directory
        config.limits = limits
        broker = Broker(configuration: config)
        try broker.start()
        service = BrokerService(broker: broker)
    }

    deinit {
        broker.shutdown()
        try? FileManager.default.removeItem(atPath: directory)
    }

    @discardableResult
    func call(_ method: String, _ path: String, headers: [(name: String, value: String)] = [], body: String = "") -> ResponseRecorder {
        let recorder = ResponseRecorder()
        let (rawPath, query) = split(path)
        service.handler(HTTPRequest(method: method, rawPath: rawPath, query: query, headers: headers, body: Array(body.utf8)), recorder.responder)
        return recorder
    }

    /// Waits (bounded) until a plain response arrives.
    func wait(_ recorder: ResponseRecorder) -> HTTPResponse? {
        for _ in 0..<2000 {
            if let r = recorder.response { return r }
            usleep(1000)
        }
        return nil
    }

    private func split(_ path: String) -> (String, [(name: String, value: String)]) {
        guard let q = path.firstIndex(of: "?") else { return (path, []) }
        let query = path[path.index(after: q)...].split(separator: "&").map { pair -> (name: String, value: String) in
            let parts = pair.split(separator: "=", maxSplits: 1)
            return (String(parts[0]), parts.count > 1 ? String(parts[1]) : "")
        }
        return (String(path[..<q]), query)
    }
}

/// Collects a stream's bytes until `condition` holds (bounded wait).
func collect(_ recorder: ResponseRecorder, until condition: (String, Bool) -> Bool) -> (String, Bool) {
    var text = ""
    var finished = false
    for _ in 0..<5000 {
        if let s = recorder.takeStreamed() {
            text += String(decoding: s.bytes, as: UTF8.self)
            finished = s.isFinished
        }
        if condition(text, finished) { break }
        usleep(1000)
    }
    return (text, finished)
}

@Suite struct StreamTests {
    @Test func sseSendsOneEventPerRecordAndResumesAfterLastEventID() throws {
        let h = try ServiceHarness()
        h.call("POST", "/v1/topics", headers: [(name: "Content-Type", value: "application/json")], body: #"{"name":"s"}"#)
        for v in ["a", "b", "c"] { _ = h.wait(h.call("POST", "/v1/topics/s/records?acks=all", body: v)) }
        let sse = h.call("GET", "/v1/topics/s/partitions/0/records?stream_limit=3", headers: [(name: "Accept", value: "text/event-stream")])
        let (text, finished) = collect(sse) { _, done in done }
        #expect(finished)
        #expect(text.hasPrefix("retry: 1000\n\n"))
        #expect(text.components(separatedBy: "event: record").count - 1 == 3)
        #expect(text.contains("id: 0\nevent: record\ndata: {\"offset\":0,"))
        #expect(text.contains("id: 2\n"))

        let resumed = h.call("GET", "/v1/topics/s/partitions/0/records?stream_limit=1",
                             headers: [(name: "Accept", value: "text/event-stream"), (name: "Last-Event-ID", value: "1")])
        let (again, _) = collect(resumed) { _, done in done }
        #expect(again.contains("id: 2\n"))
        #expect(!again.contains("id: 1\n"))
    }

    @Test func ndjsonStreamPushesNewRecordsAndSendsKeepAlives() throws {
        let h = try ServiceHarness()
        h.call("POST", "/v1/topics", body: #"{"name":"n"}"#)
        let stream = h.call("GET", "/v1/topics/n/partitions/0/records?offset=latest&batch_flush_timeout=1&stream_limit=2",
                            headers: [(name: "Accept", value: "application/x-ndjson")])
        // Nothing there yet: a keep-alive line (no records) comes after the flush timeout.
        let (first, _) = collect(stream) { text, _ in text.contains("\n") }
        #expect(first.contains("\"records\":[]"))
        _ = h.wait(h.call("POST", "/v1/topics/n/records", body: "x"))
        _ = h.wait(h.call("POST", "/v1/topics/n/records", body: "y"))
        let (rest, finished) = collect(stream) { _, done in done }
        #expect(finished)
        let lines = (first + rest).split(separator: "\n").map(String.init)
        let values = lines.flatMap { line -> [String] in
            guard let node = try? JSONParser.parse(Array(line.utf8)), let records = node["records"]?.arrayValue else { return [] }
            return records.compactMap { $0["value"]?.stringValue }
        }
        #expect(values == ["x", "y"])
    }

    @Test func aClientThatNeverReadsHoldsAtMostOneBuffer() throws {
        var limits = Limits.defaults
        limits.streamBufferBytes = 64 * 1024
        let h = try ServiceHarness(limits: limits)
        h.call("POST", "/v1/topics", body: #"{"name":"big"}"#)
        let value = String(repeating: "v", count: 1000)
        let body = "{\"records\":[" + Array(repeating: "{\"value\":\"\(value)\"}", count: 500).joined(separator: ",") + "]}"
        for _ in 0..<10 {
            let produced = h.wait(h.call("POST", "/v1/topics/big/records", headers: [(name: "Content-Type", value: "application/json")], body: body))
            #expect(produced?.status == 200, "\(String(decoding: produced?.body ?? [], as: UTF8.self))")
        }
        let stream = h.call("GET", "/v1/topics/big/partitions/0/records", headers: [(name: "Accept", value: "application/x-ndjson")])
        // Wait (bounded) until the stream has filled past its high-water mark; the client never reads.
        var pending = 0
        for _ in 0..<10_000 where pending <= limits.streamBufferBytes / 2 {
            pending = stream.pendingStreamBytes ?? 0
            usleep(1000)
        }
        #expect(pending > limits.streamBufferBytes / 2)
        // Give the broker time to (wrongly) keep going, then check it stopped at the buffer.
        usleep(200_000)
        #expect((stream.pendingStreamBytes ?? 0) <= limits.streamBufferBytes)
        let s = try #require(stream.takeStreamed())
        #expect(s.bytes.count <= limits.streamBufferBytes)
        #expect(!s.isFinished)
    }

    @Test func badStartOffsetIsAPlainJSONError() throws {
        let h = try ServiceHarness()
        h.call("POST", "/v1/topics", body: #"{"name":"e"}"#)
        let r = h.call("GET", "/v1/topics/e/partitions/0/records?offset=5", headers: [(name: "Accept", value: "text/event-stream")])
        let response = try #require(h.wait(r))
        #expect(response.status == 416)
        let bad = h.call("GET", "/v1/topics/e/partitions/0/records", headers: [(name: "Accept", value: "text/event-stream"), (name: "Last-Event-ID", value: "x")])
        #expect(h.wait(bad)?.status == 400)
    }
}

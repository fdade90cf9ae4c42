import Glibc
import Synchronization

/// Hands a non-Sendable value to exactly one other thread (the spawning thread never touches it
/// again), which Swift cannot see on its own.
final class Handoff<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}

/// The peers' payload size.
let recordValueBytes = 100

/// The workloads W1-W4 of /work/shared/bench/peers/README.md against Petrel's HTTP API, plus the
/// single-record req/s comparison with the bare libmicrohttpd baseline.
struct Workloads {
    let broker: Endpoint

    // MARK: admin

    func createTopic(_ name: String) throws {
        let body = Array("{\"name\":\"\(name)\",\"partitions\":1}".utf8)
        let connection = try HTTPConnection(broker)
        let response = try connection.exchange(
            RequestBytes(method: "POST", path: "/v1/topics", host: broker.description, contentType: "application/json", body: body))
        guard response.status == 201 else {
            throw BenchError("creating topic \(name): HTTP \(response.status) \(String(decoding: response.body, as: UTF8.self))")
        }
    }

    func deleteTopic(_ name: String) {
        guard let connection = try? HTTPConnection(broker) else { return }
        let response = try? connection.exchange(RequestBytes(method: "DELETE", path: "/v1/topics/\(name)", host: broker.description))
        if let response, response.status != 204 && response.status != 200 {
            log("deleting topic \(name): HTTP \(response.status)")
        }
    }

    func clusterDescription() -> String {
        guard let connection = try? HTTPConnection(broker),
            let response = try? connection.exchange(RequestBytes(method: "GET", path: "/v1/cluster", host: broker.description))
        else { return "" }
        return String(decoding: response.body, as: UTF8.self)
    }

    // MARK: W1 batched produce

    struct BatchedProduceResult {
        var seconds: Double
        var recordsAcked: Int
        var recordsPerSecond: Double { Double(recordsAcked) / seconds }
    }

    /// `records` 100-byte records in NDJSON requests of `batch`, over `connections` keep-alive
    /// connections with one request in flight each (so up to `connections` batches in flight).
    /// Timed from the first send to the last ack; every ack must list `batch` offsets.
    func batchedProduce(topic: String, records: Int, batch: Int, connections: Int, acks: String) throws -> BatchedProduceResult {
        let line = Array("{\"value\":\"".utf8) + [UInt8](repeating: UInt8(ascii: "x"), count: recordValueBytes) + Array("\"}\n".utf8)
        let path = "/v1/topics/\(topic)/records?acks=\(acks)"
        func request(_ count: Int) -> RequestBytes {
            var body: [UInt8] = []
            body.reserveCapacity(line.count * count)
            for _ in 0..<count { body += line }
            return RequestBytes(method: "POST", path: path, host: broker.description, contentType: "application/x-ndjson", body: body)
        }
        let full = request(batch)
        let batches = (records + batch - 1) / batch
        let lastCount = records - (batches - 1) * batch
        let last = request(lastCount)
        let next = Atomic<Int>(0)
        let acked = Atomic<Int>(0)
        let failure = Mutex<String?>(nil)
        let offsetNeedle = Array("\"offset\":".utf8)
        var opened: [HTTPConnection] = []
        for _ in 0..<connections { opened.append(try HTTPConnection(broker)) }
        let group = ThreadGroup()
        let start = monotonicNanoseconds()
        for connection in opened {
            let handoff = Handoff(connection)
            group.spawn {
                let connection = handoff.value
                while failure.withLock({ $0 == nil }) {
                    let index = next.add(1, ordering: .relaxed).oldValue
                    if index >= batches { return }
                    let isLast = index == batches - 1
                    do {
                        let response = try connection.exchange(isLast ? last : full)
                        guard response.status == 200 || response.status == 202 else {
                            throw BenchError("produce: HTTP \(response.status) \(String(decoding: response.body.prefix(300), as: UTF8.self))")
                        }
                        let offsets = BodyScan.count(offsetNeedle, in: response.body)
                        let expected = isLast ? lastCount : batch
                        guard offsets == expected else { throw BenchError("produce: ack lists \(offsets) offsets for \(expected) records") }
                        acked.add(offsets, ordering: .relaxed)
                    } catch {
                        failure.withLock { $0 = $0 ?? "\(error)" }
                    }
                }
            }
        }
        group.join()
        let seconds = Double(monotonicNanoseconds() - start) / 1e9
        if let message = failure.withLock({ $0 }) { throw BenchError(message) }
        return BatchedProduceResult(seconds: seconds, recordsAcked: acked.load(ordering: .relaxed))
    }

    // MARK: W2 read back

    struct ReadBackResult {
        var seconds: Double
        var records: Int
        var requests: Int
        var recordsPerSecond: Double { Double(records) / seconds }
    }

    /// Reads the partition from offset 0 until `expected` records, `maxRecords` per request, one
    /// connection; verifies the count (records in the bodies and the final next_offset).
    func readBack(topic: String, expected: Int, maxRecords: Int, maxBytes: Int) throws -> ReadBackResult {
        let connection = try HTTPConnection(broker)
        let recordNeedle = Array("{\"offset\":".utf8)
        var offset: Int64 = 0
        var records = 0
        var requests = 0
        var stalls = 0
        let start = monotonicNanoseconds()
        while records < expected {
            let path = "/v1/topics/\(topic)/partitions/0/records?offset=\(offset)&max_records=\(maxRecords)&max_bytes=\(maxBytes)"
            let response = try connection.exchange(RequestBytes(method: "GET", path: path, host: broker.description))
            requests += 1
            guard response.status == 200 else {
                throw BenchError("read: HTTP \(response.status) \(String(decoding: response.body.prefix(300), as: UTF8.self))")
            }
            let got = BodyScan.count(recordNeedle, in: response.body)
            guard let nextOffset = BodyScan.integer(after: "next_offset", in: response.body) else {
                throw BenchError("read: no next_offset in the answer")
            }
            guard Int(nextOffset - offset) == got else {
                throw BenchError("read at \(offset): \(got) records but next_offset \(nextOffset)")
            }
            if got == 0 {
                stalls += 1
                if stalls > 100 { throw BenchError("read stalled at offset \(offset) of \(expected)") }
                usleep(1000)
            }
            records += got
            offset = nextOffset
        }
        let seconds = Double(monotonicNanoseconds() - start) / 1e9
        guard records == expected else { throw BenchError("read back \(records) records, expected \(expected)") }
        return ReadBackResult(seconds: seconds, records: records, requests: requests)
    }

    // MARK: controls: the floors under W3/W4 measured in the same repetition

    /// 4 KiB append + fdatasync, one at a time, on a growing file in `directory` (the peers' limits
    /// row "(i) 4KiB append+fdatasync"): the disk's share of an acks=all answer. Latencies in ms.
    static func appendFsyncLatencies(directory: String, count: Int) throws -> [Double] {
        let path = (directory.hasSuffix("/") ? directory : directory + "/") + "petrel-bench-fsync-\(getpid()).tmp"
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw BenchError("open \(path): \(String(cString: strerror(errno)))") }
        defer {
            close(fd)
            unlink(path)
        }
        let block = [UInt8](repeating: UInt8(ascii: "x"), count: 4096)
        var latencies: [Double] = []
        latencies.reserveCapacity(count)
        for _ in 0..<count {
            let start = monotonicNanoseconds()
            let written = block.withUnsafeBytes { write(fd, $0.baseAddress!, $0.count) }
            guard written == block.count, fdatasync(fd) == 0 else { throw BenchError("append+fdatasync: \(String(cString: strerror(errno)))") }
            latencies.append(Double(monotonicNanoseconds() - start) / 1e6)
        }
        return latencies
    }

    /// Sequential 100-byte POSTs to the bare baseline server on one connection: the HTTP round trip
    /// (and scheduling noise) under every single-record produce. Latencies in ms.
    static func roundTripLatencies(endpoint: Endpoint, count: Int) throws -> [Double] {
        let connection = try HTTPConnection(endpoint)
        let request = RequestBytes(
            method: "POST", path: "/", host: endpoint.description, contentType: "text/plain",
            body: [UInt8](repeating: UInt8(ascii: "x"), count: recordValueBytes))
        var latencies: [Double] = []
        latencies.reserveCapacity(count)
        for _ in 0..<count {
            let start = monotonicNanoseconds()
            let response = try connection.exchange(request)
            guard response.status == 200 else { throw BenchError("baseline answered HTTP \(response.status)") }
            latencies.append(Double(monotonicNanoseconds() - start) / 1e6)
        }
        return latencies
    }

    // MARK: W3 single-record produce latency

    /// `calls` single-record produces (text/plain body = the 100-byte value), one at a time on one
    /// keep-alive connection; latency of each in ms.
    func singleProduceLatencies(topic: String, calls: Int, acks: String) throws -> [Double] {
        let connection = try HTTPConnection(broker)
        let request = RequestBytes(
            method: "POST", path: "/v1/topics/\(topic)/records?partition=0&acks=\(acks)", host: broker.description,
            contentType: "text/plain", body: [UInt8](repeating: UInt8(ascii: "x"), count: recordValueBytes))
        var latencies: [Double] = []
        latencies.reserveCapacity(calls)
        for _ in 0..<calls {
            let sent = monotonicNanoseconds()
            let response = try connection.exchange(request)
            let done = monotonicNanoseconds()
            guard response.status == 200 else {
                throw BenchError("single produce: HTTP \(response.status) \(String(decoding: response.body.prefix(300), as: UTF8.self))")
            }
            latencies.append(Double(done - sent) / 1e6)
        }
        return latencies
    }

    // MARK: W4 produce -> long-poll latency

    struct EndToEndResult {
        var latencies: [Double]
        var readRequests: Int
    }

    /// A reader thread long-polls (`wait_ms`) on its own connection, following next_offset; the
    /// producer sends `messages` single-record acks=all produces `intervalMilliseconds` apart (each
    /// waits for its ack, then sleeps to the next slot), each value starting with a 20-digit
    /// CLOCK_MONOTONIC nanosecond stamp. Latency = reader's receive time - stamp.
    func endToEnd(topic: String, messages: Int, intervalMilliseconds: Double, waitMilliseconds: Int) throws -> EndToEndResult {
        let reader = try HTTPConnection(broker)
        let producer = try HTTPConnection(broker)
        let host = broker.description
        let collected = Mutex<(latencies: [Double], requests: Int, failure: String?)>(([], 0, nil))
        let isProducing = Atomic<Bool>(true)
        let handoff = Handoff(reader)
        let group = ThreadGroup()
        let ready = Atomic<Bool>(false)
        group.spawn {
            let connection = handoff.value
            var offset: Int64 = 0
            var latencies: [Double] = []
            latencies.reserveCapacity(messages)
            var requests = 0
            let giveUp = monotonicNanoseconds() + UInt64(Double(messages) * intervalMilliseconds * 1e6) + 30_000_000_000
            do {
                while latencies.count < messages {
                    if monotonicNanoseconds() > giveUp { throw BenchError("reader: only \(latencies.count) of \(messages) records arrived") }
                    let path = "/v1/topics/\(topic)/partitions/0/records?offset=\(offset)&max_records=1000&wait_ms=\(waitMilliseconds)"
                    try connection.send(RequestBytes(method: "GET", path: path, host: host))
                    ready.store(true, ordering: .releasing)
                    let response = try connection.receive()
                    let now = monotonicNanoseconds()
                    requests += 1
                    guard response.status == 200 else {
                        throw BenchError("long-poll read: HTTP \(response.status) \(String(decoding: response.body.prefix(300), as: UTF8.self))")
                    }
                    BodyScan.forEachStringValue(in: response.body) { value in
                        var stamp: UInt64 = 0
                        for i in 0..<min(20, value.count) { stamp = stamp * 10 + UInt64(value[i] &- 48) }
                        latencies.append(Double(Int64(bitPattern: now &- stamp)) / 1e6)
                    }
                    guard let next = BodyScan.integer(after: "next_offset", in: response.body) else {
                        throw BenchError("long-poll read: no next_offset")
                    }
                    offset = next
                    if !isProducing.load(ordering: .relaxed) && latencies.count < messages && requests > messages * 4 {
                        throw BenchError("reader: producer done but only \(latencies.count) records arrived")
                    }
                }
                collected.withLock { $0.latencies = latencies; $0.requests = requests }
            } catch {
                collected.withLock { $0.failure = "\(error)" }
            }
        }
        // Let the reader park its first long-poll before the first record.
        while !ready.load(ordering: .acquiring) { usleep(1000) }
        usleep(50_000)
        let path = "/v1/topics/\(topic)/records?partition=0&acks=all"
        let padding = [UInt8](repeating: UInt8(ascii: "x"), count: recordValueBytes - 20)
        let interval = UInt64(intervalMilliseconds * 1e6)
        let start = monotonicNanoseconds()
        var producerFailure: String?
        for i in 0..<messages {
            sleepUntil(nanoseconds: start + UInt64(i) * interval)
            let stamp = monotonicNanoseconds()
            var digits = Array(String(stamp).utf8)
            digits = [UInt8](repeating: UInt8(ascii: "0"), count: 20 - digits.count) + digits
            let request = RequestBytes(method: "POST", path: path, host: host, contentType: "text/plain", body: digits + padding)
            do {
                let response = try producer.exchange(request)
                guard response.status == 200 else { throw BenchError("W4 produce: HTTP \(response.status)") }
            } catch {
                producerFailure = "\(error)"
                break
            }
        }
        isProducing.store(false, ordering: .relaxed)
        group.join()
        if let producerFailure { throw BenchError(producerFailure) }
        let result = collected.withLock { $0 }
        if let failure = result.failure { throw BenchError(failure) }
        return EndToEndResult(latencies: result.latencies, readRequests: result.requests)
    }
}

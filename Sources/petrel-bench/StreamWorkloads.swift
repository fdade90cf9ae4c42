import Foundation
import Glibc
import Synchronization
import WebSocketCodec

/// Issue #6's streaming workloads: WebSocket produce with an ack per message, WebSocket and SSE
/// consume from offset 0, and producer -> WebSocket consumer latency.
extension Workloads {
    // MARK: ws-produce

    struct WebSocketProduceResult {
        var seconds: Double
        var messages: Int
        var messagesPerSecond: Double { Double(messages) / seconds }
    }

    /// `messages` produce messages of one 100-byte record each (`acks`), over `connections` sockets
    /// with up to `window` unacknowledged messages per socket, one thread per socket: send what the
    /// window allows in one write, block in recv for acks, repeat. Every ack must carry exactly one
    /// offset, and at the end every offset 0..<messages must have been acknowledged exactly once
    /// (fresh one-partition topic). Timed from the first send to the last ack.
    func webSocketProduce(topic: String, messages: Int, connections: Int, window: Int, acks: String) throws -> WebSocketProduceResult {
        precondition(window >= 1 && window <= 1_000 && connections >= 1)
        var sockets: [WebSocketClient] = []
        for _ in 0..<connections { sockets.append(try WebSocketClient(broker, path: "/v1/topics/\(topic)/ws")) }
        let seen = Mutex<[UInt8]>([UInt8](repeating: 0, count: messages))
        let failure = Mutex<String?>(nil)
        let group = ThreadGroup()
        let start = monotonicNanoseconds()
        for (index, socket) in sockets.enumerated() {
            // Split the messages evenly; socket i sends ids i, i+connections, ...
            let share = messages / connections + (index < messages % connections ? 1 : 0)
            let handoff = Handoff(socket)
            group.spawn {
                do {
                    let offsets = try Self.produceLoop(handoff.value, messages: share, firstID: index, idStep: connections, window: window, acks: acks)
                    try seen.withLock { seen in
                        for offset in offsets {
                            guard offset >= 0 && offset < messages else { throw BenchError("ws-produce: ack for offset \(offset) outside 0..<\(messages)") }
                            guard seen[offset] == 0 else { throw BenchError("ws-produce: offset \(offset) acknowledged twice") }
                            seen[offset] = 1
                        }
                    }
                } catch {
                    failure.withLock { $0 = $0 ?? "\(error)" }
                }
            }
        }
        group.join()
        let seconds = Double(monotonicNanoseconds() - start) / 1e9
        for socket in sockets { socket.close() }
        if let message = failure.withLock({ $0 }) { throw BenchError(message) }
        let missing = seen.withLock { $0.lazy.filter { $0 == 0 }.count }
        guard missing == 0 else { throw BenchError("ws-produce: \(missing) of \(messages) offsets never acknowledged") }
        return WebSocketProduceResult(seconds: seconds, messages: messages)
    }

    /// One socket's sender/receiver loop; returns the acknowledged offsets.
    private static func produceLoop(_ socket: WebSocketClient, messages: Int, firstID: Int, idStep: Int, window: Int, acks: String) throws -> [Int] {
        let head = Array("{\"type\":\"produce\",\"id\":".utf8)
        let tail = Array(",\"acks\":\"\(acks)\",\"records\":[{\"value\":\"".utf8)
            + [UInt8](repeating: UInt8(ascii: "x"), count: recordValueBytes) + Array("\"}]}".utf8)
        let ackPrefix = Array("{\"type\":\"ack\"".utf8)
        let offsetNeedle = Array("\"offset\":".utf8)
        var offsets: [Int] = []
        offsets.reserveCapacity(messages)
        var sent = 0
        var acked = 0
        var nextID = firstID
        var payload: [UInt8] = []
        payload.reserveCapacity(head.count + tail.count + 20)
        var out: [UInt8] = []
        out.reserveCapacity(window * (head.count + tail.count + 40))
        while acked < messages {
            // Top the window up in one write.
            out.removeAll(keepingCapacity: true)
            while sent < messages && sent - acked < window {
                payload.removeAll(keepingCapacity: true)
                payload += head
                Bytes.decimal(nextID, into: &payload)
                payload += tail
                socket.appendFrame(.text, payload: payload, to: &out)
                nextID += idStep
                sent += 1
            }
            if !out.isEmpty { try socket.sendAll(out) }
            try socket.receive { message, _ in
                guard Bytes.hasPrefix(message, ackPrefix) else {
                    throw BenchError("ws-produce: expected an ack, got \(String(decoding: message.prefix(300), as: UTF8.self))")
                }
                guard let first = Bytes.integer(after: offsetNeedle, in: message) else {
                    throw BenchError("ws-produce: ack without an offset: \(String(decoding: message.prefix(300), as: UTF8.self))")
                }
                guard Bytes.integer(after: offsetNeedle, in: message, from: first.end) == nil else {
                    throw BenchError("ws-produce: ack with more than one offset for a one-record message")
                }
                offsets.append(Int(first.value))
                acked += 1
            }
        }
        return offsets
    }

    // MARK: ws-consume

    struct StreamConsumeResult {
        var seconds: Double
        var records: Int
        var messages: Int
        var recordsPerSecond: Double { Double(records) / seconds }
    }

    /// Reads the partition over a consume WebSocket from offset 0 until `expected` records: grants
    /// `credit` records at the start and tops it back up to `credit` whenever less than half is left,
    /// so the server never waits for credit in steady state. Each `records` message is counted
    /// (`{"offset":` occurrences) and checked against its `next_offset`. Timed from the first credit
    /// (after the handshake) to the last record.
    func webSocketConsume(topic: String, expected: Int, maxRecords: Int, maxBytes: Int, credit: Int) throws -> StreamConsumeResult {
        let socket = try WebSocketClient(
            broker, path: "/v1/topics/\(topic)/partitions/0/ws?offset=earliest&max_records=\(maxRecords)&max_bytes=\(maxBytes)")
        defer { socket.close() }
        let recordsPrefix = Array("{\"type\":\"records\"".utf8)
        let recordNeedle = Array("{\"offset\":".utf8)
        var records = 0
        var messages = 0
        var granted = credit
        var offset: Int64 = 0
        let start = monotonicNanoseconds()
        try socket.sendText("{\"type\":\"credit\",\"records\":\(credit)}")
        while records < expected {
            try socket.receive { message, _ in
                guard Bytes.hasPrefix(message, recordsPrefix) else {
                    throw BenchError("ws-consume: expected records, got \(String(decoding: message.prefix(300), as: UTF8.self))")
                }
                let got = BodyScan.count(recordNeedle, in: message)
                guard let next = BodyScan.integer(after: "next_offset", in: message) else { throw BenchError("ws-consume: no next_offset") }
                guard next - offset == Int64(got) else { throw BenchError("ws-consume at \(offset): \(got) records but next_offset \(next)") }
                offset = next
                records += got
                messages += 1
            }
            let left = granted - records
            if left < credit / 2 && granted < expected {
                try socket.sendText("{\"type\":\"credit\",\"records\":\(credit - left)}")
                granted += credit - left
            }
        }
        let seconds = Double(monotonicNanoseconds() - start) / 1e9
        guard records == expected else { throw BenchError("ws-consume: \(records) records, expected \(expected)") }
        return StreamConsumeResult(seconds: seconds, records: records, messages: messages)
    }

    // MARK: sse-consume

    /// `GET .../records?offset=earliest&stream_limit=expected` with `Accept: text/event-stream` on one
    /// connection; the broker ends the stream after `expected` records. The body is decoded as it
    /// arrives (chunked, or up to Content-Length / close) and never kept whole: `event: record` lines
    /// are counted across chunk and read boundaries, and the last `id:` must be expected - 1. Timed
    /// from the request to the end of the stream.
    func sseConsume(topic: String, expected: Int, maxRecords: Int, maxBytes: Int) throws -> StreamConsumeResult {
        let fd = try broker.connectSocket()
        defer { close(fd) }
        var timeout = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let path = "/v1/topics/\(topic)/partitions/0/records?offset=earliest&max_records=\(maxRecords)&max_bytes=\(maxBytes)&stream_limit=\(expected)"
        let request = Array("GET \(path) HTTP/1.1\r\nHost: \(broker.host):\(broker.port)\r\nAccept: text/event-stream\r\n\r\n".utf8)
        var counter = SSECounter()
        var buffer = [UInt8](repeating: 0, count: 256 * 1024)
        var filled = 0
        let start = monotonicNanoseconds()
        guard request.withUnsafeBytes({ send(fd, $0.baseAddress!, $0.count, Int32(MSG_NOSIGNAL)) }) == request.count else {
            throw BenchError("sse-consume: send: \(String(cString: strerror(errno)))")
        }
        func receive() throws -> Bool {
            if filled == buffer.count { buffer += [UInt8](repeating: 0, count: buffer.count) }
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + filled, $0.count - filled, 0) }
            if n < 0 && errno == EINTR { return true }
            if n < 0 { throw BenchError("sse-consume: recv: \(String(cString: strerror(errno)))") }
            filled += n
            return n > 0
        }
        // The head.
        var head: ResponseHead?
        while head == nil {
            head = try buffer.withUnsafeBytes { try ResponseParsing.head(UnsafeRawBufferPointer(rebasing: $0[0..<filled])) }
            if head == nil { guard try receive() else { throw BenchError("sse-consume: closed before the response head") } }
        }
        guard head!.status == 200 else {
            throw BenchError("sse-consume: HTTP \(head!.status) \(String(decoding: buffer[0..<min(filled, 400)], as: UTF8.self))")
        }
        var position = head!.headLength
        // The body: chunked (what libmicrohttpd sends for a stream) or a plain length.
        enum Chunk { case size([UInt8]), data(Int), dataEnd(Int), trailer([UInt8]), done }
        var state: Chunk
        var plainRemaining = 0
        let chunked: Bool
        switch head!.framing {
        case .chunked:
            chunked = true
            state = .size([])
        case .length(let n):
            chunked = false
            plainRemaining = n
            state = n == 0 ? .done : .data(n)
        }
        while true {
            // Consume buffer[position..<filled].
            while position < filled {
                if case .done = state { break }
                switch state {
                case .size(var line):
                    let byte = buffer[position]
                    position += 1
                    if byte == 10 {
                        let text = String(decoding: line, as: UTF8.self).split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
                        guard let size = Int(text, radix: 16) else { throw BenchError("sse-consume: bad chunk size line '\(text)'") }
                        state = size == 0 ? .trailer([]) : .data(size)
                    } else if byte != 13 {
                        line.append(byte)
                        state = .size(line)
                    } else {
                        state = .size(line)
                    }
                case .data(let remaining):
                    let take = min(remaining, filled - position)
                    buffer.withUnsafeBytes { counter.feed(UnsafeRawBufferPointer(rebasing: $0[position..<(position + take)])) }
                    position += take
                    if !chunked { plainRemaining -= take }
                    if take == remaining { state = chunked ? .dataEnd(2) : .done } else { state = .data(remaining - take) }
                case .dataEnd(let left):
                    position += 1
                    state = left == 1 ? .size([]) : .dataEnd(left - 1)
                case .trailer(var line):
                    let byte = buffer[position]
                    position += 1
                    if byte == 10 {
                        if line.isEmpty { state = .done } else { state = .trailer([]) }
                    } else if byte != 13 {
                        line.append(byte)
                        state = .trailer(line)
                    }
                case .done:
                    break
                }
            }
            if case .done = state { break }
            // Everything in the buffer is consumed: reuse it from the start.
            position = 0
            filled = 0
            guard try receive() else {
                if chunked || plainRemaining > 0 { throw BenchError("sse-consume: connection closed mid-stream after \(counter.events) events") }
                break
            }
        }
        let seconds = Double(monotonicNanoseconds() - start) / 1e9
        guard counter.events == expected else { throw BenchError("sse-consume: \(counter.events) record events, expected \(expected)") }
        let last = counter.lastID()
        guard last == Int64(expected - 1) else { throw BenchError("sse-consume: last event id \(last), expected \(expected - 1)") }
        return StreamConsumeResult(seconds: seconds, records: counter.events, messages: 1)
    }

    // MARK: ws-latency

    struct WebSocketLatencyResult {
        var latencies: [Double]
        var recordsMessages: Int
        /// The producer's send -> ack time of each message (its share of the end-to-end figure).
        var ackLatencies: [Double]
    }

    /// A consumer thread holds a consume WebSocket (offset earliest on a fresh topic, credit for every
    /// message up front) and stamps each record's arrival; the producer sends `messages` one-record
    /// produce messages over a produce WebSocket, one at a time (waits for each ack), `interval` ms
    /// apart, each value starting with a 20-digit CLOCK_MONOTONIC stamp. Latency = the consumer's recv
    /// time - stamp.
    func webSocketLatency(topic: String, messages: Int, intervalMilliseconds: Double, acks: String) throws -> WebSocketLatencyResult {
        let consumer = try WebSocketClient(broker, path: "/v1/topics/\(topic)/partitions/0/ws?offset=earliest&max_records=1000")
        let producer = try WebSocketClient(broker, path: "/v1/topics/\(topic)/ws")
        try consumer.sendText("{\"type\":\"credit\",\"records\":\(messages)}")
        let collected = Mutex<(latencies: [Double], messages: Int, failure: String?)>(([], 0, nil))
        let handoff = Handoff(consumer)
        let group = ThreadGroup()
        group.spawn {
            let socket = handoff.value
            var latencies: [Double] = []
            latencies.reserveCapacity(messages)
            var recordsMessages = 0
            do {
                while latencies.count < messages {
                    try socket.receive { message, now in
                        recordsMessages += 1
                        BodyScan.forEachStringValue(in: message) { value in
                            var stamp: UInt64 = 0
                            for i in 0..<min(20, value.count) { stamp = stamp * 10 + UInt64(value[i] &- 48) }
                            latencies.append(Double(Int64(bitPattern: now &- stamp)) / 1e6)
                        }
                    }
                }
                collected.withLock { $0.latencies = latencies; $0.messages = recordsMessages }
            } catch {
                collected.withLock { $0.failure = "\(error)" }
            }
        }
        // Let the consumer's first read park before the first record.
        usleep(50_000)
        let head = Array("{\"type\":\"produce\",\"id\":".utf8)
        let middle = Array(",\"acks\":\"\(acks)\",\"records\":[{\"value\":\"".utf8)
        let padding = [UInt8](repeating: UInt8(ascii: "x"), count: recordValueBytes - 20)
        let end = Array("\"}]}".utf8)
        let ackPrefix = Array("{\"type\":\"ack\"".utf8)
        let interval = UInt64(intervalMilliseconds * 1e6)
        let start = monotonicNanoseconds()
        var producerFailure: String?
        var payload: [UInt8] = []
        var out: [UInt8] = []
        var ackLatencies: [Double] = []
        ackLatencies.reserveCapacity(messages)
        for i in 0..<messages {
            sleepUntil(nanoseconds: start + UInt64(i) * interval)
            payload.removeAll(keepingCapacity: true)
            payload += head
            Bytes.decimal(i, into: &payload)
            payload += middle
            let stamp = monotonicNanoseconds()
            var digits = Array(String(stamp).utf8)
            digits = [UInt8](repeating: UInt8(ascii: "0"), count: 20 - digits.count) + digits
            payload += digits
            payload += padding
            payload += end
            out.removeAll(keepingCapacity: true)
            producer.appendFrame(.text, payload: payload, to: &out)
            do {
                try producer.sendAll(out)
                var acked = false
                while !acked {
                    try producer.receive { message, _ in
                        guard Bytes.hasPrefix(message, ackPrefix) else {
                            throw BenchError("ws-latency produce: \(String(decoding: message.prefix(300), as: UTF8.self))")
                        }
                        acked = true
                    }
                }
                ackLatencies.append(Double(monotonicNanoseconds() - stamp) / 1e6)
            } catch {
                producerFailure = "\(error)"
                break
            }
        }
        if producerFailure != nil {
            // Unblock the consumer: it would wait for records that never come.
            shutdown(consumer.fd, Int32(SHUT_RDWR))
        }
        group.join()
        producer.close()
        consumer.close()
        if let producerFailure { throw BenchError(producerFailure) }
        let result = collected.withLock { $0 }
        if let failure = result.failure { throw BenchError(failure) }
        return WebSocketLatencyResult(latencies: result.latencies, recordsMessages: result.messages, ackLatencies: ackLatencies)
    }
}

/// Counts `event: record` lines in an SSE body fed in arbitrary pieces (a line may straddle two
/// pieces), and keeps the last few KiB to find the last `id:`.
struct SSECounter {
    static let needle = Array("\nevent: record\n".utf8)
    private(set) var events = 0
    /// The last needle.count - 1 bytes seen: a match straddling a piece boundary starts in here.
    private var carry: [UInt8] = []
    private var tail: [UInt8] = []

    mutating func feed(_ piece: UnsafeRawBufferPointer) {
        guard piece.count > 0 else { return }
        let n = Self.needle.count
        if !carry.isEmpty {
            // Matches starting in the carry (none can lie wholly inside it: it is shorter than the needle).
            let joined = carry + Array(UnsafeRawBufferPointer(rebasing: piece[0..<min(piece.count, n - 1)]))
            for startIndex in 0..<carry.count where startIndex + n <= joined.count {
                if joined[startIndex..<(startIndex + n)].elementsEqual(Self.needle) { events += 1 }
            }
        }
        Self.needle.withUnsafeBytes { needle in
            var start = piece.baseAddress!
            var remaining = piece.count
            while remaining >= n, let hit = findBytes(start, remaining, needle.baseAddress!, n) {
                events += 1
                let advance = hit - start + n
                start += advance
                remaining -= advance
            }
        }
        let keep = n - 1
        if piece.count >= keep {
            carry = Array(UnsafeRawBufferPointer(rebasing: piece[(piece.count - keep)...]))
        } else {
            carry = Array((carry + Array(piece)).suffix(keep))
        }
        tail += piece
        if tail.count > 16 * 1024 { tail.removeFirst(tail.count - 4096) }
    }

    /// The number after the last `id: ` in what was kept, or -1.
    func lastID() -> Int64 {
        let needle = Array("id: ".utf8)
        var last: Int64 = -1
        var from = 0
        while let hit = Bytes.integer(after: needle, in: tail, from: from) {
            last = hit.value
            from = hit.end
        }
        return last
    }
}

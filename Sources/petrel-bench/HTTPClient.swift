import Glibc

/// Where the server listens: `http://host:port` with a numeric IPv4 host (or `localhost`).
struct Endpoint: Sendable, CustomStringConvertible {
    var host: String
    var port: UInt16

    init(url: String) throws {
        guard url.hasPrefix("http://") else { throw BenchError("only http:// URLs are supported, got '\(url)'") }
        var rest = url.dropFirst("http://".count)
        if let slash = rest.firstIndex(of: "/") { rest = rest[..<slash] }
        let parts = rest.split(separator: ":", maxSplits: 1)
        host = parts.first.map(String.init) ?? "127.0.0.1"
        if host == "localhost" { host = "127.0.0.1" }
        if parts.count == 2 {
            guard let p = UInt16(parts[1]) else { throw BenchError("bad port in '\(url)'") }
            port = p
        } else {
            port = 80
        }
    }

    var description: String { "http://\(host):\(port)" }

    /// A connected TCP socket with Nagle off (requests are one write each; Nagle would add delay to
    /// the next request's first segment).
    func connectSocket(nonBlocking: Bool = false) throws -> Int32 {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else {
            throw BenchError("host must be a numeric IPv4 address, got '\(host)'")
        }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw BenchError("socket: \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw BenchError("connect to \(self): \(reason)")
        }
        if nonBlocking {
            let flags = fcntl(fd, F_GETFL)
            _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
        }
        return fd
    }
}

/// One complete HTTP/1.1 request, serialized once and sent many times (the load generator must
/// not spend its time formatting).
struct RequestBytes: Sendable {
    var bytes: [UInt8]

    init(method: String, path: String, host: String, contentType: String? = nil, body: [UInt8] = []) {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: \(host)\r\n"
        if let contentType { head += "Content-Type: \(contentType)\r\n" }
        if method != "GET" || !body.isEmpty { head += "Content-Length: \(body.count)\r\n" }
        head += "\r\n"
        bytes = Array(head.utf8) + body
    }
}

/// What the response head says about the body that follows.
enum BodyFraming: Equatable {
    case length(Int)
    case chunked
}

struct ResponseHead {
    var status: Int
    var headLength: Int
    var framing: BodyFraming
    var closes: Bool
}

enum ResponseParsing {
    /// Parses a response head at the start of `bytes`; nil when it is not complete yet.
    static func head(_ bytes: UnsafeRawBufferPointer) throws -> ResponseHead? {
        let count = bytes.count
        guard count >= 16 else { return nil }
        var end = -1
        var i = 0
        while i + 3 < count {
            if bytes[i] == 13 && bytes[i + 1] == 10 && bytes[i + 2] == 13 && bytes[i + 3] == 10 {
                end = i
                break
            }
            i += 1
        }
        guard end >= 0 else {
            if count > 64 * 1024 { throw BenchError("response head longer than 64 KiB") }
            return nil
        }
        // "HTTP/1.1 200 OK"
        guard bytes[0] == UInt8(ascii: "H"), bytes[8] == UInt8(ascii: " ") else {
            throw BenchError("not an HTTP response: \(String(decoding: UnsafeRawBufferPointer(rebasing: bytes[0..<min(count, 40)]), as: UTF8.self))")
        }
        var status = 0
        for j in 9..<12 { status = status * 10 + Int(bytes[j]) - 48 }
        var framing: BodyFraming?
        var closes = bytes[7] == UInt8(ascii: "0")  // HTTP/1.0 closes unless told otherwise
        // Header lines, matched on bytes: no String per header (this runs once per request in the
        // req/s client, whose cost must stay well below the server's).
        var lineStart = 0
        while bytes[lineStart] != 10 { lineStart += 1 }
        lineStart += 1
        while lineStart < end {
            var lineEnd = lineStart
            while bytes[lineEnd] != 13 { lineEnd += 1 }
            var colon = lineStart
            while colon < lineEnd && bytes[colon] != UInt8(ascii: ":") { colon += 1 }
            if colon < lineEnd {
                var valueStart = colon + 1
                while valueStart < lineEnd && bytes[valueStart] == 32 { valueStart += 1 }
                if nameEquals(bytes, lineStart, colon, contentLength) {
                    var n = 0
                    var digits = 0
                    for k in valueStart..<lineEnd where bytes[k] >= 48 && bytes[k] <= 57 {
                        n = n * 10 + Int(bytes[k] - 48)
                        digits += 1
                    }
                    guard digits > 0 else { throw BenchError("bad Content-Length header") }
                    if framing == nil { framing = .length(n) }
                } else if nameEquals(bytes, lineStart, colon, transferEncoding) {
                    if contains(bytes, valueStart, lineEnd, chunked) { framing = .chunked }
                } else if nameEquals(bytes, lineStart, colon, connection) {
                    if contains(bytes, valueStart, lineEnd, close) { closes = true }
                    if contains(bytes, valueStart, lineEnd, keepAlive) { closes = false }
                }
            }
            lineStart = lineEnd + 2
        }
        // 1xx, 204 and 304 have no body.
        if status < 200 || status == 204 || status == 304 { framing = .length(0) }
        guard let framing else {
            throw BenchError("response with neither Content-Length nor chunked encoding (status \(status)); this client needs one of them")
        }
        return ResponseHead(status: status, headLength: end + 4, framing: framing, closes: closes)
    }

    private static let contentLength = Array("content-length".utf8)
    private static let transferEncoding = Array("transfer-encoding".utf8)
    private static let connection = Array("connection".utf8)
    private static let chunked = Array("chunked".utf8)
    private static let close = Array("close".utf8)
    private static let keepAlive = Array("keep-alive".utf8)

    @inline(__always) private static func lower(_ b: UInt8) -> UInt8 { b >= 65 && b <= 90 ? b + 32 : b }

    private static func nameEquals(_ bytes: UnsafeRawBufferPointer, _ from: Int, _ to: Int, _ name: [UInt8]) -> Bool {
        guard to - from == name.count else { return false }
        for k in 0..<name.count where lower(bytes[from + k]) != name[k] { return false }
        return true
    }

    private static func contains(_ bytes: UnsafeRawBufferPointer, _ from: Int, _ to: Int, _ word: [UInt8]) -> Bool {
        guard to - from >= word.count else { return false }
        outer: for start in from...(to - word.count) {
            for k in 0..<word.count where lower(bytes[start + k]) != word[k] { continue outer }
            return true
        }
        return false
    }
}

struct HTTPResponse {
    var status: Int
    var body: [UInt8]
}

/// A blocking keep-alive HTTP/1.1 connection on a raw socket: one request at a time, one thread.
/// Not thread-safe; each thread owns its own.
final class HTTPConnection {
    let endpoint: Endpoint
    private var fd: Int32
    private var buffer: [UInt8]
    private var readIndex = 0
    private var writeIndex = 0

    init(_ endpoint: Endpoint) throws {
        self.endpoint = endpoint
        fd = try endpoint.connectSocket()
        buffer = [UInt8](repeating: 0, count: 256 * 1024)
    }

    deinit { if fd >= 0 { close(fd) } }

    func send(_ request: RequestBytes) throws {
        try request.bytes.withUnsafeBytes { raw in
            var sent = 0
            while sent < raw.count {
                let n = Glibc.send(fd, raw.baseAddress! + sent, raw.count - sent, Int32(MSG_NOSIGNAL))
                if n < 0 {
                    if errno == EINTR { continue }
                    throw BenchError("send: \(String(cString: strerror(errno)))")
                }
                sent += n
            }
        }
    }

    /// Sends a request and waits for its whole response.
    func exchange(_ request: RequestBytes) throws -> HTTPResponse {
        try send(request)
        return try receive()
    }

    /// Reads one whole response (Content-Length or chunked body).
    func receive() throws -> HTTPResponse {
        while true {
            let parsed = try buffer.withUnsafeBytes { raw in
                try ResponseParsing.head(UnsafeRawBufferPointer(rebasing: raw[readIndex..<writeIndex]))
            }
            if let head = parsed {
                readIndex += head.headLength
                let body: [UInt8]
                switch head.framing {
                case .length(let n):
                    try fill(atLeast: n)
                    body = Array(buffer[readIndex..<readIndex + n])
                    readIndex += n
                case .chunked:
                    body = try readChunked()
                }
                if head.closes { reconnect() }
                return HTTPResponse(status: head.status, body: body)
            }
            try readMore()
        }
    }

    /// Chunked bodies: the broker does not send them for these routes; decoded minimally (no
    /// trailers) so a proxy in between would not break the run.
    private func readChunked() throws -> [UInt8] {
        var body: [UInt8] = []
        while true {
            let line = try readLine()
            let sizeText = line.split(separator: ";").first.map { String($0).trimmingCharacters() } ?? ""
            guard let size = Int(sizeText, radix: 16) else { throw BenchError("bad chunk size line '\(line)'") }
            if size == 0 {
                // Trailers (none expected) end with an empty line.
                while try !readLine().isEmpty {}
                return body
            }
            try fill(atLeast: size + 2)
            body.append(contentsOf: buffer[readIndex..<readIndex + size])
            readIndex += size + 2
        }
    }

    private func readLine() throws -> String {
        while true {
            var i = readIndex
            while i + 1 < writeIndex {
                if buffer[i] == 13 && buffer[i + 1] == 10 {
                    let line = String(decoding: buffer[readIndex..<i], as: UTF8.self)
                    readIndex = i + 2
                    return line
                }
                i += 1
            }
            try readMore()
        }
    }

    private func fill(atLeast count: Int) throws {
        while writeIndex - readIndex < count { try readMore(needing: count) }
    }

    /// Receives more bytes, compacting or growing the buffer first when it is full.
    private func readMore(needing: Int = 0) throws {
        if writeIndex == buffer.count || buffer.count - readIndex < needing {
            let pending = writeIndex - readIndex
            if readIndex > 0 {
                buffer.withUnsafeMutableBytes { raw in
                    _ = memmove(raw.baseAddress!, raw.baseAddress! + readIndex, pending)
                }
                readIndex = 0
                writeIndex = pending
            }
            let wanted = max(needing, pending + 64 * 1024)
            if buffer.count < wanted {
                buffer.append(contentsOf: [UInt8](repeating: 0, count: wanted - buffer.count))
            }
        }
        let n = buffer.withUnsafeMutableBytes { raw in
            recv(fd, raw.baseAddress! + writeIndex, raw.count - writeIndex, 0)
        }
        if n < 0 {
            if errno == EINTR { return }
            throw BenchError("recv from \(endpoint): \(String(cString: strerror(errno)))")
        }
        if n == 0 { throw BenchError("\(endpoint) closed the connection in the middle of a response") }
        writeIndex += n
    }

    private func reconnect() {
        close(fd)
        readIndex = 0
        writeIndex = 0
        fd = (try? endpoint.connectSocket()) ?? -1
    }
}

extension String {
    fileprivate func trimmingCharacters() -> String {
        String(self.drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
    }
}

/// memmem (a GNU extension Glibc's module does not export): memchr for the first byte, memcmp
/// for the rest.
func findBytes(_ haystack: UnsafeRawPointer, _ haystackCount: Int, _ needle: UnsafeRawPointer, _ needleCount: Int) -> UnsafeRawPointer? {
    guard needleCount > 0, haystackCount >= needleCount else { return nil }
    let first = Int32(needle.load(as: UInt8.self))
    var start = haystack
    let lastStart = haystack + (haystackCount - needleCount)
    while start <= lastStart {
        guard let hit = memchr(start, first, lastStart - start + 1) else { return nil }
        let candidate = UnsafeRawPointer(hit)
        if memcmp(candidate, needle, needleCount) == 0 { return candidate }
        start = candidate + 1
    }
    return nil
}

/// Byte scanning over response bodies (no JSON parser: the load generator must stay cheap).
enum BodyScan {
    /// Occurrences of `needle` in `haystack`.
    static func count(_ needle: [UInt8], in haystack: [UInt8]) -> Int {
        haystack.withUnsafeBytes { h in
            needle.withUnsafeBytes { n in
                var found = 0
                var start = h.baseAddress!
                var remaining = h.count
                while remaining >= n.count, let hit = findBytes(start, remaining, n.baseAddress!, n.count) {
                    found += 1
                    let advance = hit - start + n.count
                    start += advance
                    remaining -= advance
                }
                return found
            }
        }
    }

    /// The integer after the first `"name":`, e.g. `next_offset`. The read answer puts it after the
    /// records, so the last 512 bytes are searched first (not 750 KB of records per W2 answer).
    static func integer(after name: String, in body: [UInt8]) -> Int64? {
        let needle = Array("\"\(name)\":".utf8)
        return body.withUnsafeBytes { h -> Int64? in
            needle.withUnsafeBytes { n -> Int64? in
                let tail = max(0, h.count - 512)
                guard h.count > 0,
                    let hit = findBytes(h.baseAddress! + tail, h.count - tail, n.baseAddress!, n.count)
                        ?? findBytes(h.baseAddress!, h.count, n.baseAddress!, n.count)
                else { return nil }
                var i = hit - UnsafeRawPointer(h.baseAddress!) + n.count
                while i < h.count && h[i] == 32 { i += 1 }
                var value: Int64 = 0
                var digits = 0
                while i < h.count, h[i] >= 48, h[i] <= 57 {
                    value = value * 10 + Int64(h[i] - 48)
                    i += 1
                    digits += 1
                }
                return digits > 0 ? value : nil
            }
        }
    }

    /// Calls `body` with the text of every `"value":"..."` string (no escapes expected in ours).
    static func forEachStringValue(in haystack: [UInt8], _ body: (UnsafeRawBufferPointer) -> Void) {
        let needle = Array("\"value\":\"".utf8)
        haystack.withUnsafeBytes { h in
            needle.withUnsafeBytes { n in
                var offset = 0
                while offset < h.count,
                    let hit = findBytes(h.baseAddress! + offset, h.count - offset, n.baseAddress!, n.count)
                {
                    let start = hit - UnsafeRawPointer(h.baseAddress!) + n.count
                    var end = start
                    while end < h.count && h[end] != UInt8(ascii: "\"") { end += 1 }
                    body(UnsafeRawBufferPointer(rebasing: h[start..<end]))
                    offset = end
                }
            }
        }
    }
}

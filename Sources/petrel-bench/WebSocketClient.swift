import CMicroHTTPD
import Glibc
import WebSocketCodec

/// A minimal blocking RFC 6455 client on a raw socket, for the stream workloads: the opening
/// handshake (checks 101 and `Sec-WebSocket-Accept`), masked text frames out, frames in through
/// WebSocketCodec's parser (client role: server frames must be unmasked). Pings are answered from
/// ``receive(_:)``, so one thread should both send and receive (the workloads do).
final class WebSocketClient {
    let endpoint: Endpoint
    let path: String
    private(set) var fd: Int32
    private var parser = WebSocketFrameParser(role: .client, framePayloadBytesMax: 64 << 20)
    private var readBuffer = [UInt8](repeating: 0, count: 256 * 1024)
    /// Bytes that came with the 101 (the server may push right after it).
    private var leftover: [UInt8] = []
    private var maskState: UInt64
    /// A message split over frames (the broker sends one frame per message; handled anyway).
    private var fragments: [UInt8]?

    init(_ endpoint: Endpoint, path: String) throws {
        self.endpoint = endpoint
        self.path = path
        fd = try endpoint.connectSocket()
        maskState = monotonicNanoseconds() | 1
        // A stalled server must fail the run, not hang it.
        var timeout = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        do { try handshake() } catch {
            Glibc.close(fd)
            fd = -1
            throw error
        }
    }

    deinit { if fd >= 0 { Glibc.close(fd) } }

    private func handshake() throws {
        var keyBytes = [UInt8](repeating: 0, count: 16)
        for i in 0..<16 { keyBytes[i] = UInt8(truncatingIfNeeded: nextRandom()) }
        let key = Base64.encode(keyBytes)
        let request =
            "GET \(path) HTTP/1.1\r\nHost: \(endpoint.host):\(endpoint.port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: \(key)\r\nSec-WebSocket-Version: 13\r\n\r\n"
        try sendAll(Array(request.utf8))
        var head: [UInt8] = []
        while true {
            let n = readBuffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw BenchError("WebSocket handshake \(path): connection closed (\(n < 0 ? String(cString: strerror(errno)) : "EOF"))") }
            head += readBuffer[0..<n]
            if let end = findEndOfHead(head) {
                leftover = Array(head[(end + 4)...])
                head = Array(head[..<end])
                break
            }
            if head.count > 64 * 1024 { throw BenchError("WebSocket handshake \(path): response head too long") }
        }
        let text = String(decoding: head, as: UTF8.self)
        let lines = text.split(separator: "\r\n", omittingEmptySubsequences: false)
        guard let status = lines.first, status.hasPrefix("HTTP/1.1 101") else {
            throw BenchError("WebSocket handshake \(path): \(lines.first ?? "") (leftover \(String(decoding: leftover.prefix(300), as: UTF8.self)))")
        }
        let expected = WebSocketHandshake.acceptKey(forKey: key) { bytes in
            var digest = [UInt8](repeating: 0, count: 20)
            cmhd_sha1(bytes, bytes.count, &digest)
            return digest
        }
        let accept = lines.dropFirst().first { $0.lowercased().hasPrefix("sec-websocket-accept:") }
            .map { $0.dropFirst("sec-websocket-accept:".count).trimmingCharacters(in: " ") } ?? ""
        guard accept == expected else { throw BenchError("WebSocket handshake \(path): Sec-WebSocket-Accept '\(accept)', expected '\(expected)'") }
    }

    private func findEndOfHead(_ bytes: [UInt8]) -> Int? {
        guard bytes.count >= 4 else { return nil }
        for i in 0...(bytes.count - 4) where bytes[i] == 13 && bytes[i + 1] == 10 && bytes[i + 2] == 13 && bytes[i + 3] == 10 {
            return i
        }
        return nil
    }

    /// xorshift64*: masking keys need not be cryptographic for a benchmark client on loopback, but
    /// each frame gets a fresh one as RFC 6455 §5.3 asks.
    @inline(__always) private func nextRandom() -> UInt64 {
        maskState ^= maskState >> 12
        maskState ^= maskState << 25
        maskState ^= maskState >> 27
        return maskState &* 2_685_821_657_736_338_717
    }

    /// Appends one masked frame carrying `payload` to `out` (send several with one ``sendAll(_:)``).
    func appendFrame(_ opcode: WebSocketOpcode = .text, payload: UnsafeRawBufferPointer, to out: inout [UInt8]) {
        let random = nextRandom()
        let key = (UInt8(truncatingIfNeeded: random), UInt8(truncatingIfNeeded: random >> 8),
                   UInt8(truncatingIfNeeded: random >> 16), UInt8(truncatingIfNeeded: random >> 24))
        WebSocketFrame.appendHeader(to: &out, isFinal: true, opcode: opcode, payloadBytes: payload.count, maskingKey: key)
        let mask = [key.0, key.1, key.2, key.3]
        let start = out.count
        out.append(contentsOf: payload)
        out.withUnsafeMutableBufferPointer { buffer in
            for i in 0..<payload.count { buffer[start + i] ^= mask[i & 3] }
        }
    }

    func appendFrame(_ opcode: WebSocketOpcode = .text, payload: [UInt8], to out: inout [UInt8]) {
        payload.withUnsafeBytes { appendFrame(opcode, payload: $0, to: &out) }
    }

    func sendText(_ text: String) throws {
        var out: [UInt8] = []
        appendFrame(.text, payload: Array(text.utf8), to: &out)
        try sendAll(out)
    }

    func sendAll(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { raw in
            var sent = 0
            while sent < raw.count {
                let n = send(fd, raw.baseAddress! + sent, raw.count - sent, Int32(MSG_NOSIGNAL))
                if n < 0 {
                    if errno == EINTR { continue }
                    throw BenchError("WebSocket send \(path): \(String(cString: strerror(errno)))")
                }
                sent += n
            }
        }
    }

    /// One blocking recv (or the bytes left over from the handshake), then `onMessage` for every whole
    /// data message it completes, with the receive time taken right after recv returned. Pings are
    /// answered; a close frame or a protocol error throws.
    func receive(_ onMessage: (_ payload: [UInt8], _ receivedAt: UInt64) throws -> Void) throws {
        var n = 0
        if !leftover.isEmpty {
            n = leftover.count
            readBuffer.replaceSubrange(0..<n, with: leftover)
            leftover = []
        } else {
            while true {
                n = readBuffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
                if n < 0 && errno == EINTR { continue }
                break
            }
            if n < 0 { throw BenchError("WebSocket recv \(path): \(String(cString: strerror(errno)))") }
            if n == 0 { throw BenchError("WebSocket \(path): the server closed the connection without a close frame") }
        }
        let now = monotonicNanoseconds()
        var frames: [WebSocketFrame] = []
        do {
            try readBuffer.withUnsafeBytes { raw in
                let chunk = UnsafeRawBufferPointer(rebasing: raw[0..<n])
                var index = 0
                while let frame = try parser.next(from: chunk, at: &index, payloadBytesMax: parser.framePayloadBytesMax) {
                    frames.append(frame)
                }
            }
        } catch {
            throw BenchError("WebSocket \(path): \(error)")
        }
        for frame in frames {
            switch frame.opcode {
            case .text, .binary:
                if frame.isFinal { try onMessage(frame.payload, now) } else { fragments = frame.payload }
            case .continuation:
                fragments = (fragments ?? []) + frame.payload
                if frame.isFinal, let whole = fragments {
                    fragments = nil
                    try onMessage(whole, now)
                }
            case .ping:
                var out: [UInt8] = []
                appendFrame(.pong, payload: frame.payload, to: &out)
                try sendAll(out)
            case .pong:
                break
            case .close:
                let close = try? WebSocketClose.decode(frame.payload)
                throw BenchError("WebSocket \(path): server closed with \(close?.code?.description ?? "no code") \(close?.reason ?? "")")
            }
        }
    }

    /// A normal close (1000); waits briefly for the server's close so its session ends cleanly.
    func close() {
        guard fd >= 0 else { return }
        var out: [UInt8] = []
        appendFrame(.close, payload: WebSocketClose(code: .normalClosure).encoded(), to: &out)
        try? sendAll(out)
        shutdown(fd, Int32(SHUT_WR))
        var timeout = timeval(tv_sec: 1, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        while readBuffer.withUnsafeMutableBytes({ recv(fd, $0.baseAddress!, $0.count, 0) }) > 0 {}
        Glibc.close(fd)
        fd = -1
    }
}

extension Substring {
    fileprivate func trimmingCharacters(in set: Character) -> String {
        String(self.drop { $0 == set }.reversed().drop { $0 == set }.reversed())
    }
}

/// Small byte helpers for the stream workloads' JSON (no parser: the client must stay cheap).
enum Bytes {
    @inline(__always) static func hasPrefix(_ bytes: [UInt8], _ prefix: [UInt8]) -> Bool {
        bytes.count >= prefix.count && bytes.withUnsafeBytes { b in prefix.withUnsafeBytes { p in memcmp(b.baseAddress!, p.baseAddress!, p.count) == 0 } }
    }

    /// The integer after the first `needle` (e.g. `"offset":`) at or after `from`, and where it ends.
    static func integer(after needle: [UInt8], in bytes: [UInt8], from: Int = 0) -> (value: Int64, end: Int)? {
        bytes.withUnsafeBytes { h -> (Int64, Int)? in
            needle.withUnsafeBytes { n -> (Int64, Int)? in
                guard from < h.count, let hit = findBytes(h.baseAddress! + from, h.count - from, n.baseAddress!, n.count) else { return nil }
                var i = hit - UnsafeRawPointer(h.baseAddress!) + n.count
                var value: Int64 = 0
                var digits = 0
                while i < h.count, h[i] >= 48, h[i] <= 57 {
                    value = value * 10 + Int64(h[i] - 48)
                    i += 1
                    digits += 1
                }
                return digits > 0 ? (value, i) : nil
            }
        }
    }

    static func decimal(_ value: Int, into out: inout [UInt8]) {
        if value == 0 {
            out.append(48)
            return
        }
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var count = 0
        var v = value
        withUnsafeMutableBytes(of: &digits) { d in
            while v > 0 {
                d[count] = UInt8(48 + v % 10)
                v /= 10
                count += 1
            }
            for i in stride(from: count - 1, through: 0, by: -1) { out.append(d[i]) }
        }
    }
}

import Glibc
import WebSocketCodec

@testable import MicroHTTP

/// A raw-socket WebSocket client for tests: sends the handshake by hand, masks its frames, and reads the
/// server's frames with the codec. Reads time out after 20 s so a broken server fails instead of hanging.
final class WebSocketTestClient {
    let fd: Int32
    private var buffer: [UInt8] = []
    private var parser = WebSocketFrameParser(role: .client, framePayloadBytesMax: 64 << 20)
    private var frames: [WebSocketFrame] = []

    init(port: UInt16, receiveBufferBytes: Int32? = nil) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestClientError(description: "socket: errno \(errno)") }
        var timeout = timeval(tv_sec: 20, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        if var size = receiveBufferBytes {
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else {
            Glibc.close(fd)
            throw TestClientError(description: "connect: errno \(errno)")
        }
    }

    deinit { Glibc.close(fd) }

    /// Makes close() send a reset (SO_LINGER 0) instead of a FIN: the server's next write fails.
    func resetOnClose() {
        var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
    }

    static let sampleKey = "dGhlIHNhbXBsZSBub25jZQ=="
    static let sampleAccept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

    func handshakeBytes(path: String = "/ws", headers: [(String, String)]? = nil) -> [UInt8] {
        let lines =
            headers ?? [
                ("Upgrade", "websocket"), ("Connection", "keep-alive, Upgrade"), ("Sec-WebSocket-Version", "13"),
                ("Sec-WebSocket-Key", Self.sampleKey),
            ]
        var head = "GET \(path) HTTP/1.1\r\nHost: localhost\r\n"
        for (name, value) in lines { head += "\(name): \(value)\r\n" }
        return Array((head + "\r\n").utf8)
    }

    /// Sends the handshake (plus `trailing` bytes in the same write) and reads the response head.
    func handshake(path: String = "/ws", headers: [(String, String)]? = nil, trailing: [UInt8] = []) throws -> TestResponse {
        try sendRaw(handshakeBytes(path: path, headers: headers) + trailing)
        let end = try readUntil([13, 10, 13, 10])
        let head = String(decoding: buffer[..<end], as: UTF8.self)
        buffer.removeFirst(end + 4)
        var lines = head.split(separator: "\r\n").map(String.init)
        let status = Int(lines.removeFirst().split(separator: " ")[1])!
        let parsed: [(name: String, value: String)] = lines.compactMap { line in
            guard let colon = line.firstIndex(of: ":") else { return nil }
            return (String(line[..<colon]), line[line.index(after: colon)...].trimmingSpaces())
        }
        var response = TestResponse(status: status, headers: parsed, body: [])
        if let length = response.header("Content-Length").flatMap({ Int($0) }) {
            while buffer.count < length { guard try receiveMore() else { break } }
            response.body = Array(buffer.prefix(length))
            buffer.removeFirst(min(length, buffer.count))
        }
        return response
    }

    func sendRaw(_ bytes: [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw TestClientError(description: "send: errno \(errno)") }
            sent += n
        }
    }

    func send(_ opcode: WebSocketOpcode, _ payload: [UInt8], isFinal: Bool = true) throws {
        let key = (UInt8.random(in: 0...255), UInt8.random(in: 0...255), UInt8.random(in: 0...255), UInt8.random(in: 0...255))
        try sendRaw(WebSocketFrame(isFinal: isFinal, opcode: opcode, payload: payload).serialized(maskingKey: key))
    }

    func send(text: String) throws { try send(.text, Array(text.utf8)) }

    /// The next frame from the server, or nil at EOF.
    func readFrame() throws -> WebSocketFrame? {
        while frames.isEmpty {
            if !buffer.isEmpty {
                frames += try parser.parse(buffer)
                buffer = []
                continue
            }
            guard try receiveMore() else { return nil }
        }
        return frames.removeFirst()
    }

    /// Reads frames until a close frame (returned decoded) or EOF (nil); data frames are skipped.
    func readUntilClose() throws -> WebSocketClose? {
        while let frame = try readFrame() {
            if frame.opcode == .close { return try WebSocketClose.decode(frame.payload) }
        }
        return nil
    }

    /// True once the server closed the TCP connection (after any remaining frames are drained).
    func readsEOF() throws -> Bool {
        while let _ = try readFrame() {}
        return true
    }

    private func readUntil(_ marker: [UInt8]) throws -> Int {
        while true {
            if buffer.count >= marker.count {
                for start in 0...(buffer.count - marker.count) where buffer[start..<(start + marker.count)].elementsEqual(marker) {
                    return start
                }
            }
            guard try receiveMore() else { throw TestClientError(description: "closed before the response head") }
        }
    }

    private func receiveMore() throws -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65536)
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n < 0 {
            if errno == ECONNRESET { return false }
            throw TestClientError(description: "recv: errno \(errno)")
        }
        if n == 0 { return false }
        buffer += chunk[..<n]
        return true
    }
}

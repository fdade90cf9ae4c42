/// An incremental RFC 6455 frame parser: feed byte chunks of any size (one byte at a time works), get
/// whole frames with their payload unmasked, or a ``WebSocketProtocolError`` naming the close code to send.
///
/// Memory: the parser holds at most one frame header (14 bytes) and one payload, and a payload's length
/// is checked against the limit from the header, before a single payload byte is buffered. So
/// ``bufferedBytes`` never exceeds `14 + payloadBytesMax` whatever the input.
///
/// After an error the parser is dead: every later call throws the same error.
public struct WebSocketFrameParser: Sendable {
    /// A server reads masked frames (clients must mask); a client reads unmasked ones.
    public enum Role: Sendable { case server, client }

    private struct Header {
        var isFinal: Bool
        var opcode: WebSocketOpcode
        var payloadBytes: Int
        var mask: (UInt8, UInt8, UInt8, UInt8)?
    }

    private enum State {
        case header
        case payload(Header)
        case failed(WebSocketProtocolError)
    }

    public let role: Role
    /// Largest frame payload accepted; above it the frame is refused with 1009 before buffering.
    public let framePayloadBytesMax: Int
    private var state = State.header
    private var headerBytes: [UInt8] = []
    private var payload: [UInt8] = []

    public init(role: Role, framePayloadBytesMax: Int) {
        precondition(framePayloadBytesMax >= 0, "negative frame limit")
        self.role = role
        self.framePayloadBytesMax = framePayloadBytesMax
        headerBytes.reserveCapacity(14)
    }

    /// Bytes held for the frame in progress (header and payload so far).
    public var bufferedBytes: Int { headerBytes.count + payload.count }

    /// True when no partial frame is buffered.
    public var isAtFrameBoundary: Bool {
        if case .header = state { return headerBytes.isEmpty }
        return false
    }

    /// Parses every whole frame in `bytes` (plus what was buffered before); keeps a trailing partial frame.
    public mutating func parse(_ bytes: [UInt8]) throws(WebSocketProtocolError) -> [WebSocketFrame] {
        // withUnsafeBytes rethrows untyped errors: carry the typed one out in a Result.
        let result = bytes.withUnsafeBytes { buffer -> Result<[WebSocketFrame], WebSocketProtocolError> in
            var frames: [WebSocketFrame] = []
            var index = 0
            do throws(WebSocketProtocolError) {
                while let frame = try next(from: buffer, at: &index, payloadBytesMax: framePayloadBytesMax) {
                    frames.append(frame)
                }
            } catch {
                return .failure(error)
            }
            return .success(frames)
        }
        return try result.get()
    }

    /// Consumes bytes of `input` from `index` until one frame is complete (returned, `index` just past
    /// it) or the input is used up (nil, the partial frame kept). `payloadBytesMax` can lower the frame
    /// limit for this frame (a message assembler passes what is left of the message budget); a data
    /// frame above it is refused with 1009 from its header.
    public mutating func next(
        from input: UnsafeRawBufferPointer, at index: inout Int, payloadBytesMax: Int
    ) throws(WebSocketProtocolError) -> WebSocketFrame? {
        while true {
            switch state {
            case .failed(let error):
                throw error
            case .header:
                guard index < input.count else { return nil }
                headerBytes.append(input[index])
                index += 1
                do throws(WebSocketProtocolError) {
                    guard let header = try decodeHeader(payloadBytesMax: payloadBytesMax) else { continue }
                    headerBytes.removeAll(keepingCapacity: true)
                    if header.payloadBytes == 0 {
                        return WebSocketFrame(isFinal: header.isFinal, opcode: header.opcode, payload: [])
                    }
                    payload = []
                    payload.reserveCapacity(header.payloadBytes)  // bounded: checked in decodeHeader
                    state = .payload(header)
                } catch {
                    state = .failed(error)
                    headerBytes = []
                    throw error
                }
            case .payload(let header):
                let wanted = header.payloadBytes - payload.count
                let available = input.count - index
                let count = min(wanted, available)
                if count > 0 {
                    if let mask = header.mask {
                        let key = [mask.0, mask.1, mask.2, mask.3]
                        var position = payload.count
                        for offset in 0..<count {
                            payload.append(input[index + offset] ^ key[position & 3])
                            position += 1
                        }
                    } else {
                        payload.append(contentsOf: UnsafeRawBufferPointer(rebasing: input[index..<(index + count)]))
                    }
                    index += count
                }
                guard payload.count == header.payloadBytes else { return nil }
                state = .header
                let frame = WebSocketFrame(isFinal: header.isFinal, opcode: header.opcode, payload: payload)
                payload = []
                return frame
            }
        }
    }

    /// The header if `headerBytes` holds all of it, nil if more bytes are needed. Validates each field as
    /// soon as it is known, so garbage is refused after at most two bytes.
    private func decodeHeader(payloadBytesMax: Int) throws(WebSocketProtocolError) -> Header? {
        let first = headerBytes[0]
        if headerBytes.count == 1 {
            guard first & 0x70 == 0 else { throw WebSocketProtocolError(.protocolError, "reserved bits set") }
            guard let opcode = WebSocketOpcode(rawValue: first & 0x0F) else {
                throw WebSocketProtocolError(.protocolError, "reserved opcode \(first & 0x0F)")
            }
            if opcode.isControl && first & 0x80 == 0 {
                throw WebSocketProtocolError(.protocolError, "fragmented control frame")
            }
            return nil
        }
        let opcode = WebSocketOpcode(rawValue: first & 0x0F)!  // checked at byte 1
        let second = headerBytes[1]
        let isMasked = second & 0x80 != 0
        let shortLength = Int(second & 0x7F)
        if headerBytes.count == 2 {
            switch role {
            case .server where !isMasked: throw WebSocketProtocolError(.protocolError, "unmasked client frame")
            case .client where isMasked: throw WebSocketProtocolError(.protocolError, "masked server frame")
            default: break
            }
            if opcode.isControl && shortLength > WebSocketFrame.controlPayloadBytesMax {
                throw WebSocketProtocolError(.protocolError, "control frame longer than 125 bytes")
            }
        }
        let lengthBytes = shortLength == 126 ? 2 : shortLength == 127 ? 8 : 0
        let headerLength = 2 + lengthBytes + (isMasked ? 4 : 0)
        guard headerBytes.count == headerLength else { return nil }

        var length: UInt64 = UInt64(shortLength)
        if lengthBytes > 0 {
            length = 0
            for byte in headerBytes[2..<(2 + lengthBytes)] { length = length << 8 | UInt64(byte) }
            if lengthBytes == 8 && length >> 63 != 0 {
                throw WebSocketProtocolError(.protocolError, "64-bit length with the top bit set")
            }
            let minimum: UInt64 = lengthBytes == 2 ? 126 : 65536
            guard length >= minimum else { throw WebSocketProtocolError(.protocolError, "non-minimal length encoding") }
        }
        // Control frames are already capped at 125; a message budget applies to data frames only.
        let limit = min(framePayloadBytesMax, max(0, payloadBytesMax))
        guard opcode.isControl || length <= UInt64(limit) else {
            throw WebSocketProtocolError(.messageTooBig, "frame of \(length) bytes above the limit of \(limit)")
        }
        var mask: (UInt8, UInt8, UInt8, UInt8)?
        if isMasked {
            let at = 2 + lengthBytes
            mask = (headerBytes[at], headerBytes[at + 1], headerBytes[at + 2], headerBytes[at + 3])
        }
        return Header(isFinal: first & 0x80 != 0, opcode: opcode, payloadBytes: Int(length), mask: mask)
    }
}

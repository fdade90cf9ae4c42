/// A WebSocket frame opcode (RFC 6455 §5.2). Values 3–7 and 11–15 are reserved and rejected by the parser.
public enum WebSocketOpcode: UInt8, Sendable, Equatable {
    case continuation = 0x0
    case text = 0x1
    case binary = 0x2
    case close = 0x8
    case ping = 0x9
    case pong = 0xA

    /// Control frames (close, ping, pong) may not be fragmented and carry at most 125 payload bytes.
    public var isControl: Bool { rawValue & 0x8 != 0 }
}

/// One frame, payload already unmasked.
public struct WebSocketFrame: Sendable, Equatable {
    public var isFinal: Bool
    public var opcode: WebSocketOpcode
    public var payload: [UInt8]

    public init(isFinal: Bool = true, opcode: WebSocketOpcode, payload: [UInt8]) {
        self.isFinal = isFinal
        self.opcode = opcode
        self.payload = payload
    }

    /// Largest payload of a control frame (RFC 6455 §5.5).
    public static let controlPayloadBytesMax = 125

    /// The frame on the wire. A server sends unmasked frames (`maskingKey` nil); a client must mask every
    /// frame with a fresh key (RFC 6455 §5.3).
    public func serialized(maskingKey: (UInt8, UInt8, UInt8, UInt8)? = nil) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(payload.count + 14)
        WebSocketFrame.appendHeader(
            to: &out, isFinal: isFinal, opcode: opcode, payloadBytes: payload.count, maskingKey: maskingKey)
        if let key = maskingKey {
            let mask = [key.0, key.1, key.2, key.3]
            for (index, byte) in payload.enumerated() { out.append(byte ^ mask[index & 3]) }
        } else {
            out += payload
        }
        return out
    }

    /// Appends just the header (2–14 bytes) with the minimal length encoding.
    public static func appendHeader(
        to out: inout [UInt8], isFinal: Bool, opcode: WebSocketOpcode, payloadBytes: Int,
        maskingKey: (UInt8, UInt8, UInt8, UInt8)? = nil
    ) {
        precondition(payloadBytes >= 0, "negative payload length")
        precondition(!opcode.isControl || (isFinal && payloadBytes <= controlPayloadBytesMax), "invalid control frame")
        out.append((isFinal ? 0x80 : 0) | opcode.rawValue)
        let maskBit: UInt8 = maskingKey == nil ? 0 : 0x80
        if payloadBytes < 126 {
            out.append(maskBit | UInt8(payloadBytes))
        } else if payloadBytes <= 0xFFFF {
            out.append(maskBit | 126)
            out.append(UInt8(payloadBytes >> 8))
            out.append(UInt8(payloadBytes & 0xFF))
        } else {
            out.append(maskBit | 127)
            let length = UInt64(payloadBytes)
            for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8((length >> UInt64(shift)) & 0xFF)) }
        }
        if let key = maskingKey { out += [key.0, key.1, key.2, key.3] }
    }
}

/// Why a connection must be failed (RFC 6455 §7.1.7): the close code to send and a short reason.
public struct WebSocketProtocolError: Error, Sendable, Equatable, CustomStringConvertible {
    public var code: WebSocketCloseCode
    public var reason: String

    public init(_ code: WebSocketCloseCode, _ reason: String) {
        self.code = code
        self.reason = reason
    }

    public var description: String { "WebSocket \(code.rawValue): \(reason)" }
}

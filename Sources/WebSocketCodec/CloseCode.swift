/// A close status code (RFC 6455 §7.4). Any UInt16 can be represented; ``isValidOnWire`` says whether a
/// peer may send it.
public struct WebSocketCloseCode: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let normalClosure = WebSocketCloseCode(rawValue: 1000)
    public static let goingAway = WebSocketCloseCode(rawValue: 1001)
    public static let protocolError = WebSocketCloseCode(rawValue: 1002)
    public static let unsupportedData = WebSocketCloseCode(rawValue: 1003)
    /// Local only: the close frame carried no code. Never sent.
    public static let noStatusReceived = WebSocketCloseCode(rawValue: 1005)
    /// Local only: the connection dropped without a close frame. Never sent.
    public static let abnormalClosure = WebSocketCloseCode(rawValue: 1006)
    public static let invalidPayloadData = WebSocketCloseCode(rawValue: 1007)
    public static let policyViolation = WebSocketCloseCode(rawValue: 1008)
    public static let messageTooBig = WebSocketCloseCode(rawValue: 1009)
    public static let mandatoryExtension = WebSocketCloseCode(rawValue: 1010)
    public static let internalError = WebSocketCloseCode(rawValue: 1011)
    public static let serviceRestart = WebSocketCloseCode(rawValue: 1012)
    public static let tryAgainLater = WebSocketCloseCode(rawValue: 1013)

    /// Codes a peer may put in a close frame: the defined 1000–1003, 1007–1014 (IANA registry), and the
    /// ranges for libraries (3000–3999) and applications (4000–4999). 1004–1006 and 1015 are reserved.
    public var isValidOnWire: Bool {
        switch rawValue {
        case 1000...1003, 1007...1014, 3000...4999: return true
        default: return false
        }
    }

    public var description: String { String(rawValue) }
}

/// The payload of a close frame: an optional code and a UTF-8 reason (RFC 6455 §5.5.1).
public struct WebSocketClose: Sendable, Equatable {
    /// nil when the frame had an empty payload (reported locally as 1005).
    public var code: WebSocketCloseCode?
    public var reason: String

    public init(code: WebSocketCloseCode?, reason: String = "") {
        self.code = code
        self.reason = reason
    }

    /// Bytes of reason that fit in a control frame beside the code.
    public static let reasonBytesMax = WebSocketFrame.controlPayloadBytesMax - 2

    /// Validates a received close payload: empty, or a valid code followed by UTF-8.
    public static func decode(_ payload: [UInt8]) throws(WebSocketProtocolError) -> WebSocketClose {
        if payload.isEmpty { return WebSocketClose(code: nil) }
        guard payload.count >= 2 else { throw WebSocketProtocolError(.protocolError, "close payload of 1 byte") }
        let code = WebSocketCloseCode(rawValue: UInt16(payload[0]) << 8 | UInt16(payload[1]))
        guard code.isValidOnWire else {
            throw WebSocketProtocolError(.protocolError, "invalid close code \(code.rawValue)")
        }
        guard let reason = UTF8Validation.string(payload[2...]) else {
            throw WebSocketProtocolError(.invalidPayloadData, "close reason is not UTF-8")
        }
        return WebSocketClose(code: code, reason: reason)
    }

    /// The payload to send: the code and the reason cut (on a character boundary) to fit 123 bytes. A nil
    /// code gives an empty payload.
    public func encoded() -> [UInt8] {
        guard let code else { return [] }
        var out: [UInt8] = [UInt8(code.rawValue >> 8), UInt8(code.rawValue & 0xFF)]
        var used = 0
        for character in reason {
            let bytes = Array(String(character).utf8)
            if used + bytes.count > WebSocketClose.reasonBytesMax { break }
            out += bytes
            used += bytes.count
        }
        return out
    }
}

enum UTF8Validation {
    /// The string if `bytes` is well-formed UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF).
    static func string<C: Collection<UInt8>>(_ bytes: C) -> String? {
        String(validating: bytes, as: UTF8.self)
    }
}

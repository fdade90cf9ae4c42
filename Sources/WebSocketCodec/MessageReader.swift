/// What a WebSocket peer said, after reassembly.
public enum WebSocketEvent: Sendable, Equatable {
    /// A whole text message (validated UTF-8).
    case text(String)
    /// A whole binary message.
    case binary([UInt8])
    /// A ping; the other side must answer with a pong carrying the same payload.
    case ping([UInt8])
    case pong([UInt8])
    /// A validated close frame. Nothing follows it.
    case close(WebSocketClose)
}

/// Frames in, messages out (RFC 6455 §5.4): reassembles fragments, lets control frames interleave, and
/// enforces the continuation rules and the message size limit.
///
/// The size limit is checked from each frame's header, before its payload is buffered: a message above
/// `messageBytesMax` fails with 1009 while at most `messageBytesMax + 14` bytes are held. Text is
/// validated as UTF-8 when the message completes (1007). After an error or a close frame the reader is
/// dead; later input is ignored (after close) or throws again (after an error).
public struct WebSocketMessageReader: Sendable {
    public let messageBytesMax: Int
    private var parser: WebSocketFrameParser
    private var fragmentOpcode: WebSocketOpcode?
    private var fragments: [UInt8] = []
    private var failure: WebSocketProtocolError?
    public private(set) var isClosed = false

    /// - Parameters:
    ///   - role: `.server` when reading a client (frames must be masked).
    ///   - messageBytesMax: largest reassembled message (1009 above it).
    ///   - framePayloadBytesMax: largest single frame (defaults to `messageBytesMax`).
    public init(role: WebSocketFrameParser.Role, messageBytesMax: Int, framePayloadBytesMax: Int? = nil) {
        precondition(messageBytesMax >= 0, "negative message limit")
        self.messageBytesMax = messageBytesMax
        let frameMax = max(framePayloadBytesMax ?? messageBytesMax, WebSocketFrame.controlPayloadBytesMax)
        parser = WebSocketFrameParser(role: role, framePayloadBytesMax: frameMax)
    }

    /// Bytes held: a partial frame plus the fragments of an unfinished message.
    public var bufferedBytes: Int { parser.bufferedBytes + fragments.count }

    /// Feeds a chunk; returns the events it completes, in order.
    public mutating func read(_ bytes: [UInt8]) throws(WebSocketProtocolError) -> [WebSocketEvent] {
        // withUnsafeBytes rethrows untyped errors: carry the typed one out in a Result.
        let result = bytes.withUnsafeBytes { buffer -> Result<[WebSocketEvent], WebSocketProtocolError> in
            do throws(WebSocketProtocolError) { return .success(try read(buffer)) } catch { return .failure(error) }
        }
        return try result.get()
    }

    /// Feeds a chunk; returns the events it completes, in order. The events are bounded by the chunk: each
    /// costs at least two input bytes.
    public mutating func read(_ buffer: UnsafeRawBufferPointer) throws(WebSocketProtocolError) -> [WebSocketEvent] {
        var events: [WebSocketEvent] = []
        var index = 0
        while !isClosed {
            if let failure { throw failure }
            do {
                let budget = messageBytesMax - fragments.count
                guard let frame = try parser.next(from: buffer, at: &index, payloadBytesMax: budget) else { break }
                if let event = try accept(frame) { events.append(event) }
            } catch {
                failure = error
                fragments = []
                throw error
            }
        }
        return events
    }

    private mutating func accept(_ frame: WebSocketFrame) throws(WebSocketProtocolError) -> WebSocketEvent? {
        switch frame.opcode {
        case .ping: return .ping(frame.payload)
        case .pong: return .pong(frame.payload)
        case .close:
            isClosed = true
            fragments = []
            return .close(try WebSocketClose.decode(frame.payload))
        case .text, .binary:
            guard fragmentOpcode == nil else {
                throw WebSocketProtocolError(.protocolError, "new message before the previous one finished")
            }
            if frame.isFinal { return try message(frame.opcode, frame.payload) }
            fragmentOpcode = frame.opcode
            fragments = frame.payload
            return nil
        case .continuation:
            guard let opcode = fragmentOpcode else {
                throw WebSocketProtocolError(.protocolError, "continuation frame without a message")
            }
            fragments += frame.payload  // within budget: the parser checked it against what was left
            guard frame.isFinal else { return nil }
            fragmentOpcode = nil
            let whole = fragments
            fragments = []
            return try message(opcode, whole)
        }
    }

    private func message(_ opcode: WebSocketOpcode, _ payload: [UInt8]) throws(WebSocketProtocolError) -> WebSocketEvent {
        if opcode == .binary { return .binary(payload) }
        guard let text = UTF8Validation.string(payload) else {
            throw WebSocketProtocolError(.invalidPayloadData, "text message is not UTF-8")
        }
        return .text(text)
    }
}

// Re-exported: WebSocketCloseCode and friends are part of this module's public WebSocket API, so users need
// not (and, by the layering rule, may not) import the codec themselves.
import WebSocketCodec

/// Limits of one WebSocket (set per upgrade). Every buffer is bounded; a peer that exceeds one is closed.
public struct WebSocketLimits: Sendable {
    /// Largest message accepted from the client; above it the socket is closed with 1009 (checked from
    /// each frame header, before buffering).
    public var messageBytesMax: Int = 1 << 20
    /// Largest single frame from the client; nil = ``messageBytesMax``.
    public var framePayloadBytesMax: Int? = nil
    /// Bytes queued for the client and not yet taken by the kernel. A send that would go past it closes the
    /// socket with 1008 (the client stopped reading) instead of growing memory.
    public var sendBufferBytesMax: Int = 4 << 20
    /// Idle time after which the server pings the client.
    public var pingIntervalSeconds: Double = 30
    /// How long a ping may go unanswered (no frame at all received) before the socket is dropped.
    public var pongTimeoutSeconds: Double = 30
    /// How long to wait for the client's close frame (or for the send buffer to drain) after the server
    /// closed, before dropping the connection.
    public var closeTimeoutSeconds: Double = 5

    public init() {}
}

/// A whole message from the client.
public enum WebSocketMessage: Sendable, Equatable {
    case text(String)
    case binary([UInt8])
}

/// The application's side of one WebSocket. All methods are called on the server's single WebSocket event
/// loop thread, one at a time per socket, in order: ``opened(_:)`` once, ``received(_:on:)`` per message,
/// ``closed(_:code:reason:)`` once. They must not block (every socket shares the thread); hand long work
/// elsewhere and answer later through the ``WebSocketConnection``, which is usable from any thread.
public protocol WebSocketHandler: Sendable {
    /// The socket is live; sending is possible from now on.
    func opened(_ connection: WebSocketConnection)
    func received(_ message: WebSocketMessage, on connection: WebSocketConnection)
    /// The socket is gone. `code` is the client's close code, the one the server sent (1009, 1002, 1008,
    /// 1001 at shutdown...), 1005 for a close frame without code, or 1006 when the connection dropped.
    func closed(_ connection: WebSocketConnection, code: WebSocketCloseCode, reason: String)
}

extension WebSocketHandler {
    public func opened(_ connection: WebSocketConnection) {}
}

/// What ``Responder/upgradeToWebSocket(_:protocol:headers:limits:handler:)`` did.
public enum WebSocketUpgradeOutcome: Sendable, Equatable {
    /// 101 is queued; the handler's ``WebSocketHandler/opened(_:)`` follows once libmicrohttpd hands over
    /// the socket.
    case upgrading
    /// Not a valid WebSocket handshake: answered with this status (400, or 426 for a wrong version).
    case refused(status: Int)
    /// Too many WebSockets open (``HTTPServerConfiguration/webSocketsMax``) or the server is stopping: 503.
    case unavailable
}

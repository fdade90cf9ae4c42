import CMicroHTTPD
import Glibc
import Synchronization
import WebSocketCodec

/// An accepted handshake waiting for libmicrohttpd to hand over the socket (after the 101 is sent).
/// Retained by the upgrade response's `cls` and released in the upgrade callback.
final class WebSocketUpgrade: Sendable {
    let acceptKey: String
    let subprotocol: String?
    let headers: [(name: String, value: String)]
    let limits: WebSocketLimits
    let handler: any WebSocketHandler
    let request: HTTPRequest
    /// nil for a ``ResponseRecorder`` (no socket ever comes).
    let core: ServerCore?
    /// Set once by whoever settles the socket slot and the `cls` retain: the upgrade callback (the socket
    /// arrived), the request-completed callback (the client left before the upgrade; libmicrohttpd calls
    /// it after the upgrade callback otherwise), or a failed response creation.
    let isSettled = Atomic<Bool>(false)
    /// The upgrade response was created (it holds a retain on this object until the upgrade callback).
    let isQueued = Atomic<Bool>(false)

    init(
        acceptKey: String, subprotocol: String?, headers: [(name: String, value: String)], limits: WebSocketLimits,
        handler: any WebSocketHandler, request: HTTPRequest, core: ServerCore?
    ) {
        self.acceptKey = acceptKey
        self.subprotocol = subprotocol
        self.headers = headers
        self.limits = limits
        self.handler = handler
        self.request = request
        self.core = core
    }

    /// The handshake's validation (RFC 6455 §4.2.1): nil if acceptable, else the status and message.
    static func validate(_ request: HTTPRequest) -> (status: Int, message: String, headers: [(name: String, value: String)])? {
        func tokens(_ name: String) -> [String] {
            request.headers.filter { PercentDecoding.asciiCaseInsensitiveEquals($0.name, name) }
                .flatMap { $0.value.split(separator: ",") }
                .map { String($0.drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed()) }
        }
        guard request.method == "GET" else { return (400, "a WebSocket handshake must be a GET request", []) }
        guard tokens("Upgrade").contains(where: { PercentDecoding.asciiCaseInsensitiveEquals($0, "websocket") }) else {
            return (426, "this endpoint needs a WebSocket upgrade (Upgrade: websocket)", [("Upgrade", "websocket")])
        }
        guard tokens("Connection").contains(where: { PercentDecoding.asciiCaseInsensitiveEquals($0, "upgrade") }) else {
            return (400, "WebSocket handshake without Connection: Upgrade", [])
        }
        guard request.header("Sec-WebSocket-Version") == "13" else {
            return (426, "unsupported WebSocket version (13 is supported)", [("Sec-WebSocket-Version", "13")])
        }
        guard let key = request.header("Sec-WebSocket-Key"), WebSocketHandshake.isValidKey(key) else {
            return (400, "Sec-WebSocket-Key must be base64 of 16 bytes", [])
        }
        return nil
    }

    static func acceptKey(for key: String) -> String {
        WebSocketHandshake.acceptKey(forKey: key) { bytes in
            var digest = [UInt8](repeating: 0, count: 20)
            cmhd_sha1(bytes, bytes.count, &digest)
            return digest
        }
    }

    /// libmicrohttpd's upgrade callback: the 101 is sent, the socket is ours until MHD_upgrade_action(CLOSE).
    static let upgraded: MHD_UpgradeHandler = { cls, _, _, extraIn, extraInSize, socket, handle in
        let upgrade = Unmanaged<WebSocketUpgrade>.fromOpaque(cls!).takeRetainedValue()
        let core = upgrade.core!
        precondition(!upgrade.isSettled.exchange(true, ordering: .acquiringAndReleasing), "upgrade after request completion")
        let loop = core.webSocketLoop
        // libmicrohttpd hands the socket over with Nagle on (it clears TCP_NODELAY after the 101). A
        // WebSocket writes small frames whenever it has them; with Nagle each one after the first waits
        // for the client's (delayed, up to 40 ms) ACK of the previous one.
        var noDelay: Int32 = 1
        _ = setsockopt(socket, Int32(IPPROTO_TCP), TCP_NODELAY, &noDelay, socklen_t(MemoryLayout<Int32>.size))
        let extra = extraInSize > 0 ? Array(UnsafeRawBufferPointer(start: extraIn, count: extraInSize)) : []
        let connection = WebSocketConnection(
            fd: socket, upgradeHandle: UpgradeHandle(pointer: handle!), loop: loop, limits: upgrade.limits,
            request: upgrade.request, subprotocol: upgrade.subprotocol)
        let registration = WebSocketLoop.Registration(connection: connection, handler: upgrade.handler, extraInput: extra)
        if !loop.register(registration) {
            // Stopping: nobody will serve it. Drop it (the client sees the connection close).
            _ = cmhd_upgrade_close(handle)
            loop.releaseReservation()
            upgrade.handler.closed(connection, code: .goingAway, reason: "server shutting down")
        }
    }
}

extension Responder {
    /// Answers a WebSocket handshake: validates it (GET, `Upgrade: websocket`, `Connection: Upgrade`,
    /// `Sec-WebSocket-Version: 13`, a key of 16 base64 bytes; otherwise 400 or 426 rendered by
    /// ``HTTPServerConfiguration/errorBody``), refuses with 503 when
    /// ``HTTPServerConfiguration/webSocketsMax`` sockets are open or the server is stopping, else answers
    /// 101 and hands the socket to the server's WebSocket event loop, which drives `handler`.
    ///
    /// Once-only like ``respond(_:)``. `subprotocol`, if given, is echoed in `Sec-WebSocket-Protocol` (the
    /// application picks it from the client's offer); `headers` are added to the 101.
    @discardableResult
    public func upgradeToWebSocket(
        _ request: HTTPRequest, subprotocol: String? = nil, headers: [(name: String, value: String)] = [],
        limits: WebSocketLimits = WebSocketLimits(), handler: any WebSocketHandler
    ) -> WebSocketUpgradeOutcome {
        precondition(limits.messageBytesMax >= 0 && limits.sendBufferBytesMax > 0, "invalid WebSocket limits")
        let core: ServerCore?
        switch target {
        case .connection(let context): core = context.core
        case .recorder: core = nil
        }
        func refuse(_ status: Int, _ message: String, _ extra: [(name: String, value: String)]) {
            let rendered = core?.configuration.errorBody(status, message) ?? (contentType: "text/plain; charset=utf-8", body: Array(message.utf8))
            respond(HTTPResponse(status: status, headers: [(name: "Content-Type", value: rendered.contentType)] + extra, body: rendered.body))
        }
        if let problem = WebSocketUpgrade.validate(request) {
            refuse(problem.status, problem.message, problem.headers)
            return .refused(status: problem.status)
        }
        if let core, !core.webSocketLoop.reserve(maximum: core.configuration.webSocketsMax) {
            refuse(503, "too many WebSockets open (limit \(core.configuration.webSocketsMax))", [("Retry-After", "1")])
            return .unavailable
        }
        let upgrade = WebSocketUpgrade(
            acceptKey: WebSocketUpgrade.acceptKey(for: request.header("Sec-WebSocket-Key")!), subprotocol: subprotocol,
            headers: headers, limits: limits, handler: handler, request: request, core: core)
        switch target {
        case .connection(let context):
            context.upgrade.withLock { $0 = upgrade }
            if !context.respond(.upgrade(upgrade), fromServer: false) {
                // Already answered (or the client left): nothing was queued; settle the slot once.
                if !upgrade.isSettled.exchange(true, ordering: .acquiringAndReleasing) { core?.webSocketLoop.releaseReservation() }
                return .unavailable
            }
        case .recorder(let recorder):
            recorder.record(.upgrade(upgrade))
        }
        return .upgrading
    }
}

extension WebSocketUpgrade {
    /// The request ended (libmicrohttpd's completed callback). If the socket never arrived (the client left
    /// before the 101 went out), free its slot and the retain the upgrade response held.
    func requestCompleted() {
        guard core != nil, !isSettled.exchange(true, ordering: .acquiringAndReleasing) else { return }
        core!.webSocketLoop.releaseReservation()
        if isQueued.load(ordering: .acquiring) { Unmanaged.passUnretained(self).release() }
    }
}

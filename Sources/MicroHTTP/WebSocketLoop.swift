import CMicroHTTPD
import Glibc
import Synchronization
import WebSocketCodec

/// The one event loop (an epoll thread) serving every upgraded WebSocket of a server: reads, feeds the
/// codec, calls the handlers, answers pings, pings idle clients, flushes send buffers when sockets become
/// writable, and enforces the close timeouts. Started lazily by the first upgrade; stopped by
/// ``HTTPServer/stop(timeoutSeconds:)`` after every socket is closed.
///
/// Threading: `sockets` and everything in ``LoopSocket`` belong to the loop thread alone. Other threads
/// talk to it through `shared` (under its Mutex) and the eventfd.
final class WebSocketLoop: @unchecked Sendable {  // mutable state: `sockets` (loop thread only), `shared` (Mutex)
    struct Registration {
        let connection: WebSocketConnection
        let handler: any WebSocketHandler
        let extraInput: [UInt8]
    }

    struct Shared {
        var isStarted = false
        var isStopping = false
        var exitRequested = false
        var pending: [Registration] = []
        /// Every live connection, for stop(); removed at teardown.
        var live: [ObjectIdentifier: WebSocketConnection] = [:]
        var thread: pthread_t?
    }

    /// Loop-thread state of one socket.
    final class LoopSocket {
        let connection: WebSocketConnection
        let handler: any WebSocketHandler
        var reader: WebSocketMessageReader
        var lastHeardAt: Double
        var pingSentAt: Double?
        /// The peer's close, once received.
        var peerClose: WebSocketClose?
        /// Code to report when the connection fails locally (protocol error, timeout, drop).
        var failure: (code: WebSocketCloseCode, reason: String)?

        init(_ registration: Registration, now: Double) {
            connection = registration.connection
            handler = registration.handler
            let limits = registration.connection.limits
            reader = WebSocketMessageReader(
                role: .server, messageBytesMax: limits.messageBytesMax, framePayloadBytesMax: limits.framePayloadBytesMax)
            lastHeardAt = now
        }
    }

    let epollFD: Int32
    let wakeFD: Int32
    let log: @Sendable (String) -> Void
    /// Sockets open or being opened; checked against the server's limit at handshake time.
    let reservedCount = Atomic<Int>(0)
    let shared = Mutex(Shared())
    private var sockets: [Int32: LoopSocket] = [:]  // loop thread only
    private var readBuffer = [UInt8](repeating: 0, count: 64 * 1024)  // loop thread only
    /// Timers (pings, close timeouts) are checked at this granularity.
    static let tickMilliseconds: Int32 = 50

    init(log: @escaping @Sendable (String) -> Void) {
        epollFD = cmhd_epoll_create()
        wakeFD = cmhd_eventfd_create()
        precondition(epollFD >= 0 && wakeFD >= 0, "cannot create epoll/eventfd: errno \(errno)")
        self.log = log
        _ = cmhd_epoll_control(epollFD, 1, wakeFD, 0)
    }

    deinit {
        Glibc.close(epollFD)
        Glibc.close(wakeFD)
    }

    static func now() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }

    // MARK: From other threads

    /// Reserves a socket slot at handshake time; false when `maximum` are open or the loop is stopping.
    func reserve(maximum: Int) -> Bool {
        if shared.withLock({ $0.isStopping }) { return false }
        while true {
            let current = reservedCount.load(ordering: .relaxed)
            if current >= maximum { return false }
            if reservedCount.compareExchange(expected: current, desired: current + 1, ordering: .relaxed).exchanged {
                return true
            }
        }
    }

    func releaseReservation() { reservedCount.subtract(1, ordering: .relaxed) }

    /// Hands an upgraded socket to the loop (from libmicrohttpd's upgrade callback). False when stopping:
    /// the caller closes the socket itself.
    func register(_ registration: Registration) -> Bool {
        let startThread: Bool? = shared.withLock { shared in
            guard !shared.isStopping else { return nil }
            shared.pending.append(registration)
            shared.live[ObjectIdentifier(registration.connection)] = registration.connection
            defer { shared.isStarted = true }
            return !shared.isStarted
        }
        guard let startThread else { return false }
        if startThread { start() }
        cmhd_eventfd_signal(wakeFD)
        return true
    }

    var liveCount: Int { shared.withLock { $0.live.count } }

    private func start() {
        var thread = pthread_t()
        let context = Unmanaged.passRetained(self).toOpaque()
        let result = pthread_create(
            &thread, nil,
            { context in
                let loop = Unmanaged<WebSocketLoop>.fromOpaque(context!).takeRetainedValue()
                loop.run()
                return nil
            }, context)
        precondition(result == 0, "cannot start the WebSocket loop thread: \(result)")
        shared.withLock { $0.thread = thread }
    }

    /// Closes every socket with 1001, waits up to `graceSeconds` for the closing handshakes, drops the rest,
    /// and ends the thread. After it returns no upgraded socket is open (the precondition for stopping the
    /// daemon) and new upgrades are refused.
    func shutdown(graceSeconds: Double) {
        let live = shared.withLock { shared in
            shared.isStopping = true
            return Array(shared.live.values)
        }
        for connection in live { connection.close(code: .goingAway, reason: "server shutting down") }
        let deadline = Self.now() + graceSeconds
        while liveCount > 0 && Self.now() < deadline { usleep(2_000) }
        let thread: pthread_t? = shared.withLock { shared in
            shared.exitRequested = true
            return shared.thread
        }
        cmhd_eventfd_signal(wakeFD)
        if let thread { pthread_join(thread, nil) }
    }

    // MARK: The loop thread

    private func run() {
        var fds = [Int32](repeating: 0, count: 64)
        var flags = [UInt32](repeating: 0, count: 64)
        var nextTick = Self.now()
        while true {
            let count = cmhd_epoll_wait(epollFD, &fds, &flags, 64, Self.tickMilliseconds)
            if count < 0 { log("MicroHTTP: WebSocket epoll_wait failed: errno \(errno)") }
            for index in 0..<max(0, Int(count)) {
                let fd = fds[index]
                if fd == wakeFD {
                    cmhd_eventfd_drain(wakeFD)
                    continue
                }
                guard let socket = sockets[fd] else { continue }
                if flags[index] & 2 != 0 { writable(socket) }
                if flags[index] & 1 != 0, sockets[fd] === socket { readable(socket) }
            }
            let (registrations, exit) = shared.withLock { shared in
                defer { shared.pending = [] }
                return (shared.pending, shared.exitRequested)
            }
            for registration in registrations { open(registration) }
            if exit {
                for socket in Array(sockets.values) {
                    if socket.failure == nil { socket.failure = (.goingAway, "server shutting down") }
                    tearDown(socket)
                }
                return
            }
            let now = Self.now()
            if now >= nextTick {
                nextTick = now + Double(Self.tickMilliseconds) / 1000
                for socket in Array(sockets.values) { checkTimers(socket, now: now) }
            }
        }
    }

    private func open(_ registration: Registration) {
        let socket = LoopSocket(registration, now: Self.now())
        precondition(sockets[registration.connection.fd] == nil, "fd \(registration.connection.fd) registered twice")
        sockets[registration.connection.fd] = socket
        guard cmhd_epoll_control(epollFD, 1, registration.connection.fd, 0) == 0 else {
            socket.failure = (.internalError, "epoll_ctl failed: errno \(errno)")
            tearDown(socket)
            return
        }
        socket.handler.opened(socket.connection)
        if shared.withLock({ $0.isStopping }) {
            socket.connection.close(code: .goingAway, reason: "server shutting down")
        }
        // Bytes the client sent right behind the handshake (libmicrohttpd read them already).
        if !registration.extraInput.isEmpty {
            registration.extraInput.withUnsafeBytes { consume(socket, $0) }
        }
        afterInput(socket)
    }

    private func readable(_ socket: LoopSocket) {
        // A bounded number of reads per wakeup keeps one busy client from starving the others.
        for _ in 0..<8 {
            let received = readBuffer.withUnsafeMutableBytes {
                cmhd_recv_nonblocking(socket.connection.fd, $0.baseAddress, $0.count)
            }
            if received > 0 {
                readBuffer.withUnsafeBytes { consume(socket, UnsafeRawBufferPointer(rebasing: $0[..<received])) }
                if sockets[socket.connection.fd] !== socket { return }
                continue
            }
            if received < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { break }
            if received < 0 && errno == EINTR { continue }
            // EOF or a reset: the peer is gone.
            if socket.failure == nil && socket.peerClose == nil {
                socket.failure = (.abnormalClosure, received == 0 ? "connection closed without a close frame" : "connection reset")
            }
            tearDown(socket)
            return
        }
        afterInput(socket)
    }

    private func writable(_ socket: LoopSocket) {
        let drained = socket.connection.state.withLock { socket.connection.flushLocked(&$0) }
        drained?()
        afterInput(socket)
    }

    /// Tears down once a close is complete: after our close frame is flushed when the peer closed (or the
    /// protocol failed), or once the peer answered our close.
    private func afterInput(_ socket: LoopSocket) {
        guard sockets[socket.connection.fd] === socket else { return }
        let done = socket.connection.state.withLock { state -> Bool in
            switch state.phase {
            case .closingAfterFlush: return state.pendingBytes == 0
            case .closing: return socket.peerClose != nil
            case .open, .tornDown: return false
            }
        }
        if done { tearDown(socket) }
    }

    private func consume(_ socket: LoopSocket, _ bytes: UnsafeRawBufferPointer) {
        let connection = socket.connection
        socket.lastHeardAt = Self.now()
        socket.pingSentAt = nil  // any traffic proves the client alive
        let events: [WebSocketEvent]
        do {
            events = try socket.reader.read(bytes)
        } catch {
            socket.failure = (error.code, error.reason)
            let drained = connection.state.withLock { state -> (@Sendable () -> Void)? in
                guard state.phase == .open else { return nil }
                connection.queueControlLocked(&state, .close, WebSocketClose(code: error.code, reason: error.reason).encoded())
                state.phase = .closingAfterFlush(since: Self.now())
                return connection.flushLocked(&state)
            }
            drained?()
            // Fail the connection (RFC 6455 §7.1.7): no more reading; teardown once the close is flushed.
            if case .closing = connection.state.withLock({ $0.phase }) { tearDown(socket) }
            return
        }
        for event in events {
            switch event {
            case .text(let text):
                if !connection.isClosed { socket.handler.received(.text(text), on: connection) }
            case .binary(let bytes):
                if !connection.isClosed { socket.handler.received(.binary(bytes), on: connection) }
            case .ping(let payload):
                let drained = connection.state.withLock { state -> (@Sendable () -> Void)? in
                    guard state.phase == .open else { return nil }
                    // Pongs count against the send buffer like data: a client that floods pings and
                    // never reads would otherwise grow it without bound (127 bytes per ping).
                    if state.pendingBytes + 2 + payload.count > connection.limits.sendBufferBytesMax {
                        connection.queueControlLocked(&state, .close, WebSocketClose(code: .policyViolation, reason: "send buffer full").encoded())
                        state.phase = .closing(since: Self.now())
                        state.localClose = (.policyViolation, "send buffer full")
                        return connection.flushLocked(&state)
                    }
                    connection.queueControlLocked(&state, .pong, payload)
                    return connection.flushLocked(&state)
                }
                drained?()
            case .pong:
                break  // liveness already noted above
            case .close(let close):
                socket.peerClose = close
                let drained = connection.state.withLock { state -> (@Sendable () -> Void)? in
                    guard state.phase == .open else { return nil }
                    // Echo the code (RFC 6455 §5.5.1); an empty close is answered with an empty one.
                    connection.queueControlLocked(&state, .close, WebSocketClose(code: close.code).encoded())
                    state.phase = .closingAfterFlush(since: Self.now())
                    return connection.flushLocked(&state)
                }
                drained?()
            }
        }
    }

    private func checkTimers(_ socket: LoopSocket, now: Double) {
        let limits = socket.connection.limits
        let phase = socket.connection.state.withLock { $0.phase }
        switch phase {
        case .closing(let since), .closingAfterFlush(let since):
            // Reported as the server's own close code (or the failure/peer close already recorded).
            if now - since > limits.closeTimeoutSeconds { tearDown(socket) }
        case .open:
            if let sentAt = socket.pingSentAt {
                if now - sentAt > limits.pongTimeoutSeconds {
                    socket.failure = (.abnormalClosure, "ping not answered")
                    tearDown(socket)
                }
            } else if now - socket.lastHeardAt > limits.pingIntervalSeconds {
                socket.pingSentAt = now
                let connection = socket.connection
                let drained = connection.state.withLock { state -> (@Sendable () -> Void)? in
                    // Rechecked under the lock: the application may have closed meanwhile (no ping after close).
                    guard state.phase == .open else { return nil }
                    connection.queueControlLocked(&state, .ping, [])
                    return connection.flushLocked(&state)
                }
                drained?()
            }
        case .tornDown:
            break
        }
    }

    /// The end of a socket, exactly once: out of epoll, `MHD_upgrade_action(CLOSE)` (never close(fd):
    /// libmicrohttpd owns the descriptor), the slot released, the handler told.
    private func tearDown(_ socket: LoopSocket) {
        let connection = socket.connection
        guard sockets[connection.fd] === socket else { return }
        sockets[connection.fd] = nil
        let (localClose, drained) = connection.state.withLock { state in
            state.phase = .tornDown
            state.outbound = []
            state.sentOffset = 0
            _ = cmhd_epoll_control(epollFD, 2, connection.fd, 0)
            defer { state.drained = nil }
            return (state.localClose, state.drained?.handler)
        }
        _ = cmhd_upgrade_close(connection.upgradeHandle.pointer)
        shared.withLock { _ = $0.live.removeValue(forKey: ObjectIdentifier(connection)) }
        releaseReservation()
        // Report what ended it: a local failure, the peer's close, or the server's own close.
        let code: WebSocketCloseCode
        let reason: String
        if let failure = socket.failure {
            (code, reason) = failure
        } else if let peer = socket.peerClose {
            (code, reason) = (peer.code ?? .noStatusReceived, peer.reason)
        } else if let localClose {
            (code, reason) = localClose
        } else {
            (code, reason) = (.abnormalClosure, "")
        }
        drained?()
        socket.handler.closed(connection, code: code, reason: reason)
    }
}

import CMicroHTTPD
import Glibc
import Synchronization

/// An HTTP/1.1 server over libmicrohttpd's epoll thread pool. It knows nothing about the application:
/// each complete request goes to the ``HTTPHandler``, which answers through a ``Responder`` now or later.
///
/// Guarantees:
/// - No thread waits for a deferred answer: the connection is suspended and resumed by ``Responder/respond(_:)``.
/// - Request bodies are bounded (``HTTPServerConfiguration/requestBodyBytesMax``), answered 413 past it.
/// - ``stop(timeoutSeconds:)`` never aborts the process: parked requests are answered 503 before the
///   daemon stops (libmicrohttpd aborts when stopped with a suspended connection).
/// - Thread-safe: every method may be called from any thread.
///
/// Orderly shutdown: ``quiesce()`` (no new connections), let the application answer what it parked, then
/// ``stop(timeoutSeconds:)``.
public final class HTTPServer: Sendable {
    struct DaemonHandle: @unchecked Sendable {  // used only under `daemon`'s Mutex
        let daemon: OpaquePointer
        let extra: OpaquePointer
    }
    enum Lifecycle {
        case idle
        case running(DaemonHandle, port: UInt16, quiescedSocket: Int32?)
        case stopped
    }

    private let core: ServerCore
    private let lifecycle = Mutex(Lifecycle.idle)

    public init(configuration: HTTPServerConfiguration, handler: @escaping HTTPHandler) {
        core = ServerCore(configuration: configuration, handler: handler)
    }

    deinit {
        stop(timeoutSeconds: 0)
    }

    public var configuration: HTTPServerConfiguration { core.configuration }

    /// Binds and starts serving. Throws ``HTTPServerError`` (port taken, bad host, bad limits).
    public func start() throws(HTTPServerError) {
        let configuration = core.configuration
        guard configuration.threadCount >= 1 else { throw .invalidConfiguration("threadCount must be >= 1") }
        guard configuration.connectionLimit >= 1 else { throw .invalidConfiguration("connectionLimit must be >= 1") }
        guard configuration.connectionMemoryBytes >= 4096 else {
            throw .invalidConfiguration("connectionMemoryBytes must be >= 4096")
        }
        guard configuration.connectionTimeoutSeconds >= 1 else {
            throw .invalidConfiguration("connectionTimeoutSeconds must be >= 1 (0 would mean never)")
        }
        guard configuration.requestBodyBytesMax >= 0 else { throw .invalidConfiguration("requestBodyBytesMax must be >= 0") }

        try lifecycle.withLock { (lifecycle: inout Lifecycle) throws(HTTPServerError) in
            guard case .idle = lifecycle else { throw .alreadyStarted }
            let coreAddress = Unmanaged.passUnretained(core).toOpaque()
            let flags =
                UInt32(MHD_USE_INTERNAL_POLLING_THREAD.rawValue) | UInt32(MHD_USE_EPOLL.rawValue)
                | UInt32(MHD_ALLOW_SUSPEND_RESUME.rawValue) | UInt32(MHD_USE_ERROR_LOG.rawValue)
                | UInt32(MHD_USE_ITC.rawValue)  // MHD_quiesce_daemon needs it with internal threads
                | UInt32(MHD_ALLOW_UPGRADE.rawValue)  // WebSocket
            var extra: OpaquePointer?
            var errorNumber: Int32 = 0
            let daemon: OpaquePointer? = configuration.host.withCString { host in
                var parameters = cmhd_start_parameters(
                    flags: flags, host: host, port: configuration.port,
                    thread_pool_size: UInt32(configuration.threadCount),
                    connection_limit: UInt32(configuration.connectionLimit),
                    connection_memory_limit: configuration.connectionMemoryBytes,
                    connection_timeout: UInt32(configuration.connectionTimeoutSeconds),
                    handler: ServerCore.accessHandler, handler_cls: coreAddress,
                    completed: ServerCore.requestCompleted, completed_cls: coreAddress,
                    log: ServerCore.logSink, log_cls: coreAddress)
                return cmhd_start_daemon(&parameters, &extra, &errorNumber)
            }
            guard let daemon, let extra else {
                let message =
                    errorNumber == EINVAL && core.shared.withLock({ $0.lastLogMessage.isEmpty })
                    ? "host is not a numeric IPv4/IPv6 address" : core.shared.withLock { $0.lastLogMessage }
                throw .startFailed(
                    host: configuration.host, port: configuration.port, errorNumber: errorNumber, message: message)
            }
            lifecycle = .running(DaemonHandle(daemon: daemon, extra: extra), port: cmhd_daemon_port(daemon), quiescedSocket: nil)
        }
    }

    /// The bound port once started (the kernel's choice when configured with 0); 0 before start / after stop.
    public var port: UInt16 {
        lifecycle.withLock {
            if case .running(_, let port, _) = $0 { return port }
            return 0
        }
    }

    /// Requests parked in a suspended connection, waiting for ``Responder/respond(_:)`` (or answered but
    /// not yet picked up by libmicrohttpd's thread).
    public var suspendedCount: Int { core.shared.withLock { $0.parked.count } }

    /// Upgraded WebSockets open (or handshaken and about to open).
    public var webSocketCount: Int { core.webSocketLoop.reservedCount.load(ordering: .relaxed) }

    /// How many times ``Responder/respond(_:)`` was called on an already answered request (a bug in the
    /// application; the extra answers were ignored).
    public var duplicateResponseCount: Int { core.duplicateResponseCount.load(ordering: .relaxed) }

    /// Shutdown step 1: stop accepting new connections (MHD_quiesce_daemon). Open connections, keep-alive
    /// ones included, are still served. Idempotent.
    public func quiesce() {
        lifecycle.withLock { lifecycle in
            guard case .running(let handle, let port, nil) = lifecycle else { return }
            let socket = MHD_quiesce_daemon(handle.daemon)
            // MHD hands the listening socket back; it must stay open until MHD_stop_daemon returns.
            lifecycle = .running(handle, port: port, quiescedSocket: socket >= 0 ? socket : nil)
            if socket < 0 { core.configuration.log("MicroHTTP: MHD_quiesce_daemon failed") }
        }
    }

    /// Shutdown step 2: wait up to `timeoutSeconds` for parked requests to be answered, answer the rest 503
    /// (``HTTPServerConfiguration/errorBody``), then stop the daemon and close every connection. New
    /// requests arriving meanwhile on open connections get 503 with `Connection: close`. Never aborts the
    /// process; idempotent; blocks the caller (polls every few milliseconds) — do not call it from a handler.
    public func stop(timeoutSeconds: Double) {
        let handle: (DaemonHandle, Int32?)? = lifecycle.withLock { lifecycle in
            switch lifecycle {
            case .idle:
                lifecycle = .stopped
                return nil
            case .stopped:
                return nil
            case .running(let handle, _, let socket):
                lifecycle = .stopped
                return (handle, socket)
            }
        }
        guard let (daemon, quiescedSocket) = handle else { return }

        core.shared.withLock { $0.isStopping = true }
        let deadline = Self.now() + max(0, timeoutSeconds)
        while suspendedCount > 0 && Self.now() < deadline { usleep(2_000) }

        let leftovers = core.shared.withLock { Array($0.parked.values) }
        let unavailable = core.errorResponse(503, "server shutting down", close: true)
        for context in leftovers { context.respond(.full(unavailable), fromServer: true) }
        // Open streams end now (their readers see end-of-stream instead of suspending again).
        for stream in core.shared.withLock({ Array($0.streams.values) }) { stream.finish() }

        // Close every WebSocket (1001, then MHD_upgrade_action CLOSE) before the daemon stops: stopping
        // with an upgraded connection open cuts the client off and leaves a dangling handle.
        core.webSocketLoop.shutdown(graceSeconds: min(max(0, timeoutSeconds), 5))

        // Wait for MHD's threads to pick up the resumed connections: MHD_stop_daemon panics on any
        // connection still suspended. Bounded: a daemon that never drains is leaked rather than aborting.
        let drainDeadline = Self.now() + 10
        func anySuspended() -> Bool { core.shared.withLock { !$0.parked.isEmpty || $0.parkedStreamCount > 0 } }
        while anySuspended() && Self.now() < drainDeadline { usleep(1_000) }
        guard !anySuspended() else {
            core.configuration.log("MicroHTTP: connections still suspended; daemon leaked, not stopped")
            return
        }
        MHD_stop_daemon(daemon.daemon)
        cmhd_daemon_free(daemon.extra)
        if let quiescedSocket { close(quiescedSocket) }
    }

    private static func now() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }
}

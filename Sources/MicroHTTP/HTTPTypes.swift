/// Settings of one ``HTTPServer``. Every resource has a limit (connections, header memory, body bytes,
/// idle time); the defaults suit a broker on a small machine.
public struct HTTPServerConfiguration: Sendable {
    /// Numeric IPv4 or IPv6 address to bind.
    public var host: String = "127.0.0.1"
    /// 0 = let the kernel pick a free port; ``HTTPServer/port`` tells which after ``HTTPServer/start()``.
    public var port: UInt16 = 8082
    /// Threads of the libmicrohttpd epoll pool. Handlers run on these threads: never block in a handler.
    public var threadCount: Int = 2
    /// Open connections at most. libmicrohttpd does not refuse extra connections: they wait in the backlog.
    /// Parked (suspended) requests count against this limit.
    public var connectionLimit: Int = 4096
    /// Per-connection memory pool: bounds the request line plus headers and sets the body chunk size.
    /// libmicrohttpd 0.9.75 zeroes this pool for EVERY keep-alive request, so it is a per-request cost:
    /// keep it at 32–64 KiB (1 MiB measured ten times slower).
    public var connectionMemoryBytes: Int = 64 * 1024
    /// Idle keep-alive timeout. Never 0 (0 means "never" to libmicrohttpd). Parked requests do not time out.
    public var connectionTimeoutSeconds: Int = 120
    /// Largest request body accepted. Larger bodies are answered 413 without being buffered: a too large
    /// `Content-Length` is refused before the body is read (and the connection closed); a chunked body is
    /// counted as it streams, discarded past the limit and answered 413 once drained.
    public var requestBodyBytesMax: Int = 16 << 20
    /// Upgraded WebSockets open at most (they also count against ``connectionLimit``). Further upgrade
    /// requests are answered 503.
    public var webSocketsMax: Int = 1024
    /// Renders the server's own errors (413 body too large, 503 during shutdown) so that an application can
    /// make them JSON. Errors libmicrohttpd produces before any callback runs cannot be rendered here
    /// (0.9.75 has no hook): 431 for headers over ``connectionMemoryBytes`` (a small HTML page), and a
    /// plain close for an unparsable request line.
    public var errorBody: @Sendable (_ status: Int, _ message: String) -> (contentType: String, body: [UInt8]) = {
        _, message in ("text/plain; charset=utf-8", Array((message + "\n").utf8))
    }
    /// Receives libmicrohttpd's error log lines (client resets, bind failures...). Default: dropped.
    /// Called on libmicrohttpd's threads; must not block.
    public var log: @Sendable (_ message: String) -> Void = { _ in }

    public init() {}
}

/// One complete HTTP request: headers and the whole body (bounded by
/// ``HTTPServerConfiguration/requestBodyBytesMax``).
public struct HTTPRequest: Sendable {
    /// "GET", "POST", ... exactly as sent.
    public var method: String
    /// Percent-decoded path without the query, e.g. "/v1/topics/a b" for "/v1/topics/a%20b".
    public var path: String
    /// The path as received (not decoded, without the query).
    public var rawPath: String
    /// The raw path split on "/" BEFORE percent-decoding each segment, so "a%2Fb" is the one segment "a/b".
    /// The empty segment before the leading "/" is dropped: "/" gives [], "/v1/topics/" gives ["v1", "topics", ""].
    public var pathSegments: [String]
    /// Query arguments, percent-decoded ("+" is a space), in order, repeated names kept; "?flag" gives ("flag", "").
    public var query: [(name: String, value: String)]
    /// Request headers in arrival order, names as sent.
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]
    /// Numeric client address ("127.0.0.1", "::1"), when known.
    public var remoteAddress: String?

    public init(
        method: String, rawPath: String, query: [(name: String, value: String)] = [],
        headers: [(name: String, value: String)] = [], body: [UInt8] = [], remoteAddress: String? = nil
    ) {
        self.method = method
        self.rawPath = rawPath
        self.path = PercentDecoding.decode(rawPath, plusIsSpace: false)
        self.pathSegments = PercentDecoding.segments(ofRawPath: rawPath)
        self.query = query
        self.headers = headers
        self.body = body
        self.remoteAddress = remoteAddress
    }

    /// The first query argument with this exact name.
    public func queryValue(_ name: String) -> String? {
        query.first { $0.name == name }?.value
    }

    /// The first header with this name, compared case-insensitively (ASCII).
    public func header(_ name: String) -> String? {
        headers.first { PercentDecoding.asciiCaseInsensitiveEquals($0.name, name) }?.value
    }
}

/// What a handler answers. `Content-Length` is computed by the server: a `Content-Length` header given
/// here is ignored. A response to HEAD is sent without its body.
public struct HTTPResponse: Sendable {
    public var status: Int
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]

    public init(status: Int, headers: [(name: String, value: String)] = [], body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        self.body = body
    }
}

/// Called once per complete request on a libmicrohttpd thread. Answer through the ``Responder``, now or
/// later from any thread; never block here.
public typealias HTTPHandler = @Sendable (HTTPRequest, Responder) -> Void

/// Why ``HTTPServer/start()`` failed.
public enum HTTPServerError: Error, Equatable, CustomStringConvertible {
    /// A configuration value is out of range.
    case invalidConfiguration(String)
    /// start() was called twice, or after stop().
    case alreadyStarted
    /// libmicrohttpd could not start, e.g. the port is taken. `errorNumber` is the errno seen, `message`
    /// libmicrohttpd's last log line.
    case startFailed(host: String, port: UInt16, errorNumber: Int32, message: String)

    public var description: String {
        switch self {
        case .invalidConfiguration(let why): return "invalid HTTP server configuration: \(why)"
        case .alreadyStarted: return "HTTP server already started (or stopped)"
        case .startFailed(let host, let port, let errorNumber, let message):
            return "cannot start HTTP server on \(host):\(port): \(message.isEmpty ? "errno \(errorNumber)" : message) (errno \(errorNumber))"
        }
    }
}

/// Every queue, body, batch and waiter has a limit (STYLE.md #7, TigerBeetle). Units come last in
/// the name. Defaults are chosen for a 2-core development machine; `petrel serve` can override them.
public struct Limits: Sendable, Equatable {
    /// Largest request body accepted on any route (413 above it).
    public var requestBodyBytesMax: Int = 16 * 1024 * 1024
    /// Largest single record value + key + headers (topic config `max.message.bytes` may lower it).
    public var recordBytesMax: Int = 1024 * 1024
    /// Most records in one produce request.
    public var produceRecordsMax: Int = 100_000
    /// Most records one read may return.
    public var readRecordsMax: Int = 100_000
    /// Most bytes one read may return (the client's `max_bytes` is capped to this).
    public var readBytesMax: Int = 64 * 1024 * 1024
    /// Longest long-poll wait a client may ask for.
    public var waitMillisecondsMax: Int = 60_000
    /// Parked long-poll readers and unacknowledged producers, broker-wide (429 above it).
    public var parkedRequestsMax: Int = 10_000
    /// Open SSE / NDJSON streams, broker-wide (429 above it).
    public var streamsMax: Int = 1_000
    /// Bytes a stream may have waiting for a slow client before the broker stops reading for it.
    public var streamBufferBytes: Int = 4 * 1024 * 1024
    /// Longest `stream_timeout` a client may ask for (0 = until the client leaves is allowed too).
    public var streamTimeoutSecondsMax: Int = 24 * 3600
    /// Topics on this broker.
    public var topicsMax: Int = 10_000
    /// Partitions of one topic.
    public var partitionsPerTopicMax: Int32 = 10_000
    /// Partitions on this broker, all topics together.
    public var partitionsMax: Int = 20_000
    /// Simultaneous HTTP connections.
    public var connectionsMax: Int = 4_096
    /// Idle keep-alive connections are closed after this many seconds.
    public var connectionIdleSecondsMax: Int = 120
    /// Header bytes + request line per request; also sizes libmicrohttpd's per-connection pool
    /// (LIBMICROHTTPD.md: keep it at 32-64 KiB, it is paid on every request).
    public var connectionMemoryBytes: Int = 64 * 1024

    public init() {}
    public static let defaults = Limits()
}

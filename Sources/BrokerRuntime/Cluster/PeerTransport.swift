import BrokerModel

/// How brokers of one cluster talk to each other. The runtime depends only on this protocol; the
/// HTTP implementation (`BrokerPeers.HTTPPeerTransport`) and in-memory test networks conform.
///
/// Two kinds of traffic:
/// - **frames**: fire-and-forget, ordered per peer, batched. Raft messages of every group two brokers
///   share and status reports travel as frames. The transport may drop frames (full queue, failed
///   connection): Raft retransmits, reports repeat. It never reorders or alters them.
/// - **calls**: one request, one answer (produce/read forwarded to a partition leader, metadata
///   commands forwarded to the controller). The completion runs exactly once.
public protocol PeerTransport: Sendable {
    /// Starts listening and delivering to `handler`. Called once, before any `send` or `call`.
    func start(handler: any PeerHandler) throws(BrokerError)
    /// Queues `frame` for `peer`. Never blocks; drops when the peer's queue is full.
    func send(_ frame: [UInt8], to peer: NodeID)
    /// Sends a request to `peer`'s `method` and calls `completion` once with the answer body or an
    /// error (`.unavailable` when the peer cannot be reached or the timeout passes).
    func call(_ peer: NodeID, method: String, body: [UInt8], timeoutMilliseconds: Int,
              completion: @escaping @Sendable (Result<[UInt8], BrokerError>) -> Void)
    /// Milliseconds on the monotonic clock since something was last received from `peer`
    /// (a frame, a call or a call's answer); nil if never.
    func millisecondsSinceContact(_ peer: NodeID) -> Int64?
    /// Stops listening and sending; pending calls complete with `.shuttingDown`.
    func stop()
    /// Learns (or updates) the internal address of a broker that joined after start.
    func setPeerAddress(_ peer: NodeID, _ address: String)
}

extension PeerTransport {
    public func setPeerAddress(_ peer: NodeID, _ address: String) {}
}

/// The runtime's side of the transport: what arrives from peers.
public protocol PeerHandler: Sendable {
    /// Frames from `peer`, in the order it sent them. Must not block for long (hand work off).
    func receive(frames: [[UInt8]], from peer: NodeID)
    /// A call from `peer`. `reply` may be called later, from any thread, exactly once.
    func handle(method: String, body: [UInt8], from peer: NodeID,
                reply: @escaping @Sendable (Result<[UInt8], BrokerError>) -> Void)
}

import BrokerModel

/// Settings of one ``HTTPPeerTransport``. Every queue and buffer has a limit here.
public struct PeerTransportConfiguration: Sendable {
    /// This broker's id: sent with every request so the receiver knows who is talking.
    public var nodeID: NodeID
    /// Numeric address of the internal listener (`--internal-host`).
    public var listenHost: String
    /// Port of the internal listener (`--internal-port`); 0 = the kernel picks one
    /// (``HTTPPeerTransport/port`` tells which after `start`).
    public var listenPort: UInt16
    /// `host:port` of every member's internal listener (this node's own entry is ignored). More can be
    /// added later with ``HTTPPeerTransport/setPeerAddress(_:_:)``. Requests from ids not in this map
    /// are refused (403).
    public var peers: [NodeID: String]
    /// Shared by every member (`--cluster-secret`); compared in constant time.
    public var secret: String
    /// Bytes of frames waiting for one peer; frames beyond are dropped (Raft retransmits).
    public var queuedBytesPerPeerMax: Int = 32 << 20
    /// Largest body sent or accepted: one frames POST, one call request, one call answer.
    public var requestBodyBytesMax: Int = 16 << 20
    /// Calls started and not yet completed; further calls complete at once with `.overloaded`.
    public var callsInFlightMax: Int = 4096
    /// Frame POSTs in flight to one peer (each on its own keep-alive connection).
    public var framePostsInFlightPerPeer: Int = 2
    /// Connections to one peer at most (frames and calls together); further transfers wait inside curl.
    public var connectionsPerPeerMax: Int = 32
    /// Timeout of a call whose caller passed 0 or less, and of a frames POST.
    public var defaultTimeoutMilliseconds: Int = 10_000
    /// Connecting to a peer gives up after this long (a dead host must not hold frames for long).
    public var connectTimeoutMilliseconds: Int = 2_000
    /// After a failed frames POST the next one to that peer waits `backoffMin`, doubling up to
    /// `backoffMax`; reset by a success.
    public var backoffMinMilliseconds: Int = 50
    public var backoffMaxMilliseconds: Int = 2_000
    /// Threads of the internal listener's libmicrohttpd pool.
    public var listenerThreads: Int = 2
    /// Connections the internal listener accepts.
    public var listenerConnectionsMax: Int = 1024

    public init(nodeID: NodeID, listenHost: String = "127.0.0.1", listenPort: UInt16 = 0, peers: [NodeID: String] = [:], secret: String) {
        self.nodeID = nodeID
        self.listenHost = listenHost
        self.listenPort = listenPort
        self.peers = peers
        self.secret = secret
    }
}

/// Counters since start. A snapshot: read with ``HTTPPeerTransport/metrics``.
public struct PeerTransportMetrics: Sendable, Equatable {
    /// Frames accepted by `send` into a peer queue.
    public var framesQueued = 0
    /// Frames whose POST was answered 204.
    public var framesSent = 0
    public var frameBytesSent = 0
    /// Frames refused by `send`: queue full, unknown peer, frame larger than a body, or stopped.
    public var framesDroppedAtSend = 0
    /// Frames lost with a failed POST (connection failure, timeout, non-204 answer).
    public var framesDroppedInFlight = 0
    /// Frame POSTs answered 204 / failed.
    public var framePostsSent = 0
    public var framePostsFailed = 0
    /// Frames delivered to the handler and the POSTs that carried them.
    public var framesReceived = 0
    public var framePostsReceived = 0
    /// Frame POSTs discarded on arrival: a later POST of the same sender was already delivered
    /// (delivering them would reorder), or they were duplicates, or held for a sender that restarted.
    public var framePostsReceivedOutOfOrder = 0
    public var framesReceivedOutOfOrder = 0
    /// Frame POSTs that arrived before their predecessor and were held until it came (not lost).
    public var framePostsHeld = 0
    public var callsStarted = 0
    public var callsSucceeded = 0
    /// Calls completed with a BrokerError the peer answered.
    public var callsFailedRemotely = 0
    /// Calls completed with `.unavailable` (unreachable, timeout, bad answer).
    public var callsFailedUnreachable = 0
    public var callsRejectedOverloaded = 0
    public var callsReceived = 0
    /// Requests refused 401 (secret) or 403 (unknown node).
    public var requestsRefused = 0

    public init() {}
}

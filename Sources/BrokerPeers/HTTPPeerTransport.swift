import BrokerModel
import BrokerRuntime
import CCurl
import Glibc
import Logging
import MicroHTTP
import Synchronization

/// ``PeerTransport`` over HTTP/1.1: a libmicrohttpd listener for what peers send, and one libcurl
/// multi thread for everything this broker sends.
///
/// Wire format:
/// - `POST /internal/v1/frames`: body = frames, each a big-endian u32 length then its bytes. Headers
///   `X-Petrel-Incarnation` (random per transport instance) and `X-Petrel-Seq` (per peer, increasing)
///   let the receiver refuse a POST that overtook a later one on the other connection: frames are
///   never reordered, at worst dropped. Answer 204.
/// - `POST /internal/v1/call/{method}`: body = request. Answer 200 + body, or 500 with header
///   `X-Petrel-Error: broker-error` and an encoded ``BrokerError``.
/// - Every request carries `X-Petrel-Node` (sender id) and `X-Petrel-Secret`: wrong or missing
///   secret → 401, unknown node → 403, and nothing reaches the handler.
public final class HTTPPeerTransport: PeerTransport {
    static let incarnationHeader = "X-Petrel-Incarnation"
    static let sequenceHeader = "X-Petrel-Seq"
    static let nodeHeader = "X-Petrel-Node"
    static let secretHeader = "X-Petrel-Secret"
    static let errorHeader = "X-Petrel-Error"
    static let windowHeader = "X-Petrel-Window"

    private let configuration: PeerTransportConfiguration
    private let logger: Logger
    private let secretBytes: [UInt8]
    /// Random per instance: a restarted peer starts its sequence numbers again.
    private let incarnation: UInt64
    private let outgoing: Mutex<Outgoing>
    private let inboxes = Mutex<[NodeID: Inbox]>([:])
    private let lastContact = Mutex<[NodeID: UInt64]>([:])
    private let counters = Mutex(PeerTransportMetrics())
    private let lifecycle = Mutex<Lifecycle>(.idle)

    private enum Lifecycle {
        case idle
        case running(HTTPServer, CurlLoop)
        case stopped
    }

    public init(configuration: PeerTransportConfiguration, logger: Logger) {
        // The CLI refuses cluster mode without a secret; an empty one here would let anyone in.
        precondition(!configuration.secret.isEmpty, "the cluster secret must not be empty")
        precondition(configuration.requestBodyBytesMax >= 1024, "requestBodyBytesMax too small")
        precondition(configuration.framePostsInFlightPerPeer >= 1 && configuration.callsInFlightMax >= 1)
        precondition(configuration.backoffMinMilliseconds >= 1 && configuration.backoffMaxMilliseconds >= configuration.backoffMinMilliseconds)
        self.configuration = configuration
        self.logger = logger
        self.secretBytes = Array(configuration.secret.utf8)
        var generator = SystemRandomNumberGenerator()
        self.incarnation = generator.next()
        var outgoing = Outgoing()
        for (id, address) in configuration.peers where id != configuration.nodeID {
            outgoing.peers[id] = OutPeer(address: address)
        }
        self.outgoing = Mutex(outgoing)
    }

    deinit { stop() }

    // MARK: PeerTransport

    public func start(handler: any PeerHandler) throws(BrokerError) {
        try lifecycle.withLock { (state: inout Lifecycle) throws(BrokerError) in
            guard case .idle = state else { throw .unavailable("peer transport already started") }
            var http = HTTPServerConfiguration()
            http.host = configuration.listenHost
            http.port = configuration.listenPort
            http.threadCount = configuration.listenerThreads
            http.connectionLimit = configuration.listenerConnectionsMax
            http.requestBodyBytesMax = configuration.requestBodyBytesMax
            http.connectionTimeoutSeconds = 120
            let logger = self.logger
            http.log = { message in logger.debug("internal listener: \(message)") }
            let server = HTTPServer(configuration: http) { [weak self] request, responder in
                guard let self else { return responder.respond(HTTPResponse(status: 503)) }
                self.serve(request, responder, handler)
            }
            do { try server.start() } catch { throw .unavailable("cannot start the internal listener: \(error)") }
            guard let loop = CurlLoop(transport: self) else {
                server.stop(timeoutSeconds: 0)
                throw .unavailable("cannot initialise libcurl's multi interface")
            }
            loop.startThread()
            state = .running(server, loop)
            logger.info("internal listener started", metadata: ["address": "\(configuration.listenHost):\(server.port)"])
        }
    }

    public func send(_ frame: [UInt8], to peer: NodeID) {
        let size = frame.count + 4
        let accepted: Bool = outgoing.withLock { out in
            guard !out.isStopped, size <= configuration.requestBodyBytesMax, out.peers[peer]?.address != nil,
                out.peers[peer]!.queuedBytes + size <= configuration.queuedBytesPerPeerMax
            else { return false }
            let wasEmpty = out.peers[peer]!.queuedCount == 0
            // Mutated in place through the dictionary: a copy of `p` would copy the whole queue.
            out.peers[peer]!.queue.append(frame)
            out.peers[peer]!.queuedBytes += size
            // Only the first frame of a batch needs the thread's attention; later ones ride along.
            if wasEmpty { out.loop?.wakeup() }
            return true
        }
        counters.withLock {
            if accepted { $0.framesQueued += 1 } else { $0.framesDroppedAtSend += 1 }
        }
    }

    /// `completion` runs once, on the curl thread, except when the call is refused at once (stopped:
    /// `.shuttingDown`; too many calls: `.overloaded`; unknown peer: `.unavailable`), where it runs on
    /// the calling thread before `call` returns. It never runs while a transport lock is held. It must
    /// not block (it holds up every peer's traffic) nor call `stop()`.
    public func call(
        _ peer: NodeID, method: String, body: [UInt8], timeoutMilliseconds: Int,
        completion: @escaping @Sendable (Result<[UInt8], BrokerError>) -> Void
    ) {
        let timeout = timeoutMilliseconds > 0 ? timeoutMilliseconds : configuration.defaultTimeoutMilliseconds
        let refusal: BrokerError? = outgoing.withLock { out in
            if out.isStopped { return .shuttingDown }
            guard out.peers[peer]?.address != nil else { return .unavailable("peer \(peer) unreachable: no address known") }
            guard out.callsOutstanding < configuration.callsInFlightMax else {
                return .overloaded("too many calls to peers in flight (\(configuration.callsInFlightMax))")
            }
            guard body.count <= configuration.requestBodyBytesMax else {
                return .payloadTooLarge("call body of \(body.count) bytes exceeds \(configuration.requestBodyBytesMax)")
            }
            out.callsOutstanding += 1
            out.newCalls.append(PendingCall(peer: peer, method: method, body: body, timeoutMilliseconds: timeout, completion: completion))
            out.loop?.wakeup()
            return nil
        }
        if let refusal {
            if case .overloaded = refusal { counters.withLock { $0.callsRejectedOverloaded += 1 } }
            completion(.failure(refusal))
        }
    }

    public func millisecondsSinceContact(_ peer: NodeID) -> Int64? {
        guard let at = lastContact.withLock({ $0[peer] }) else { return nil }
        let now = Self.nowNanoseconds()
        return now > at ? Int64((now - at) / 1_000_000) : 0
    }

    public func stop() {
        let running: (HTTPServer, CurlLoop)? = lifecycle.withLock { state in
            defer { state = .stopped }
            if case .running(let server, let loop) = state { return (server, loop) }
            return nil
        }
        let orphans: [PendingCall] = outgoing.withLock { out in
            out.isStopped = true
            out.loop?.wakeup()
            out.loop = nil
            // Without a thread (never started) nobody else will complete these.
            return running == nil ? out.takeNewCalls() : []
        }
        for call in orphans { call.completion(.failure(.shuttingDown)) }
        guard let (server, loop) = running else { return }
        server.quiesce()
        server.stop(timeoutSeconds: 1)
        loop.join()
    }

    // MARK: extras

    /// This broker's id.
    public var nodeID: NodeID { configuration.nodeID }

    /// The internal listener's bound port (the kernel's choice when configured with 0); 0 before start.
    public var port: UInt16 {
        lifecycle.withLock {
            if case .running(let server, _) = $0 { return server.port }
            return 0
        }
    }

    /// Adds or changes a peer's `host:port` (a broker joined or moved). Thread-safe. Frames already
    /// queued for it stay queued and go to the new address.
    public func setPeerAddress(_ peer: NodeID, _ address: String) {
        guard peer != configuration.nodeID else { return }
        outgoing.withLock { out in
            var p = out.peers[peer] ?? OutPeer(address: nil)
            p.address = address
            p.backoffMilliseconds = 0
            p.retryAtNanoseconds = 0
            out.peers[peer] = p
            out.loop?.wakeup()
        }
    }

    /// Counters since start (a consistent snapshot of each counter, not of all together).
    public var metrics: PeerTransportMetrics { counters.withLock { $0 } }

    /// Frames waiting in `peer`'s queue (not yet in a POST).
    public func queuedFrames(for peer: NodeID) -> Int { outgoing.withLock { $0.peers[peer]?.queuedCount ?? 0 } }

    // MARK: server side

    private func serve(_ request: HTTPRequest, _ responder: Responder, _ handler: any PeerHandler) {
        guard request.method == "POST" else { return responder.respond(HTTPResponse(status: 405)) }
        guard let secret = request.header(Self.secretHeader), Self.constantTimeEquals(Array(secret.utf8), secretBytes) else {
            counters.withLock { $0.requestsRefused += 1 }
            return responder.respond(HTTPResponse(status: 401))
        }
        // Calls are accepted from any node that holds the secret: a broker joining the cluster
        // registers through a call before the members know its address. Frames (Raft traffic) come
        // only from known peers.
        let isCall = request.pathSegments.count == 4 && request.pathSegments.prefix(3) == ["internal", "v1", "call"]
        guard let text = request.header(Self.nodeHeader), let raw = Int32(text), case let peer = NodeID(raw),
            peer != configuration.nodeID, isCall || outgoing.withLock({ $0.peers[peer] != nil })
        else {
            counters.withLock { $0.requestsRefused += 1 }
            return responder.respond(HTTPResponse(status: 403))
        }
        let segments = request.pathSegments
        if segments == ["internal", "v1", "frames"] {
            guard let frames = Self.decodeFrames(request.body) else { return responder.respond(HTTPResponse(status: 400)) }
            guard let incarnation = request.header(Self.incarnationHeader).flatMap({ UInt64($0) }),
                let sequence = request.header(Self.sequenceHeader).flatMap({ UInt64($0) }), sequence >= 1
            else { return responder.respond(HTTPResponse(status: 400)) }
            let window = UInt64(min(max(request.header(Self.windowHeader).flatMap { Int($0) } ?? 1, 1), Inbox.heldMax))
            touch(peer)
            let inbox = inboxes.withLock { boxes in
                if let box = boxes[peer] { return box }
                let box = Inbox()
                boxes[peer] = box
                return box
            }
            // Delivery happens under the peer's inbox lock, so POSTs of one peer racing on two
            // connections reach the handler one after the other, in sequence order.
            let outcome = inbox.accept(
                frames: frames, responder: responder, incarnation: incarnation, sequence: sequence, window: window
            ) { frames in handler.receive(frames: frames, from: peer) }
            counters.withLock {
                $0.framePostsReceived += outcome.deliveredPosts
                $0.framesReceived += outcome.deliveredFrames
                $0.framePostsReceivedOutOfOrder += outcome.stalePosts
                $0.framesReceivedOutOfOrder += outcome.staleFrames
                $0.framePostsHeld += outcome.held ? 1 : 0
            }
            for r in outcome.answer { r.respond(HTTPResponse(status: 204)) }
            if outcome.refused { responder.respond(HTTPResponse(status: 503)) }
            return
        }
        if segments.count == 4, segments[0] == "internal", segments[1] == "v1", segments[2] == "call", !segments[3].isEmpty {
            touch(peer)
            counters.withLock { $0.callsReceived += 1 }
            handler.handle(method: segments[3], body: request.body, from: peer) { result in
                switch result {
                case .success(let body):
                    responder.respond(HTTPResponse(status: 200, headers: [("Content-Type", "application/octet-stream")], body: body))
                case .failure(let error):
                    var w = ByteWriter(capacity: 64)
                    error.encode(into: &w)
                    responder.respond(HTTPResponse(
                        status: 500, headers: [("Content-Type", "application/octet-stream"), (Self.errorHeader, "broker-error")], body: w.bytes))
                }
            }
            return
        }
        responder.respond(HTTPResponse(status: 404))
    }

    /// Per-sender delivery order on the receiving side.
    ///
    /// A sender numbers its frame POSTs 1, 2, 3... and has at most `window` of them in flight, each on
    /// its own connection, so they may arrive out of order. A POST that arrives before its predecessor
    /// is held (unanswered, which also keeps the sender's slot busy) until the predecessor arrives.
    /// Sequence `s` is only sent once `s - window` finished at the sender (answered or failed), so a
    /// POST numbered `s` proves that every missing number up to `s - window` is lost for good: those
    /// are skipped. Frames are thus never reordered; at worst lost, like with a failed connection.
    final class Inbox: Sendable {
        static let heldMax = 64
        struct Held {
            var frames: [[UInt8]]
            var responder: Responder
        }
        struct Order {
            var incarnation: UInt64 = 0
            var lastSequence: UInt64 = 0
            var held: [UInt64: Held] = [:]
        }
        struct Outcome {
            var answer: [Responder] = []
            var deliveredPosts = 0
            var deliveredFrames = 0
            var stalePosts = 0
            var staleFrames = 0
            var held = false
            var refused = false
        }
        let order = Mutex(Order())

        func accept(
            frames: [[UInt8]], responder: Responder, incarnation: UInt64, sequence: UInt64, window: UInt64,
            deliver: ([[UInt8]]) -> Void
        ) -> Outcome {
            order.withLock { order in
                var outcome = Outcome()
                if order.incarnation != incarnation {
                    // A new sender instance (or this inbox is new): start over; whatever was held
                    // belongs to a sender that is gone.
                    for (_, h) in order.held {
                        outcome.answer.append(h.responder)
                        outcome.stalePosts += 1
                        outcome.staleFrames += h.frames.count
                    }
                    order = Order(incarnation: incarnation, lastSequence: 0, held: [:])
                }
                if sequence <= order.lastSequence || order.held[sequence] != nil {
                    outcome.answer.append(responder)
                    outcome.stalePosts += 1
                    outcome.staleFrames += frames.count
                    return outcome
                }
                guard order.held.count < Inbox.heldMax else {
                    outcome.refused = true
                    return outcome
                }
                order.held[sequence] = Held(frames: frames, responder: responder)
                let newest = order.held.keys.max() ?? sequence
                let resolvedThrough = newest > window ? newest - window : 0
                while true {
                    if let next = order.held.removeValue(forKey: order.lastSequence + 1) {
                        if !next.frames.isEmpty { deliver(next.frames) }
                        order.lastSequence += 1
                        outcome.answer.append(next.responder)
                        outcome.deliveredPosts += 1
                        outcome.deliveredFrames += next.frames.count
                    } else if order.lastSequence < resolvedThrough, let oldest = order.held.keys.min() {
                        // The missing POSTs up to `resolvedThrough` were lost: skip them.
                        order.lastSequence = min(oldest - 1, resolvedThrough)
                    } else {
                        break
                    }
                }
                outcome.held = order.held[sequence] != nil
                return outcome
            }
        }
    }

    /// Splits a frames body (u32 big-endian length + bytes, repeated). nil when malformed.
    static func decodeFrames(_ body: [UInt8]) -> [[UInt8]]? {
        var frames: [[UInt8]] = []
        var i = 0
        while i < body.count {
            guard body.count - i >= 4 else { return nil }
            let n = Int(body[i]) << 24 | Int(body[i + 1]) << 16 | Int(body[i + 2]) << 8 | Int(body[i + 3])
            i += 4
            guard n <= body.count - i else { return nil }
            frames.append(Array(body[i..<i + n]))
            i += n
        }
        return frames
    }

    static func encodeFrame(_ frame: [UInt8], into body: inout [UInt8]) {
        let n = UInt32(frame.count)
        body.append(UInt8(truncatingIfNeeded: n >> 24))
        body.append(UInt8(truncatingIfNeeded: n >> 16))
        body.append(UInt8(truncatingIfNeeded: n >> 8))
        body.append(UInt8(truncatingIfNeeded: n))
        body.append(contentsOf: frame)
    }

    /// Compares without stopping at the first difference, so response time does not tell how much
    /// of a guessed secret was right. (The length may leak; the content does not.)
    static func constantTimeEquals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        var difference = UInt64(a.count ^ b.count)
        let n = max(a.count, b.count)
        for i in 0..<n {
            let x = i < a.count ? a[i] : 0
            let y = i < b.count ? b[i] : 0
            difference |= UInt64(x ^ y)
        }
        return difference == 0
    }

    func touch(_ peer: NodeID) {
        let now = Self.nowNanoseconds()
        lastContact.withLock { $0[peer] = now }
    }

    static func nowNanoseconds() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
    }

    // MARK: client side (state shared with the curl thread)

    struct OutPeer {
        var address: String?
        /// FIFO; `head` is the next frame to send (compacted when half is consumed).
        var queue: [[UInt8]] = []
        var head = 0
        var queuedBytes = 0
        var postsInFlight = 0
        var nextSequence: UInt64 = 1
        var backoffMilliseconds = 0
        var retryAtNanoseconds: UInt64 = 0
        var queuedCount: Int { queue.count - head }

        init(address: String?) { self.address = address }

        /// Takes frames from the head while they fit in `bodyMax` (at least one).
        mutating func takeBatch(bodyMax: Int) -> (body: [UInt8], count: Int) {
            var body: [UInt8] = []
            var count = 0
            while head < queue.count {
                let size = queue[head].count + 4
                if count > 0 && body.count + size > bodyMax { break }
                HTTPPeerTransport.encodeFrame(queue[head], into: &body)
                queue[head] = []
                head += 1
                queuedBytes -= size
                count += 1
            }
            if head == queue.count {
                queue.removeAll(keepingCapacity: true)
                head = 0
            } else if head > 1024 && head * 2 > queue.count {
                queue.removeFirst(head)
                head = 0
            }
            return (body, count)
        }
    }

    struct PendingCall {
        var peer: NodeID
        var method: String
        var body: [UInt8]
        var timeoutMilliseconds: Int
        var completion: @Sendable (Result<[UInt8], BrokerError>) -> Void
    }

    struct Outgoing {
        var peers: [NodeID: OutPeer] = [:]
        var newCalls: [PendingCall] = []
        /// Calls accepted by `call` and not completed yet (queued or on the wire).
        var callsOutstanding = 0
        var isStopped = false
        var loop: CurlLoop?

        mutating func takeNewCalls() -> [PendingCall] {
            defer { newCalls.removeAll() }
            return newCalls
        }
    }

    /// What the curl thread takes from the shared state in one go.
    struct Work {
        var frames: [(peer: NodeID, address: String, body: [UInt8], count: Int, sequence: UInt64)] = []
        var calls: [(PendingCall, address: String)] = []
        var unreachableCalls: [PendingCall] = []
        var pollMilliseconds: Int32 = 1000
        var isStopped = false
    }

    func attach(_ loop: CurlLoop) { outgoing.withLock { $0.loop = loop } }

    /// Under the lock: frames batches for every peer with a free slot and no backoff, and new calls.
    func takeWork() -> Work {
        let now = Self.nowNanoseconds()
        let bodyMax = configuration.requestBodyBytesMax
        let slots = configuration.framePostsInFlightPerPeer
        return outgoing.withLock { out in
            var work = Work()
            if out.isStopped {
                work.isStopped = true
                return work
            }
            for id in out.peers.keys {
                guard out.peers[id]!.queuedCount > 0, let address = out.peers[id]!.address else { continue }
                let retryAt = out.peers[id]!.retryAtNanoseconds
                if retryAt > now {
                    let wait = Int32(clamping: (retryAt - now) / 1_000_000 + 1)
                    work.pollMilliseconds = min(work.pollMilliseconds, wait)
                    continue
                }
                // In place (see `send`).
                while out.peers[id]!.postsInFlight < slots && out.peers[id]!.queuedCount > 0 {
                    let (body, count) = out.peers[id]!.takeBatch(bodyMax: bodyMax)
                    out.peers[id]!.postsInFlight += 1
                    work.frames.append((id, address, body, count, out.peers[id]!.nextSequence))
                    out.peers[id]!.nextSequence += 1
                }
            }
            for call in out.takeNewCalls() {
                if let address = out.peers[call.peer]?.address {
                    work.calls.append((call, address))
                } else {
                    work.unreachableCalls.append(call)
                }
            }
            return work
        }
    }

    func framePostFinished(peer: NodeID, count: Int, bytes: Int, failure: String?) {
        let now = Self.nowNanoseconds()
        let (min, max) = (configuration.backoffMinMilliseconds, configuration.backoffMaxMilliseconds)
        let transition: String? = outgoing.withLock { out in
            guard var p = out.peers[peer] else { return nil }
            p.postsInFlight -= 1
            var transition: String?
            if let failure {
                if p.backoffMilliseconds == 0 { transition = "peer \(peer) unreachable: \(failure)" }
                p.backoffMilliseconds = p.backoffMilliseconds == 0 ? min : Swift.min(p.backoffMilliseconds * 2, max)
                p.retryAtNanoseconds = now + UInt64(p.backoffMilliseconds) * 1_000_000
            } else {
                if p.backoffMilliseconds != 0 { transition = "peer \(peer) reachable again" }
                p.backoffMilliseconds = 0
                p.retryAtNanoseconds = 0
            }
            out.peers[peer] = p
            return transition
        }
        if failure == nil { touch(peer) }
        counters.withLock {
            if failure == nil {
                $0.framePostsSent += 1
                $0.framesSent += count
                $0.frameBytesSent += bytes
            } else {
                $0.framePostsFailed += 1
                $0.framesDroppedInFlight += count
            }
        }
        if let transition {
            if failure == nil { logger.info("\(transition)") } else { logger.warning("\(transition)") }
        }
    }

    func callFinished(_ call: PendingCall, _ result: Result<[UInt8], BrokerError>, reachedPeer: Bool) {
        outgoing.withLock { $0.callsOutstanding -= 1 }
        if reachedPeer { touch(call.peer) }
        counters.withLock {
            switch result {
            case .success: $0.callsSucceeded += 1
            case .failure: if reachedPeer { $0.callsFailedRemotely += 1 } else { $0.callsFailedUnreachable += 1 }
            }
        }
        call.completion(result)
    }

    func callStarted() { counters.withLock { $0.callsStarted += 1 } }

    /// Completes calls the thread could not start (stopped, or peer address gone).
    func abandon(_ calls: [PendingCall], with error: BrokerError) {
        for call in calls { callFinished(call, .failure(error), reachedPeer: false) }
    }

    /// Calls queued and never taken by the thread (it saw `isStopped` first).
    func takeLeftoverCalls() -> [PendingCall] { outgoing.withLock { $0.takeNewCalls() } }

    var headerValues: (node: String, secret: String, incarnation: String) {
        (String(configuration.nodeID.rawValue), configuration.secret, String(incarnation))
    }
    var framePostsInFlightPerPeer: Int { configuration.framePostsInFlightPerPeer }
    var limits: (bodyMax: Int, defaultTimeout: Int, connectTimeout: Int, connectionsPerPeer: Int) {
        (configuration.requestBodyBytesMax, configuration.defaultTimeoutMilliseconds,
         configuration.connectTimeoutMilliseconds, configuration.connectionsPerPeerMax)
    }
}

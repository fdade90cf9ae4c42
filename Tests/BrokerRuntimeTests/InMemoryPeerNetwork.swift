import BrokerModel
import Dispatch
import Synchronization
@testable import BrokerRuntime

/// An in-process network of brokers for cluster tests: one shared object, one `PeerTransport` per
/// broker incarnation (`transport(for:)`).
///
/// Delivery is asynchronous, on one serial DispatchQueue per destination broker, so everything one
/// broker sends another arrives in the order it was sent (the `PeerTransport` contract), and a
/// handler never runs on the sender's thread. The network can cut a broker off (`isolate`): every
/// frame, call and answer to or from it is dropped — also the ones already in flight — so calls end
/// by timeout, as across a real partition. A broker with no running transport (stopped, not yet
/// started) refuses calls at once, like a closed port ("Couldn't connect", which the runtime knows
/// delivered nothing).
final class InMemoryPeerNetwork: Sendable {
    /// Frames in flight on one link (sender → destination) beyond which new frames are dropped.
    static let linkFramesMax = 10_000

    private struct State {
        var endpoints: [NodeID: InMemoryPeerTransport] = [:]
        var queues: [NodeID: DispatchQueue] = [:]
        var isolated: Set<NodeID> = []
        var inFlight: [Link: Int] = [:]
        var framesDropped = 0
    }

    struct Link: Hashable {
        var from: NodeID
        var to: NodeID
    }

    private let state = Mutex(State())

    init() {}

    /// A new transport for `id` (a new incarnation after a restart gets a new one).
    func transport(for id: NodeID) -> InMemoryPeerTransport {
        InMemoryPeerTransport(id: id, network: self)
    }

    /// Cuts `id` off: everything to or from it is dropped until `heal`.
    func isolate(_ id: NodeID) { state.withLock { _ = $0.isolated.insert(id) } }
    func heal(_ id: NodeID) { state.withLock { _ = $0.isolated.remove(id) } }
    func healAll() { state.withLock { $0.isolated.removeAll() } }

    var framesDropped: Int { state.withLock { $0.framesDropped } }

    func connected(_ a: NodeID, _ b: NodeID) -> Bool {
        state.withLock { !$0.isolated.contains(a) && !$0.isolated.contains(b) }
    }

    // MARK: - used by the transports

    func register(_ t: InMemoryPeerTransport) {
        state.withLock { s in
            s.endpoints[t.id] = t
            if s.queues[t.id] == nil { s.queues[t.id] = DispatchQueue(label: "in-memory-peer-\(t.id)") }
        }
    }

    func unregister(_ t: InMemoryPeerTransport) {
        state.withLock { s in
            if s.endpoints[t.id] === t { s.endpoints[t.id] = nil }
        }
    }

    /// The queue deliveries to `id` run on, if `id` ever started.
    func queue(_ id: NodeID) -> DispatchQueue? { state.withLock { $0.queues[id] } }

    /// The running transport of `id` if `from` can reach it now.
    func reachable(_ id: NodeID, from: NodeID) -> InMemoryPeerTransport? {
        state.withLock { s in
            guard !s.isolated.contains(id), !s.isolated.contains(from) else { return nil }
            return s.endpoints[id]
        }
    }

    func isListening(_ id: NodeID) -> Bool { state.withLock { $0.endpoints[id] != nil } }

    func send(_ frame: [UInt8], from: NodeID, to: NodeID) {
        let link = Link(from: from, to: to)
        let queue = state.withLock { s -> DispatchQueue? in
            guard !s.isolated.contains(from), !s.isolated.contains(to), s.endpoints[to] != nil,
                  let q = s.queues[to], s.inFlight[link, default: 0] < Self.linkFramesMax else {
                s.framesDropped += 1
                return nil
            }
            s.inFlight[link, default: 0] += 1
            return q
        }
        guard let queue else { return }
        queue.async { [self] in
            state.withLock { $0.inFlight[link, default: 1] -= 1 }
            guard let destination = reachable(to, from: from) else { return }
            destination.deliver(frames: [frame], from: from)
        }
    }
}

/// One broker incarnation's view of an `InMemoryPeerNetwork`.
final class InMemoryPeerTransport: PeerTransport, Sendable {
    let id: NodeID
    let network: InMemoryPeerNetwork
    private let clock = ContinuousClock()

    private struct State {
        var handler: (any PeerHandler)?
        var stopped = false
        var lastContact: [NodeID: ContinuousClock.Instant] = [:]
        var nextCall = 0
        var pending: [Int: Once<Result<[UInt8], BrokerError>>] = [:]
    }
    private let state = Mutex(State())

    init(id: NodeID, network: InMemoryPeerNetwork) {
        self.id = id
        self.network = network
    }

    var handler: (any PeerHandler)? { state.withLock { $0.stopped ? nil : $0.handler } }

    func start(handler: any PeerHandler) throws(BrokerError) {
        let ok = state.withLock { s -> Bool in
            guard s.handler == nil, !s.stopped else { return false }
            s.handler = handler
            return true
        }
        guard ok else { throw .invalidConfig("in-memory transport of broker \(id) started twice") }
        network.register(self)
    }

    func send(_ frame: [UInt8], to peer: NodeID) {
        guard !state.withLock({ $0.stopped }) else { return }
        network.send(frame, from: id, to: peer)
    }

    func call(_ peer: NodeID, method: String, body: [UInt8], timeoutMilliseconds: Int,
              completion: @escaping @Sendable (Result<[UInt8], BrokerError>) -> Void) {
        let once = Once<Result<[UInt8], BrokerError>>(completion)
        let callID = state.withLock { s -> Int? in
            guard !s.stopped else { return nil }
            s.nextCall += 1
            s.pending[s.nextCall] = once
            return s.nextCall
        }
        guard let callID else { return DispatchQueue.global().async { once.call(.failure(.shuttingDown)) } }
        let finish: @Sendable (Result<[UInt8], BrokerError>) -> Void = { [self] result in
            state.withLock { _ = $0.pending.removeValue(forKey: callID) }
            once.call(result)
        }
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(max(timeoutMilliseconds, 1))) {
            finish(.failure(.unavailable("in-memory call \(method) to broker \(peer) timed out after \(timeoutMilliseconds) ms")))
        }
        // A broker that is not running refuses the connection (nothing delivered); a cut drops it.
        guard network.isListening(peer), let queue = network.queue(peer) else {
            return DispatchQueue.global().async { finish(.failure(.unavailable("Couldn't connect to server (in-memory broker \(peer) is not running)"))) }
        }
        guard network.connected(id, peer) else { return }
        let caller = id
        queue.async { [self] in
            guard let destination = network.reachable(peer, from: caller), let handler = destination.handler else { return }
            destination.touch(caller)
            handler.handle(method: method, body: body, from: caller) { [self] result in
                // The answer crosses the network too: dropped if either side is cut off by then.
                guard network.connected(caller, peer), let back = network.queue(caller) else { return }
                back.async { [self] in
                    guard network.connected(caller, peer) else { return }
                    touch(peer)
                    finish(result)
                }
            }
        }
    }

    func deliver(frames: [[UInt8]], from peer: NodeID) {
        guard let handler else { return }
        touch(peer)
        handler.receive(frames: frames, from: peer)
    }

    func touch(_ peer: NodeID) {
        let now = clock.now
        state.withLock { $0.lastContact[peer] = now }
    }

    func millisecondsSinceContact(_ peer: NodeID) -> Int64? {
        guard let last = state.withLock({ $0.lastContact[peer] }) else { return nil }
        let d = clock.now - last
        return d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000
    }

    func stop() {
        let pending = state.withLock { s -> [Once<Result<[UInt8], BrokerError>>] in
            s.stopped = true
            s.handler = nil
            defer { s.pending.removeAll() }
            return Array(s.pending.values)
        }
        network.unregister(self)
        for p in pending { p.call(.failure(.shuttingDown)) }
    }
}

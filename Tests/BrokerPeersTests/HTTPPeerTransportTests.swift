import BrokerModel
import BrokerRuntime
import Glibc
import Logging
import Synchronization
import MicroHTTP
import Testing

@testable import BrokerPeers

/// Records what a transport delivers. Call methods: "echo" answers the body, "fail" answers a
/// BrokerError, "hang" never answers.
final class RecordingHandler: PeerHandler {
    let frames = Mutex<[NodeID: [[UInt8]]]>([:])
    let calls = Mutex(0)

    func receive(frames: [[UInt8]], from peer: NodeID) {
        self.frames.withLock { $0[peer, default: []].append(contentsOf: frames) }
    }

    func handle(method: String, body: [UInt8], from peer: NodeID, reply: @escaping @Sendable (Result<[UInt8], BrokerError>) -> Void) {
        calls.withLock { $0 += 1 }
        switch method {
        case "echo": reply(.success(body + Array("/from \(peer)".utf8)))
        case "fail": reply(.failure(.notLeader("not the leader of t-0", leader: NodeID(3))))
        case "hang": break
        default: reply(.failure(.notFound("no method \(method)")))
        }
    }

    func received(from peer: NodeID) -> [[UInt8]] { frames.withLock { $0[peer] ?? [] } }
}

final class Outcome: Sendable {
    let value = Mutex<Result<[UInt8], BrokerError>?>(nil)
    let count = Mutex(0)
    var completion: @Sendable (Result<[UInt8], BrokerError>) -> Void {
        { result in
            self.count.withLock { $0 += 1 }
            self.value.withLock { $0 = result }
        }
    }
    var result: Result<[UInt8], BrokerError>? { value.withLock { $0 } }
}

/// Polls `condition` every 5 ms for up to `seconds` (generous: the machine is shared).
func eventually(_ seconds: Double = 10, _ condition: () -> Bool) -> Bool {
    let deadline = HTTPPeerTransport.nowNanoseconds() + UInt64(seconds * 1e9)
    while HTTPPeerTransport.nowNanoseconds() < deadline {
        if condition() { return true }
        usleep(5_000)
    }
    return condition()
}

func frame(_ i: Int, size: Int = 8) -> [UInt8] {
    var bytes = [UInt8](repeating: 0xAB, count: max(size, 4))
    bytes[0] = UInt8(truncatingIfNeeded: i >> 24)
    bytes[1] = UInt8(truncatingIfNeeded: i >> 16)
    bytes[2] = UInt8(truncatingIfNeeded: i >> 8)
    bytes[3] = UInt8(truncatingIfNeeded: i)
    return bytes
}

func index(_ frame: [UInt8]) -> Int {
    Int(frame[0]) << 24 | Int(frame[1]) << 16 | Int(frame[2]) << 8 | Int(frame[3])
}

/// Transports on 127.0.0.1, ephemeral ports, each told every other's address once all are listening.
func cluster(
    _ ids: [Int32], secret: String = "s3cret", tweak: (inout PeerTransportConfiguration) -> Void = { _ in }
) throws -> [(HTTPPeerTransport, RecordingHandler)] {
    var nodes: [(HTTPPeerTransport, RecordingHandler)] = []
    for id in ids {
        var configuration = PeerTransportConfiguration(nodeID: NodeID(id), secret: secret)
        tweak(&configuration)
        let transport = HTTPPeerTransport(configuration: configuration, logger: Logger(label: "test.peers.\(id)"))
        let handler = RecordingHandler()
        try transport.start(handler: handler)
        nodes.append((transport, handler))
    }
    for (a, _) in nodes {
        for (b, _) in nodes where a !== b {
            b.setPeerAddress(a.nodeID, "127.0.0.1:\(a.port)")
        }
    }
    return nodes
}

@Suite("HTTPPeerTransport") struct HTTPPeerTransportTests {
    @Test func framesArriveInOrderBatchedIntoFewerPosts() throws {
        let nodes = try cluster([1, 2, 3])
        defer { nodes.forEach { $0.0.stop() } }
        let (sender, _) = nodes[0]
        let n = 3_000
        for i in 0..<n {
            sender.send(frame(i), to: NodeID(2))
            sender.send(frame(i, size: 100), to: NodeID(3))
        }
        // Every frame is either delivered or (rarely) discarded because its POST lost a race with the
        // next one on the other connection; either way the accounting must close.
        for (receiver, handler) in nodes.dropFirst() {
            let ok = eventually {
                let m = receiver.metrics
                return handler.received(from: NodeID(1)).count + m.framesReceivedOutOfOrder == n
            }
            #expect(ok)
            let indices = handler.received(from: NodeID(1)).map(index)
            #expect(indices == indices.sorted() && Set(indices).count == indices.count, "order preserved per peer")
            // On a healthy loopback nothing is lost: POSTs overtaking each other are held, not dropped.
            #expect(indices == Array(0..<n))
            #expect(receiver.metrics.framePostsReceived < indices.count, "frames were batched")
        }
        // The sender counts a frame sent when it reads the 204, which may come after delivery.
        #expect(eventually { sender.metrics.framesSent == 2 * n })
        let m = sender.metrics
        #expect(m.framesQueued == 2 * n)
        #expect(m.framesSent == 2 * n)
        #expect(m.framePostsSent < 2 * n)
        #expect(m.framesDroppedAtSend == 0)
        #expect(sender.millisecondsSinceContact(NodeID(2)) != nil)
        #expect(nodes[1].0.millisecondsSinceContact(NodeID(1)) != nil)
        #expect(nodes[1].0.millisecondsSinceContact(NodeID(3)) == nil, "node 3 never talked to node 2")
    }

    @Test func callsAnswerWithBodyOrTypedBrokerError() throws {
        let nodes = try cluster([1, 2])
        defer { nodes.forEach { $0.0.stop() } }
        let (client, _) = nodes[0]
        let echo = Outcome(), failure = Outcome(), unknown = Outcome()
        client.call(NodeID(2), method: "echo", body: Array("hello".utf8), timeoutMilliseconds: 10_000, completion: echo.completion)
        client.call(NodeID(2), method: "fail", body: [], timeoutMilliseconds: 10_000, completion: failure.completion)
        client.call(NodeID(2), method: "no such/thing", body: [1, 2, 3], timeoutMilliseconds: 10_000, completion: unknown.completion)
        #expect(eventually { echo.result != nil && failure.result != nil && unknown.result != nil })
        #expect(echo.result == .success(Array("hello/from 1".utf8)))
        #expect(failure.result == .failure(.notLeader("not the leader of t-0", leader: NodeID(3))))
        #expect(unknown.result == .failure(.notFound("no method no such/thing")))
        // Many concurrent calls each complete exactly once.
        let many = (0..<200).map { _ in Outcome() }
        for (i, o) in many.enumerated() {
            client.call(NodeID(2), method: "echo", body: frame(i), timeoutMilliseconds: 10_000, completion: o.completion)
        }
        #expect(eventually { many.allSatisfy { $0.result != nil } })
        for (i, o) in many.enumerated() {
            #expect(o.result == .success(frame(i) + Array("/from 1".utf8)))
        }
        usleep(50_000)
        #expect(many.allSatisfy { $0.count.withLock { $0 } == 1 } && echo.count.withLock { $0 } == 1)
        #expect(client.metrics.callsSucceeded == 201 && client.metrics.callsFailedRemotely == 2)
    }

    @Test func wrongSecretDeliversNothingUnknownNodeOnlyCalls() throws {
        let good = try cluster([1, 2], secret: "right")
        defer { good.forEach { $0.0.stop() } }
        let (target, handler) = good[1]
        // Node 1 with the wrong secret: nothing. Node 7 (unknown to node 2) with the right one: its
        // frames are refused, its call is delivered (a joining broker registers through a call).
        var intruders: [HTTPPeerTransport] = []
        for (id, secret) in [(Int32(1), "wrong"), (Int32(7), "right")] {
            let t = HTTPPeerTransport(
                configuration: PeerTransportConfiguration(nodeID: NodeID(id), peers: [NodeID(2): "127.0.0.1:\(target.port)"], secret: secret),
                logger: Logger(label: "test.intruder"))
            try t.start(handler: RecordingHandler())
            intruders.append(t)
        }
        defer { intruders.forEach { $0.stop() } }
        var outcomes: [Outcome] = []
        for t in intruders {
            for i in 0..<10 { t.send(frame(i), to: NodeID(2)) }
            let o = Outcome()
            t.call(NodeID(2), method: "echo", body: [], timeoutMilliseconds: 10_000, completion: o.completion)
            outcomes.append(o)
        }
        #expect(eventually { outcomes.allSatisfy { $0.result != nil } })
        guard case .failure(.unavailable) = outcomes[0].result else {
            Issue.record("expected unavailable, got \(String(describing: outcomes[0].result))")
            return
        }
        guard case .success = outcomes[1].result else {
            Issue.record("expected the known-secret call to be delivered, got \(String(describing: outcomes[1].result))")
            return
        }
        #expect(eventually { intruders.allSatisfy { $0.metrics.framePostsFailed > 0 } })
        #expect(handler.frames.withLock { $0.isEmpty })
        #expect(handler.calls.withLock { $0 } == 1)
        #expect(target.metrics.requestsRefused >= 3)
    }

    @Test func downPeerFailsCallsDropsFramesAndRecovers() throws {
        // Learn a free port, then leave it closed: node 2 is "down".
        let probe = try cluster([2])
        let port = probe[0].0.port
        probe[0].0.stop()

        let client = HTTPPeerTransport(
            configuration: {
                var c = PeerTransportConfiguration(nodeID: NodeID(1), peers: [NodeID(2): "127.0.0.1:\(port)"], secret: "s")
                c.queuedBytesPerPeerMax = 16 * 1024
                c.backoffMaxMilliseconds = 200
                return c
            }(), logger: Logger(label: "test.client"))
        let clientHandler = RecordingHandler()
        try client.start(handler: clientHandler)
        defer { client.stop() }

        let down = Outcome()
        client.call(NodeID(2), method: "echo", body: [], timeoutMilliseconds: 5_000, completion: down.completion)
        #expect(eventually { down.result != nil })
        guard case .failure(.unavailable(let message)) = down.result else {
            Issue.record("expected unavailable, got \(String(describing: down.result))")
            return
        }
        #expect(message.contains("peer 2 unreachable"))

        // Far more than the queue holds: the excess is dropped, the queue stays bounded.
        for i in 0..<2_000 { client.send(frame(i, size: 1_000), to: NodeID(2)) }
        #expect(client.metrics.framesDroppedAtSend > 0)
        #expect(client.queuedFrames(for: NodeID(2)) <= 16)
        #expect(eventually { client.metrics.framePostsFailed > 0 })
        #expect(client.millisecondsSinceContact(NodeID(2)) == nil)

        // Node 2 comes up on the same port: traffic resumes on its own.
        var configuration = PeerTransportConfiguration(nodeID: NodeID(2), listenPort: port, peers: [NodeID(1): "127.0.0.1:\(client.port)"], secret: "s")
        configuration.backoffMaxMilliseconds = 200
        let server = HTTPPeerTransport(configuration: configuration, logger: Logger(label: "test.server"))
        let handler = RecordingHandler()
        try server.start(handler: handler)
        defer { server.stop() }
        var next = 10_000
        let resumed = eventually {
            client.send(frame(next), to: NodeID(2))
            next += 1
            return handler.received(from: NodeID(1)).contains { index($0) >= 10_000 }
        }
        #expect(resumed)
        let up = Outcome()
        client.call(NodeID(2), method: "echo", body: [7], timeoutMilliseconds: 10_000, completion: up.completion)
        #expect(eventually { up.result != nil })
        #expect(up.result == .success([7] + Array("/from 1".utf8)))
        #expect(client.millisecondsSinceContact(NodeID(2)) != nil)
        // And the other way round.
        server.send([1, 2, 3], to: NodeID(1))
        #expect(eventually { clientHandler.received(from: NodeID(2)) == [[1, 2, 3]] })
    }

    @Test func stopCompletesPendingCallsWithShuttingDown() throws {
        let nodes = try cluster([1, 2])
        defer { nodes[1].0.stop() }
        let (client, _) = nodes[0]
        let hanging = Outcome()
        client.call(NodeID(2), method: "hang", body: [], timeoutMilliseconds: 60_000, completion: hanging.completion)
        #expect(eventually { nodes[1].1.calls.withLock { $0 } == 1 })
        client.stop()
        #expect(hanging.result == .failure(.shuttingDown))
        let late = Outcome()
        client.call(NodeID(2), method: "echo", body: [], timeoutMilliseconds: 1_000, completion: late.completion)
        #expect(late.result == .failure(.shuttingDown))
        #expect(hanging.count.withLock { $0 } == 1)
    }

    @Test func callsBeyondTheLimitAreOverloaded() throws {
        let nodes = try cluster([1, 2]) { $0.callsInFlightMax = 3 }
        defer { nodes.forEach { $0.0.stop() } }
        let (client, _) = nodes[0]
        let outcomes = (0..<4).map { _ in Outcome() }
        for o in outcomes { client.call(NodeID(2), method: "hang", body: [], timeoutMilliseconds: 60_000, completion: o.completion) }
        guard case .failure(.overloaded) = outcomes[3].result else {
            Issue.record("expected overloaded, got \(String(describing: outcomes[3].result))")
            return
        }
        #expect(client.metrics.callsRejectedOverloaded == 1)
    }

    @Test func callTimeoutIsUnavailable() throws {
        let nodes = try cluster([1, 2])
        defer { nodes.forEach { $0.0.stop() } }
        let o = Outcome()
        nodes[0].0.call(NodeID(2), method: "hang", body: [], timeoutMilliseconds: 200, completion: o.completion)
        #expect(eventually { o.result != nil })
        guard case .failure(.unavailable) = o.result else {
            Issue.record("expected unavailable, got \(String(describing: o.result))")
            return
        }
    }

    @Test func frameBodyCodecRejectsMalformedBodies() {
        var body: [UInt8] = []
        HTTPPeerTransport.encodeFrame([1, 2], into: &body)
        HTTPPeerTransport.encodeFrame([], into: &body)
        #expect(HTTPPeerTransport.decodeFrames(body) == [[1, 2], []])
        #expect(HTTPPeerTransport.decodeFrames(Array(body.dropLast())) == nil)
        #expect(HTTPPeerTransport.decodeFrames([0, 0, 0]) == nil)
        #expect(HTTPPeerTransport.decodeFrames([0xFF, 0xFF, 0xFF, 0xFF, 1]) == nil)
        #expect(HTTPPeerTransport.constantTimeEquals(Array("abc".utf8), Array("abc".utf8)))
        #expect(!HTTPPeerTransport.constantTimeEquals(Array("abc".utf8), Array("abd".utf8)))
        #expect(!HTTPPeerTransport.constantTimeEquals(Array("abc".utf8), Array("abcd".utf8)))
        #expect(!HTTPPeerTransport.constantTimeEquals([], Array("a".utf8)))
    }

    /// The receiver's reordering: a POST overtaking its predecessor is held, then both are delivered in
    /// order; a lost predecessor is skipped once a POST `window` numbers later proves it finished.
    @Test func inboxHoldsOvertakingPostsAndSkipsLostOnes() {
        let inbox = HTTPPeerTransport.Inbox()
        var delivered: [[UInt8]] = []
        func post(_ seq: UInt64, incarnation: UInt64 = 9) -> (HTTPPeerTransport.Inbox.Outcome, ResponseRecorder) {
            let recorder = ResponseRecorder()
            let outcome = inbox.accept(frames: [[UInt8(seq)]], responder: recorder.responder, incarnation: incarnation, sequence: seq, window: 2) {
                delivered.append(contentsOf: $0)
            }
            for r in outcome.answer { r.respond(HTTPResponse(status: 204)) }
            return (outcome, recorder)
        }
        let (o2, r2) = post(2)
        #expect(o2.held && delivered.isEmpty && r2.answerCount == 0)
        let (o1, r1) = post(1)
        #expect(delivered == [[1], [2]] && o1.deliveredPosts == 2 && r1.answerCount == 1 && r2.answerCount == 1)
        // 3 is lost; 4 waits (3 may still be on its way) ...
        let (o4, r4) = post(4)
        #expect(o4.held && r4.answerCount == 0)
        // ... until 5 proves 3 finished at the sender (only 2 in flight): 4 and 5 go, 3 is skipped.
        let (_, r5) = post(5)
        #expect(delivered == [[1], [2], [4], [5]] && r4.answerCount == 1 && r5.answerCount == 1)
        // 3 arriving late would reorder: dropped (answered, not delivered).
        let (late, r3) = post(3)
        #expect(late.stalePosts == 1 && r3.answerCount == 1 && delivered.count == 4)
        // A restarted sender (new incarnation) starts again at 1.
        _ = post(1, incarnation: 10)
        #expect(delivered.last == [1] && delivered.count == 5)
    }
}

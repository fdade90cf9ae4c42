import BrokerModel
import ClusterState
import Consensus
import Dispatch
import Foundation
import LogStorage
import Logging
import Synchronization

/// One broker of a cluster: the metadata log (a Raft group over every initial member), this broker's
/// partition replicas (one Raft group each), the controller's duties while this broker leads the
/// metadata log, and the routing that lets any broker answer any request.
///
/// Thread-safety: `state` (metadata view, replicas, leader reports) sits behind a Mutex; each replica
/// has its own. One driver thread runs every Raft group (`RaftDriver`), one ticker thread keeps time.
/// HTTP threads never wait: produce and read forward or park and answer through completions.
final class ClusterNode: Sendable {
    let configuration: BrokerConfiguration
    let cluster: ClusterConfiguration
    let transport: any PeerTransport
    let fileSystem: any FileSystem
    let logger: Logger
    let clock: @Sendable () -> Int64
    let monotonic = ContinuousClock()
    let started: ContinuousClock.Instant
    let driver = RaftDriver()
    let state = Mutex(NodeState())
    let isStopping = Atomic<Bool>(false)
    let parked = Atomic<Int>(0)
    let stickyCounter = Atomic<Int>(0)
    let metrics: BrokerMetrics
    let advertisedPort: @Sendable () -> Int
    let metadataReplica: Replica
    /// Set at start; let go of at shutdown (the coordinator's host holds this node).
    let groupsBox = Mutex<GroupCoordinator?>(nil)
    private let tickerStopped = DispatchSemaphore(value: 0)

    static let metadataGroup = TopicPartition(TopicName("__cluster")!, PartitionID(0))

    struct NodeState: Sendable {
        var metadata = MetadataState()
        /// Last metadata log offset applied (control batches included).
        var metadataApplied = Offset(-1)
        var replicas: [TopicPartition: Replica] = [:]
        var reports: [TopicPartition: (report: LeaderReport, receivedMilliseconds: Int64)] = [:]
        var applyWaiters: [(offset: Offset, completion: @Sendable (Result<Void, BrokerError>) -> Void)] = []
        var controller = ControllerState()
        var registrationInFlight = false
        /// Directories left by topics deleted while this broker was down are removed once per start.
        var orphansSwept = false
        var ticks: Int64 = 0
    }

    init(configuration: BrokerConfiguration, cluster: ClusterConfiguration, transport: any PeerTransport,
         fileSystem: any FileSystem, logger: Logger, metrics: BrokerMetrics,
         clock: @escaping @Sendable () -> Int64, advertisedPort: @escaping @Sendable () -> Int) throws(BrokerError) {
        self.configuration = configuration
        self.cluster = cluster
        self.transport = transport
        self.fileSystem = fileSystem
        self.logger = logger
        self.metrics = metrics
        self.clock = clock
        self.advertisedPort = advertisedPort
        self.started = monotonic.now
        // The initial members vote on the metadata. A broker started with an id outside the list
        // joins the running cluster: the controller makes it a learner of the metadata log.
        let voters = Set(cluster.members.keys)
        let directory = configuration.dataDirectory + "/cluster-metadata"
        var raft = RaftConfiguration(id: configuration.nodeID, randomSeed: UInt64.random(in: 0...UInt64.max))
        raft.electionTicks = cluster.electionTicks
        let storage: ReplicaStorage
        do {
            storage = try ReplicaStorage.open(directory: directory, fileSystem: fileSystem, logConfig: LogConfig(),
                                              initialMembership: Membership(voters: voters), nowMilliseconds: clock())
        } catch {
            throw .storage("cannot open the metadata log in \(directory): \(error)")
        }
        let node = RaftNode(configuration: raft, storage: storage)
        metadataReplica = Replica(group: Self.metadataGroup, topicID: 0,
                                  state: ReplicaState(node: node, config: TopicConfig(), minInSyncReplicas: voters.count / 2 + 1))
    }

    var nodeID: NodeID { configuration.nodeID }

    func monotonicMilliseconds() -> Int64 {
        let d = monotonic.now - started
        return d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000
    }

    // MARK: - lifecycle

    func start() throws(BrokerError) {
        try fileSystem.createDirectoryOrThrow(configuration.dataDirectory + "/topics")
        startGroupCoordinator()
        try transport.start(handler: self)
        driver.start(host: self)
        // The metadata node re-delivers its committed log as Ready.committedEntries; replay happens
        // on the driver thread like live operation (one path, STYLE.md #5).
        metadataReplica.state.withLock { $0.isScheduled = true }
        driver.schedule(metadataReplica)
        let thread = Thread { [self] in runTicker() }
        thread.name = "petrel-ticker"
        thread.start()
        logger.info("cluster node started", metadata: ["node": "\(nodeID)", "members": "\(cluster.members.keys.sorted())"])
    }

    func shutdown() {
        guard !isStopping.exchange(true, ordering: .acquiringAndReleasing) else { return }
        tickerStopped.wait()
        let replicas = state.withLock { Array($0.replicas.values) } + [metadataReplica]
        // Answer everyone first: producers get "outcome unknown", readers what is there.
        for r in replicas {
            let (appends, readers) = r.state.withLock { s -> ([AppendWaiter], [ReadWaiter]) in
                s.closedReason = .shuttingDown
                defer {
                    s.appendWaiters.removeAll()
                    s.readWaiters.removeAll()
                }
                return (s.appendWaiters, s.readWaiters)
            }
            for a in appends { a.completion(.failure(.unavailable("the broker is shutting down; the write may or may not be committed"))) }
            for w in readers { serve(w, on: r) }
        }
        let waiters = state.withLock { s in
            defer { s.applyWaiters.removeAll() }
            return s.applyWaiters
        }
        for w in waiters { w.completion(.failure(.shuttingDown)) }
        driver.stop()
        transport.stop()
        for r in replicas {
            r.state.withLock { s in
                if let sync = s.storage.beginSync() {
                    try? sync.perform()
                    s.storage.completeSync(sync)
                }
                try? s.storage.close()
            }
        }
        groupsBox.withLock { $0 = nil }
        logger.info("cluster node stopped")
    }

    var isReady: Bool {
        guard !isStopping.load(ordering: .relaxed) else { return false }
        let leaderKnown = metadataReplica.state.withLock { $0.leader != nil }
        return leaderKnown && state.withLock { $0.metadata.brokers[nodeID]?.status == .alive }
    }

    // MARK: - time

    private func runTicker() {
        let interval = UInt32(cluster.tickMilliseconds * 1000)
        while !isStopping.load(ordering: .relaxed) {
            usleep(interval)
            if isStopping.load(ordering: .relaxed) { break }
            tick()
        }
        tickerStopped.signal()
    }

    private func tick() {
        let (replicas, ticks) = state.withLock { s -> ([Replica], Int64) in
            s.ticks += 1
            return (Array(s.replicas.values), s.ticks)
        }
        driver.submit(.tick, to: metadataReplica)
        for r in replicas { driver.submit(.tick, to: r) }
        if ticks % 5 == 0 { sendReports() }
        if ticks % 5 == 2 { maintainRegistration() }
        if ticks % 10 == 7 { controllerDuties(ticks: ticks) }
        if ticks % 5 == 3 { driveReassignments() }
        if ticks % 2 == 1 { groupCoordinator?.tick() }
        let retentionTicks = max(1, configuration.retentionCheckIntervalMilliseconds / Int64(cluster.tickMilliseconds))
        if ticks % retentionTicks == 0 { for r in replicas { driver.submit(.retention, to: r) } }
        runControllerQueue()
    }

    /// "No such topic" is only known once this broker has caught up with the metadata; before, a
    /// restarted broker would deny topics that exist (found by the cluster process tests).
    func unknownTopic(_ name: TopicName) -> BrokerError {
        isReady ? .unknownTopic(name.rawValue) : .unavailable("broker \(nodeID) is still catching up with the cluster metadata; retry")
    }

    func replica(_ group: TopicPartition) -> Replica? {
        group == Self.metadataGroup ? metadataReplica : state.withLock { $0.replicas[group] }
    }
}

extension FileSystem {
    func createDirectoryOrThrow(_ path: String) throws(BrokerError) {
        do { try createDirectory(path) } catch { throw .storage("cannot create \(path): \(error)") }
    }
}

// MARK: - the driver's host

extension ClusterNode: RaftDriverHost {
    func nowMilliseconds() -> Int64 { clock() }

    func send(_ envelopes: [GroupEnvelope], to peer: NodeID) {
        guard peer != nodeID else { return }
        transport.send(ClusterWire.frame(.raft, RaftWire.encode(envelopes)), to: peer)
    }

    func softStateChanged(_ replica: Replica, _ soft: SoftState) {
        logger.debug("raft \(replica.group): \(soft)")
        if replica === metadataReplica, soft.role == .leader {
            state.withLock { $0.controller.leaderSinceMilliseconds = monotonicMilliseconds() }
        }
        // A new leader tells the others at once, so routing does not wait for the next report.
        if soft.role == .leader { sendReports() }
    }

    func log(events: [RaftEvent], of replica: Replica) {
        for e in events {
            switch e {
            case .becameLeader, .steppedDownNoQuorum, .truncated, .snapshotRestored, .membershipChanged, .removedSelfSteppingDown:
                logger.info("raft \(replica.group): \(e)")
            default:
                logger.trace("raft \(replica.group): \(e)")
            }
        }
    }
}

// MARK: - peers

extension ClusterNode: PeerHandler {
    func receive(frames: [[UInt8]], from peer: NodeID) {
        for frame in frames {
            guard let kind = frame.first.flatMap(ClusterWire.FrameKind.init(rawValue:)) else { continue }
            let payload = Array(frame.dropFirst())
            switch kind {
            case .raft:
                guard let envelopes = try? RaftWire.decode(payload) else {
                    logger.warning("undecodable Raft frame from \(peer)")
                    continue
                }
                for g in envelopes {
                    // A frame speaks for its sender only, and only to this node.
                    guard g.envelope.from == peer, g.envelope.to == nodeID, let r = replica(g.group) else { continue }
                    driver.submit(.step(g.envelope), to: r)
                }
            case .report:
                guard let reports = try? ClusterWire.decode(payload, { (r: inout ByteReader) throws(DecodeError) in try LeaderReport.decode(&r) }) else { continue }
                let now = monotonicMilliseconds()
                state.withLock { s in
                    for report in reports where report.leader == peer {
                        // A lower term loses only to a report that still counts (younger than 3 s, as
                        // in describe and routing): a topic deleted and created again under its name
                        // starts its terms over, and must not be shadowed for ever by its old leader.
                        if let old = s.reports[report.group], old.report.term > report.term, now - old.receivedMilliseconds < 3_000 { continue }
                        s.reports[report.group] = (report, now)
                    }
                }
            }
        }
    }

    func handle(method: String, body: [UInt8], from peer: NodeID, reply: @escaping @Sendable (Result<[UInt8], BrokerError>) -> Void) {
        do throws(BrokerError) {
            switch method {
            case PeerCall.produce:
                let call = try decoding { () throws(DecodeError) in try PeerCall.Produce.decode(body) }
                produceLocally(call.group, batches: call.batches, acks: call.acks) { result in
                    reply(result.map { PeerCall.encodeOffsets($0) })
                }
            case PeerCall.read:
                let request = try decoding { () throws(DecodeError) in try PeerCall.decodeReadRequest(body) }
                readLocally(request, allowFollower: false) { result in reply(result.map { PeerCall.encode($0) }) }
            case PeerCall.metadata:
                let command = try decoding { () throws(DecodeError) in try MetadataCommandCodec.decodeCommand(body) }
                submitAsController(command) { result in reply(result.map { PeerCall.encodeOffsets([$0]) }) }
            case PeerCall.offsets:
                let group = try decoding { () throws(DecodeError) in
                    try ClusterWire.decode(body) { (r: inout ByteReader) throws(DecodeError) in try ClusterWire.topicPartition(&r) }
                }
                reply(.success(PeerCall.encode(try localLeaderOffsets(group))))
            case PeerCall.group:
                let call = try GroupWire.decode(GroupCall.self, body)
                guard let coordinator = groupCoordinator else { throw .shuttingDown }
                // Served here or refused with notLeader: a forwarded group call is never forwarded again.
                coordinator.handle(call) { result in reply(result.map { GroupWire.encode($0.wire) }) }
            case PeerCall.transfer:
                let (group, target) = try decoding { () throws(DecodeError) in
                    try ClusterWire.decode(body) { (r: inout ByteReader) throws(DecodeError) in (try ClusterWire.topicPartition(&r), NodeID(try r.int32())) }
                }
                if let r = replica(group) { driver.submit(.transfer(to: target), to: r) }
                reply(.success([]))
            default:
                throw .notFound("unknown internal method '\(method)'")
            }
        } catch {
            reply(.failure(error))
        }
    }

    func decoding<T>(_ body: () throws(DecodeError) -> T) throws(BrokerError) -> T {
        do { return try body() } catch { throw .badRequest("undecodable internal request: \(error)") }
    }
}

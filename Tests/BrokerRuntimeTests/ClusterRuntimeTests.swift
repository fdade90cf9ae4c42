import BrokerModel
import Dispatch
import Foundation
import Synchronization
import Testing
@testable import BrokerRuntime

/// A test failed to reach a condition or an answer in time (the message says which).
struct ClusterTestTimeout: Error, CustomStringConvertible {
    var description: String
}

/// Three `Broker`s in this process joined by an `InMemoryPeerNetwork`, each on its own data
/// directory under one temporary root (removed at the end). Ticks are short so elections take
/// a fraction of a second; no assertion depends on timing — conditions are polled with generous
/// deadlines.
final class TestCluster {
    let network = InMemoryPeerNetwork()
    let root = NSTemporaryDirectory() + "petrel-cluster-\(UUID().uuidString)"
    let ids = [NodeID(1), NodeID(2), NodeID(3)]
    private(set) var brokers: [NodeID: Broker] = [:]
    let tune: @Sendable (inout ClusterConfiguration) -> Void

    init(tune: @escaping @Sendable (inout ClusterConfiguration) -> Void = { _ in }) throws {
        self.tune = tune
        for id in ids { try start(id) }
    }

    func configuration(_ id: NodeID) -> BrokerConfiguration {
        var c = BrokerConfiguration()
        c.nodeID = id
        c.dataDirectory = "\(root)/node\(id)"
        c.advertisedPort = 18_000 + Int(id.rawValue)
        var members: [NodeID: String] = [:]
        for m in ids { members[m] = "node\(m):1" }
        var cluster = ClusterConfiguration(members: members, internalAddress: "node\(id):1", rack: "rack-\(id)")
        cluster.tickMilliseconds = 20
        cluster.electionTicks = 10
        cluster.produceTimeoutMilliseconds = 2_000
        cluster.forwardTimeoutMilliseconds = 3_000
        tune(&cluster)
        c.cluster = cluster
        return c
    }

    /// Starts (or restarts, on the same data directory) broker `id` with a new transport.
    func start(_ id: NodeID) throws {
        let b = Broker(configuration: configuration(id), transport: network.transport(for: id))
        try b.start()
        brokers[id] = b
    }

    func stop(_ id: NodeID) {
        brokers[id]?.shutdown()
        brokers[id] = nil
    }

    subscript(_ id: NodeID) -> Broker { brokers[id]! }
    var running: [Broker] { ids.compactMap { brokers[$0] } }

    deinit {
        network.healAll()
        for b in brokers.values { b.shutdown() }
        try? FileManager.default.removeItem(atPath: root)
    }

    // MARK: - waiting

    /// Polls `condition` until it holds or `seconds` pass (then throws, naming `what`).
    func eventually(_ what: String, seconds: Double = 20, _ condition: () throws -> Bool) throws {
        try TestClusterless().eventually(what, seconds: seconds, condition)
    }

    func answer<T: Sendable>(_ what: String, _ call: (@escaping @Sendable (Result<T, BrokerError>) -> Void) -> Void) throws -> Result<T, BrokerError> {
        try TestClusterless().answer(what, call)
    }

    func waitUntilReady() throws {
        try eventually("every broker ready, one controller everyone agrees on, three brokers alive") {
            let descriptions = running.map { $0.describeCluster() }
            return running.allSatisfy(\.isReady)
                && Set(descriptions.map(\.controller)).count == 1
                && descriptions[0].controller.rawValue >= 1
                && descriptions.allSatisfy { $0.brokers.filter(\.isAlive).count == 3 }
        }
    }

    var controller: NodeID { running[0].describeCluster().controller }

    // MARK: - topics, produce, read

    func createTopic(_ name: String, partitions: Int32, through id: NodeID, replicationFactor: Int? = 3, configs: [(String, String)] = []) throws -> TopicDescription {
        try answer("create \(name)") {
            self[id].createTopic(name: TopicName(name)!, partitions: partitions, replicationFactor: replicationFactor, configs: configs, completion: $0)
        }.get()
    }

    /// The partition's leader once `through` knows one.
    func leader(_ topic: String, _ partition: Int32, through id: NodeID? = nil, excluding: NodeID? = nil) throws -> NodeID {
        let asked = id.map { [self[$0]] } ?? running
        var found = NodeID(-1)
        try eventually("a leader of \(topic)-\(partition)") {
            for b in asked {
                let l = try b.describeTopic(TopicName(topic)!).partitions[Int(partition)].leader
                guard l.rawValue >= 0, l != excluding else { return false }
                found = l
            }
            return true
        }
        return found
    }

    func produce(_ topic: String, partition: Int32, values: [String], acks: Acks = .all, through id: NodeID) throws -> Result<[RecordPlacement], BrokerError> {
        let records = values.map { ProduceRecord(partition: PartitionID(partition), value: Array($0.utf8)) }
        return try answer("produce to \(topic) through \(id)") { self[id].produce(topic: TopicName(topic)!, records: records, acks: acks, completion: $0) }
    }

    /// Produces one record at a time until it is acknowledged (each attempt has its own value,
    /// so an attempt with an unknown outcome cannot be mistaken for a later one). Returns the
    /// acknowledged (offset, value) and the values of attempts that failed.
    func produceEventually(_ topic: String, partition: Int32, value: String, through id: NodeID,
                           failed: inout [(String, BrokerError)]) throws -> (Offset, String) {
        let deadline = Date().addingTimeInterval(25)
        var attempt = 0
        while Date() < deadline {
            let v = "\(value)#\(attempt)"
            attempt += 1
            switch try produce(topic, partition: partition, values: [v], through: id) {
            case .success(let p): return (p[0].offset!, v)
            case .failure(let e):
                failed.append((v, e))
                usleep(100_000)
            }
        }
        throw ClusterTestTimeout(description: "no produce to \(topic)-\(partition) through \(id) succeeded; last errors: \(failed.suffix(3))")
    }

    /// Every committed record of one partition as `id` serves it (through the leader, or from its
    /// own replica with `local`), with the high watermark of the answer.
    func records(_ topic: String, _ partition: Int32, through id: NodeID, local: Bool = false) throws -> (records: [(Int64, String)], highWatermark: Int64) {
        var out: [(Int64, String)] = []
        var next = OffsetSpec.earliest
        var highWatermark: Int64 = 0
        while true {
            let request = ReadRequest(topic: TopicName(topic)!, partition: PartitionID(partition), offset: next, maxRecords: 1_000, maxBytes: 1 << 20, waitMilliseconds: 0)
            let r = try answer("read \(topic)-\(partition) through \(id)") { self[id].read(request, local: local, completion: $0) }.get()
            highWatermark = r.highWatermark.rawValue
            let batch = try r.records().map { ($0.offset.rawValue, String(decoding: $0.record.value ?? [], as: UTF8.self)) }
            out += batch
            if r.nextOffset >= r.highWatermark || batch.isEmpty && r.nextOffset == r.fromOffset { break }
            next = .exact(r.nextOffset)
        }
        return (out, highWatermark)
    }

    func topicDirectories(_ name: String, on id: NodeID) -> [String] {
        let dir = configuration(id).dataDirectory + "/topics"
        return ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.hasPrefix(name + ".") }
    }
}

func same(_ a: [(Int64, String)], _ b: [(Int64, String)]) -> Bool {
    a.count == b.count && zip(a, b).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
}

/// Produce and read through every broker of three, failover, restart and deletion, with the
/// brokers in one process on an in-memory network. Serialized: three clusters at once on two cores
/// would only make elections flap.
@Suite(.serialized) struct ClusterRuntimeTests {
    @Test func threeBrokersFormAClusterReplicateAndDeleteATopic() throws {
        let c = try TestCluster()
        try c.waitUntilReady()
        let described = c.running.map { $0.describeCluster() }
        #expect(Set(described.map(\.clusterID)).count == 1)
        for d in described {
            #expect(d.brokers.map(\.id) == c.ids)
            #expect(d.brokers.map(\.port) == [18_001, 18_002, 18_003])
            #expect(d.brokers.map(\.rack) == ["rack-1", "rack-2", "rack-3"])
        }

        // Created through a broker that is not the controller: the command is forwarded.
        let controller = c.controller
        let creator = c.ids.first { $0 != controller }!
        let created = try c.createTopic("events", partitions: 3, through: creator)
        #expect(created.partitions.count == 3)
        #expect(created.replicationFactor == 3)
        for id in c.ids {
            try c.eventually("broker \(id) describes a leader for every partition of events") {
                let d = try c[id].describeTopic(TopicName("events")!)
                return d.partitions.count == 3 && d.partitions.allSatisfy { $0.leader.rawValue >= 0 }
            }
            let d = try c[id].describeTopic(TopicName("events")!)
            for p in d.partitions {
                #expect(Set(p.replicas) == Set(c.ids), "partition \(p.partition) on broker \(id): replicas \(p.replicas)")
                #expect(p.replicas.contains(p.leader))
            }
            #expect(c[id].listTopics() == [TopicName("events")!])
        }
        // Every broker holds a directory for each partition (the deletion check below needs them).
        for id in c.ids {
            try c.eventually("broker \(id) opened its three replicas") {
                let dirs = c.topicDirectories("events", on: id)
                guard dirs.count == 1 else { return false }
                let parts = try FileManager.default.contentsOfDirectory(atPath: c.configuration(id).dataDirectory + "/topics/" + dirs[0])
                return Set(parts) == ["0", "1", "2"]
            }
        }

        // acks=all through each broker, to each partition.
        var acknowledged: [Int32: [Int64: String]] = [:]
        for id in c.ids {
            for p: Int32 in 0..<3 {
                let values = (0..<4).map { "b\(id)-p\(p)-\($0)" }
                let placements = try c.produce("events", partition: p, values: values, through: id).get()
                #expect(placements.map(\.partition) == Array(repeating: PartitionID(p), count: 4))
                let offsets = placements.map { $0.offset!.rawValue }
                #expect(offsets == Array(offsets[0]..<offsets[0] + 4), "one request's records are consecutive")
                for (o, v) in zip(offsets, values) {
                    #expect(acknowledged[p, default: [:]][o] == nil, "offset \(o) of partition \(p) acknowledged twice")
                    acknowledged[p, default: [:]][o] = v
                }
            }
        }
        // Read back through each broker: exactly the acknowledged records at their offsets. (Offsets
        // are not contiguous from 0: each leader's term-start control batch takes one.)
        for p: Int32 in 0..<3 {
            let expected = acknowledged[p]!.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
            #expect(expected.count == 12)
            for id in c.ids {
                let (records, hw) = try c.records("events", p, through: id)
                #expect(same(records, expected), "partition \(p) read through \(id): \(records)")
                #expect(hw == expected.last!.0 + 1)
            }
        }

        // Every broker reports the leader's offsets and, once followers caught up, all three in sync.
        for id in c.ids {
            for p: Int32 in 0..<3 {
                let end = acknowledged[p]!.keys.max()! + 1
                try c.eventually("broker \(id) reports partition \(p) complete and fully in sync") {
                    let o = try c[id].offsets(topic: TopicName("events")!, partition: PartitionID(p))
                    let d = try c[id].describeTopic(TopicName("events")!).partitions[Int(p)]
                    return o.highWatermark.rawValue == end && o.logEndOffset.rawValue == end
                        && Set(d.inSyncReplicas) == Set(c.ids) && d.replicaStates.count == 3 && d.replicaStates.allSatisfy { $0.lag == 0 }
                }
            }
        }

        // Delete through a broker other than the controller: gone everywhere, directories too.
        let deleter = c.ids.first { $0 != c.controller }!
        try c.answer("delete events") { c[deleter].deleteTopic(TopicName("events")!, completion: $0) }.get()
        for id in c.ids {
            try c.eventually("events gone from broker \(id)") {
                guard case .failure(.unknownTopic) = Result(catching: { () throws(BrokerError) in try c[id].describeTopic(TopicName("events")!) }) else { return false }
                return c[id].listTopics().isEmpty
            }
            do {
                try c.eventually("the directories of events removed on broker \(id)") { c.topicDirectories("events", on: id).isEmpty }
            } catch {
                let left = c.topicDirectories("events", on: id).map { d in
                    "\(d): \((try? FileManager.default.contentsOfDirectory(atPath: c.configuration(id).dataDirectory + "/topics/" + d)) ?? [])"
                }
                Issue.record("\(error); left: \(left)")
            }
            #expect(c[id].describeCluster().topicCount == 0)
            let r = try c.answer("produce to a deleted topic") { c[id].produce(topic: TopicName("events")!, records: [ProduceRecord(value: [1])], acks: .all, completion: $0) }
            guard case .failure(.unknownTopic) = r else {
                Issue.record("produce to a deleted topic through \(id): \(r)")
                continue
            }
        }
    }

    @Test func isolatedLeaderLosesNothingAcknowledgedAndReplicasConverge() throws {
        let c = try TestCluster()
        try c.waitUntilReady()
        _ = try c.createTopic("failover", partitions: 1, through: c.ids[0])
        var acknowledged: [Int64: String] = [:]
        var failed: [(String, BrokerError)] = []
        for i in 0..<10 {
            let (o, v) = try c.produceEventually("failover", partition: 0, value: "before-\(i)", through: c.ids[i % 3], failed: &failed)
            acknowledged[o.rawValue] = v
        }
        let oldLeader = try c.leader("failover", 0)
        let others = c.ids.filter { $0 != oldLeader }

        c.network.isolate(oldLeader)
        // The majority elects a new leader; a produce through it eventually succeeds.
        let (o, v) = try c.produceEventually("failover", partition: 0, value: "during", through: others[0], failed: &failed)
        acknowledged[o.rawValue] = v
        let newLeader = try c.leader("failover", 0, through: others[1], excluding: oldLeader)
        #expect(newLeader != oldLeader)

        // The isolated broker cannot get an acks=all write acknowledged, whatever it believes.
        var isolatedAttempts: [(String, BrokerError)] = []
        for i in 0..<2 {
            let value = "isolated-\(i)"
            switch try c.produce("failover", partition: 0, values: [value], through: oldLeader) {
            case .success(let p): Issue.record("acks=all through the isolated old leader succeeded at \(p)")
            case .failure(let e):
                #expect(e.httpStatus == 503, "\(e)")
                isolatedAttempts.append((value, e))
            }
        }
        for i in 0..<5 {
            let (o, v) = try c.produceEventually("failover", partition: 0, value: "during-\(i)", through: others[i % 2], failed: &failed)
            acknowledged[o.rawValue] = v
        }

        c.network.heal(oldLeader)
        // One more acknowledged write after the heal, then every replica must reach it.
        let (last, lastValue) = try c.produceEventually("failover", partition: 0, value: "after", through: oldLeader, failed: &failed)
        acknowledged[last.rawValue] = lastValue
        try c.eventually("every replica's high watermark passes the last acknowledged offset \(last)") {
            try c.ids.allSatisfy { try c.records("failover", 0, through: $0, local: true).highWatermark > last.rawValue }
        }
        // The returning broker is unfenced (if it was fenced) and serves again.
        try c.waitUntilReady()
        let replicas = try c.ids.map { try c.records("failover", 0, through: $0, local: true) }
        let lowest = replicas.map(\.highWatermark).min()!
        let prefixes = replicas.map { $0.records.filter { $0.0 < lowest } }
        for (id, prefix) in zip(c.ids, prefixes) {
            #expect(same(prefix, prefixes[0]), "replica on \(id) differs below \(lowest)")
            #expect(zip(prefix, prefix.dropFirst()).allSatisfy { $0.0 < $1.0 }, "replica on \(id) repeats or reorders offsets below \(lowest)")
        }
        let read = try c.records("failover", 0, through: c.ids[0])
        let byOffset = Dictionary(read.records, uniquingKeysWith: { a, _ in a })
        for (offset, value) in acknowledged {
            #expect(byOffset[offset] == value, "acknowledged \(value) at \(offset) is \(byOffset[offset] ?? "missing")")
        }
        #expect(Set(read.records.map(\.1)).count == read.records.count, "a record appears twice")
        // Refusals that promise nothing was written must not show up.
        for (value, error) in failed + isolatedAttempts {
            switch error {
            case .notLeader, .notEnoughReplicas:
                #expect(!read.records.contains { $0.1 == value }, "\(value) was refused (\(error)) yet is readable")
            default: continue
            }
        }
    }

    @Test func restartedBrokerCatchesUp() throws {
        let c = try TestCluster()
        try c.waitUntilReady()
        _ = try c.createTopic("restart", partitions: 1, through: c.ids[1])
        var failed: [(String, BrokerError)] = []
        var acknowledged: [Int64: String] = [:]
        for i in 0..<5 {
            let (o, v) = try c.produceEventually("restart", partition: 0, value: "a\(i)", through: c.ids[0], failed: &failed)
            acknowledged[o.rawValue] = v
        }
        let leader = try c.leader("restart", 0)
        let controller = c.controller
        // A follower of the partition, not the controller if possible: the test is about catching up.
        let victim = c.ids.first { $0 != leader && $0 != controller } ?? c.ids.first { $0 != leader }!
        let survivor = c.ids.first { $0 != victim }!
        try c.eventually("the victim's replica holds the first writes") {
            try c.records("restart", 0, through: victim, local: true).highWatermark >= 5
        }
        c.stop(victim)
        for i in 0..<10 {
            let (o, v) = try c.produceEventually("restart", partition: 0, value: "b\(i)", through: survivor, failed: &failed)
            acknowledged[o.rawValue] = v
        }
        try c.start(victim)
        let end = acknowledged.keys.max()! + 1
        try c.eventually("restarted broker \(victim) ready") { c[victim].isReady }
        try c.eventually("restarted broker \(victim) catches up to \(end)") {
            try c.records("restart", 0, through: victim, local: true).highWatermark >= end
        }
        let local = try c.records("restart", 0, through: victim, local: true).records.filter { $0.0 < end }
        let viaLeader = try c.records("restart", 0, through: survivor).records.filter { $0.0 < end }
        #expect(same(local, viaLeader))
        for (offset, value) in acknowledged {
            #expect(local.first { $0.0 == offset }?.1 == value, "restarted replica lacks \(value) at \(offset)")
        }
        // And it serves again: a produce through it is acknowledged.
        _ = try c.produceEventually("restart", partition: 0, value: "c", through: victim, failed: &failed)
    }

    @Test func minInSyncReplicasRefusesAcksAllWhenABrokerIsCutOff() throws {
        let c = try TestCluster()
        try c.waitUntilReady()
        _ = try c.createTopic("strict", partitions: 1, through: c.ids[2], configs: [("min.insync.replicas", "3")])
        var failed: [(String, BrokerError)] = []
        _ = try c.produceEventually("strict", partition: 0, value: "all-in", through: c.ids[0], failed: &failed)
        let leader = try c.leader("strict", 0)
        let follower = c.ids.first { $0 != leader }!
        c.network.isolate(follower)

        var refusal: BrokerError?
        try c.eventually("acks=all refused with notEnoughReplicas while \(follower) is cut off") {
            if case .failure(let e) = try c.produce("strict", partition: 0, values: ["maybe"], through: leader),
               case .notEnoughReplicas = e {
                refusal = e
                return true
            }
            return false
        }
        // Cut off from the metadata leader, the broker stops calling itself ready (GET /readyz).
        try c.eventually("the cut-off broker \(follower) reports not ready") { !c[follower].isReady }
        #expect(refusal?.httpStatus == 503)
        #expect(refusal?.errorCode == 50305)
        // Through another broker the refusal is the same (forwarded answers keep their error).
        let other = c.ids.first { $0 != leader && $0 != follower }!
        let forwarded = try c.produce("strict", partition: 0, values: ["maybe-forwarded"], through: other)
        if case .failure(let e) = forwarded { #expect(e.errorCode == 50305, "\(e)") } else { Issue.record("acks=all with 2 of 3 in sync succeeded: \(forwarded)") }
        // acks=1 does not wait for replicas, so min.insync.replicas does not apply.
        #expect((try? c.produce("strict", partition: 0, values: ["leader-only"], acks: .leader, through: leader).get()) != nil)

        c.network.heal(follower)
        _ = try c.produceEventually("strict", partition: 0, value: "healed", through: leader, failed: &failed)
    }

    /// The controller stops; while it is down a topic is created, another deleted, and records are
    /// written. Restarted on its data directory, it learns all of it from the metadata log, opens the
    /// new replicas and catches up.
    @Test func restartedControllerLearnsWhatChangedWhileItWasDown() throws {
        // No fencing during this test: a topic with three replicas is created while one broker is
        // down, which needs that broker to count as alive (however long the machine takes).
        let c = try TestCluster { $0.fenceAfterMilliseconds = 600_000 }
        try c.waitUntilReady()
        _ = try c.createTopic("keep", partitions: 1, through: c.ids[0])
        _ = try c.createTopic("gone", partitions: 1, through: c.ids[0])
        var failed: [(String, BrokerError)] = []
        var acknowledged: [String: [Int64: String]] = [:]
        for t in ["keep", "gone"] {
            let (o, v) = try c.produceEventually(t, partition: 0, value: "\(t)-before", through: c.ids[1], failed: &failed)
            acknowledged[t, default: [:]][o.rawValue] = v
        }
        let victim = c.controller
        let others = c.ids.filter { $0 != victim }
        try c.eventually("broker \(victim) holds gone-0") { !c.topicDirectories("gone", on: victim).isEmpty }
        c.stop(victim)
        try c.eventually("a new controller") { c[others[0]].describeCluster().controller != victim && c[others[0]].describeCluster().controller.rawValue >= 1 }

        _ = try c.createTopic("fresh", partitions: 2, through: others[1])
        for p: Int32 in 0..<2 {
            for i in 0..<3 {
                let (o, v) = try c.produceEventually("fresh", partition: p, value: "fresh-\(p)-\(i)", through: others[i % 2], failed: &failed)
                acknowledged["fresh-\(p)", default: [:]][o.rawValue] = v
            }
        }
        for i in 0..<3 {
            let (o, v) = try c.produceEventually("keep", partition: 0, value: "keep-\(i)", through: others[0], failed: &failed)
            acknowledged["keep", default: [:]][o.rawValue] = v
        }
        try c.answer("delete gone") { c[others[0]].deleteTopic(TopicName("gone")!, completion: $0) }.get()

        try c.start(victim)
        try c.waitUntilReady()
        try c.eventually("broker \(victim) learns the topic changes") {
            c[victim].listTopics() == [TopicName("fresh")!, TopicName("keep")!]
        }
        for (topic, partition) in [("keep", Int32(0)), ("fresh", 0), ("fresh", 1)] {
            let key = topic == "keep" ? "keep" : "\(topic)-\(partition)"
            let expected = acknowledged[key]!
            let end = expected.keys.max()! + 1
            try c.eventually("broker \(victim) catches up on \(topic)-\(partition)") {
                try c.records(topic, partition, through: victim, local: true).highWatermark >= end
            }
            let local = try c.records(topic, partition, through: victim, local: true).records
            for (offset, value) in expected {
                #expect(local.first { $0.0 == offset }?.1 == value, "\(topic)-\(partition) on \(victim): \(value) at \(offset)")
            }
        }
        // A broker that was down when a topic was deleted removes its files once it has caught up.
        try c.eventually("gone's files removed on broker \(victim)", seconds: 20) { c.topicDirectories("gone", on: victim).isEmpty }
    }

    /// Many producers at once through every broker (forwarded and local, several partitions): every
    /// acknowledged record is read back once, at its offset; no offset is given twice.
    @Test func concurrentProducersThroughEveryBrokerLoseAndDuplicateNothing() throws {
        let c = try TestCluster()
        try c.waitUntilReady()
        _ = try c.createTopic("busy", partitions: 2, through: c.ids[0])
        var failed: [(String, BrokerError)] = []
        _ = try c.produceEventually("busy", partition: 0, value: "warm-0", through: c.ids[0], failed: &failed)
        _ = try c.produceEventually("busy", partition: 1, value: "warm-1", through: c.ids[0], failed: &failed)
        let brokers = c.ids.map { c[$0] }
        let outcomes = Mutex<[(value: String, result: Result<[RecordPlacement], BrokerError>)]>([])
        let group = DispatchGroup()
        for worker in 0..<6 {
            for i in 0..<25 {
                let records = (0..<3).map { ProduceRecord(partition: PartitionID(Int32((worker + i) % 2)), value: Array("w\(worker)-\(i)-\($0)".utf8)) }
                group.enter()
                brokers[worker % 3].produce(topic: TopicName("busy")!, records: records, acks: .all) { result in
                    outcomes.withLock { o in for r in records { o.append((String(decoding: r.value!, as: UTF8.self), result)) } }
                    group.leave()
                }
            }
        }
        #expect(group.wait(timeout: .now() + 60) == .success, "every produce is answered")
        var acknowledged: [Int32: [Int64: String]] = [:]
        var succeeded = 0
        // Each request appended its three records together; placements come back in request order.
        let all = outcomes.withLock { $0 }
        for k in stride(from: 0, to: all.count, by: 3) {
            guard case .success(let placements) = all[k].result else { continue }
            succeeded += 1
            for (j, p) in placements.enumerated() {
                let o = p.offset!.rawValue
                #expect(acknowledged[p.partition.rawValue, default: [:]][o] == nil, "offset \(o) given twice")
                acknowledged[p.partition.rawValue, default: [:]][o] = all[k + j].value
            }
        }
        // Nothing failed in this run of a healthy cluster except, on a very slow machine, by timeout.
        let errors = all.compactMap { o -> BrokerError? in if case .failure(let e) = o.result { e } else { nil } }
        #expect(errors.allSatisfy { if case .unavailable = $0 { true } else { false } }, "\(errors.prefix(3))")
        #expect(succeeded > 0)
        for p: Int32 in 0..<2 {
            let read = try c.records("busy", p, through: c.ids[2])
            let byOffset = Dictionary(read.records, uniquingKeysWith: { a, _ in a })
            for (o, v) in acknowledged[p] ?? [:] { #expect(byOffset[o] == v, "busy-\(p): \(v) at \(o)") }
            #expect(Set(read.records.map(\.1)).count == read.records.count, "a record appears twice in busy-\(p)")
        }
    }

    /// A long-poll read through a broker that does not lead the partition waits at the leader and
    /// returns the record produced meanwhile; partitions added later get leaders on every broker.
    @Test func forwardedLongPollAndGrowingATopic() throws {
        let c = try TestCluster()
        try c.waitUntilReady()
        _ = try c.createTopic("poll", partitions: 1, through: c.ids[0])
        var failed: [(String, BrokerError)] = []
        let (first, _) = try c.produceEventually("poll", partition: 0, value: "first", through: c.ids[0], failed: &failed)
        let leader = try c.leader("poll", 0)
        let reader = c.ids.first { $0 != leader }!
        let request = ReadRequest(topic: TopicName("poll")!, partition: PartitionID(0), offset: .exact(first + 1), maxRecords: 10, maxBytes: 1 << 20, waitMilliseconds: 20_000)
        let answer = Mutex<Result<ReadResult, BrokerError>?>(nil)
        let done = DispatchSemaphore(value: 0)
        c[reader].read(request) { r in
            answer.withLock { $0 = r }
            done.signal()
        }
        let (second, value) = try c.produceEventually("poll", partition: 0, value: "second", through: leader, failed: &failed)
        #expect(done.wait(timeout: .now() + 60) == .success)
        let records = try answer.withLock { $0 }?.get().records() ?? []
        #expect(records.first.map { ($0.offset, String(decoding: $0.record.value ?? [], as: UTF8.self)) }.map { $0 == (second, value) } == true, "\(records)")

        let grown = try c.answer("grow poll") { c[reader].alterTopic(TopicName("poll")!, configs: [], partitions: 3, completion: $0) }.get()
        #expect(grown.partitions.count == 3)
        for id in c.ids {
            try c.eventually("broker \(id) sees leaders for the new partitions") {
                let d = try c[id].describeTopic(TopicName("poll")!)
                return d.partitions.count == 3 && d.partitions.allSatisfy { $0.leader.rawValue >= 0 && Set($0.replicas) == Set(c.ids) }
            }
        }
        _ = try c.produceEventually("poll", partition: 2, value: "new", through: c.ids[1], failed: &failed)
    }

    /// Every broker stops (orderly) and starts again on its data directory: topics, leaders and every
    /// acknowledged record are back, and new writes are acknowledged after the old ones.
    @Test func wholeClusterRestartKeepsEverything() throws {
        let c = try TestCluster()
        try c.waitUntilReady()
        _ = try c.createTopic("durable", partitions: 2, through: c.ids[0])
        var failed: [(String, BrokerError)] = []
        var acknowledged: [Int32: [Int64: String]] = [:]
        for i in 0..<12 {
            let p = Int32(i % 2)
            let (o, v) = try c.produceEventually("durable", partition: p, value: "v\(i)", through: c.ids[i % 3], failed: &failed)
            acknowledged[p, default: [:]][o.rawValue] = v
        }
        for id in c.ids { c.stop(id) }
        for id in c.ids { try c.start(id) }
        try c.waitUntilReady()
        for id in c.ids {
            try c.eventually("broker \(id) knows durable again") { c[id].listTopics() == [TopicName("durable")!] }
        }
        for p: Int32 in 0..<2 {
            let (o, v) = try c.produceEventually("durable", partition: p, value: "after-restart-\(p)", through: c.ids[0], failed: &failed)
            #expect(o.rawValue > acknowledged[p]!.keys.max()!, "a write after the restart lands after the old ones")
            acknowledged[p, default: [:]][o.rawValue] = v
            for id in c.ids {
                let read = try c.records("durable", p, through: id)
                let byOffset = Dictionary(read.records, uniquingKeysWith: { a, _ in a })
                for (offset, value) in acknowledged[p]! { #expect(byOffset[offset] == value, "durable-\(p) through \(id): \(value) at \(offset)") }
            }
        }
    }

    /// A topic deleted and created again under the same name is a new set of Raft groups whose terms
    /// start over; every broker must still learn and describe the new partition's leader.
    @Test func recreatedTopicGetsItsLeaderDescribedEverywhere() throws {
        let c = try TestCluster()
        try c.waitUntilReady()
        _ = try c.createTopic("again", partitions: 1, through: c.ids[0])
        var failed: [(String, BrokerError)] = []
        _ = try c.produceEventually("again", partition: 0, value: "old", through: c.ids[0], failed: &failed)
        // Two failovers, so every broker has heard the old partition at a term above the new one's first.
        for _ in 0..<2 {
            let leader = try c.leader("again", 0)
            c.network.isolate(leader)
            for id in c.ids where id != leader { _ = try c.leader("again", 0, through: id, excluding: leader) }
            c.network.heal(leader)
            try c.waitUntilReady()
            try c.eventually("every broker names the new leader") {
                Set(try c.ids.map { try c[$0].describeTopic(TopicName("again")!).partitions[0].leader }).count == 1
            }
        }
        let others = c.ids.filter { $0 != c.controller }

        try c.answer("delete again") { c[others[0]].deleteTopic(TopicName("again")!, completion: $0) }.get()
        for id in c.ids { try c.eventually("again gone from \(id)") { c[id].listTopics().isEmpty } }
        _ = try c.createTopic("again", partitions: 1, through: others[1])
        let (offset, value) = try c.produceEventually("again", partition: 0, value: "new", through: c.ids[0], failed: &failed)
        // Reports about the old topic are younger than 3 s now and may still name its leader: wait
        // until they cannot count any more, then every broker must name the replica that leads.
        usleep(3_500_000)
        try c.eventually("every broker names the leader of the new again-0") {
            let leaders = try c.ids.map { try c[$0].describeTopic(TopicName("again")!).partitions[0].leader }
            guard let actual = try c.ids.first(where: { try c[$0].describeTopic(TopicName("again")!).partitions[0].leader == $0 }) else { return false }
            return leaders.allSatisfy { $0 == actual }
        }
        for id in c.ids {
            let read = try c.records("again", 0, through: id)
            #expect(read.records.map(\.1) == [value], "the new topic holds only its own record")
            #expect(read.records.first?.0 == offset.rawValue)
        }
    }

    /// The partition leader shuts down while a read forwarded to it is parked and an acks=all write
    /// is waiting: both are answered; the others elect a new leader and serve the topic.
    @Test func leaderShutdownAnswersWaitersAndTheOthersTakeOver() throws {
        let c = try TestCluster()
        try c.waitUntilReady()
        _ = try c.createTopic("handover", partitions: 1, through: c.ids[0])
        var failed: [(String, BrokerError)] = []
        var acknowledged: [Int64: String] = [:]
        let (first, firstValue) = try c.produceEventually("handover", partition: 0, value: "first", through: c.ids[0], failed: &failed)
        acknowledged[first.rawValue] = firstValue
        let leader = try c.leader("handover", 0)
        let others = c.ids.filter { $0 != leader }

        // A long-poll read through another broker, parked at the leader.
        let parked = DispatchSemaphore(value: 0)
        let far = ReadRequest(topic: TopicName("handover")!, partition: PartitionID(0), offset: .latest, maxRecords: 10, maxBytes: 1 << 20, waitMilliseconds: 30_000)
        c[others[0]].read(far) { _ in parked.signal() }
        try c.eventually("the read is parked at the leader") { c[leader].parkedRequestsInCluster == 1 }
        c.stop(leader)
        #expect(parked.wait(timeout: .now() + 60) == .success, "a read parked at a stopping leader is answered")

        for i in 0..<5 {
            let (o, v) = try c.produceEventually("handover", partition: 0, value: "later-\(i)", through: others[i % 2], failed: &failed)
            acknowledged[o.rawValue] = v
        }
        let newLeader = try c.leader("handover", 0, through: others[0])
        #expect(newLeader != leader)
        let read = try c.records("handover", 0, through: others[1])
        let byOffset = Dictionary(read.records, uniquingKeysWith: { a, _ in a })
        for (o, v) in acknowledged { #expect(byOffset[o] == v, "\(v) at \(o)") }

        // Requests a broker can refuse at once, through any broker.
        for id in others {
            let r = try c.answer("produce to partition 7") { c[id].produce(topic: TopicName("handover")!, records: [ProduceRecord(partition: PartitionID(7), value: [1])], acks: .all, completion: $0) }
            if case .failure(let e) = r { #expect(e.errorCode == 40402, "\(e)") } else { Issue.record("produce to a missing partition: \(r)") }
            let none = try c.answer("acks=0") { c[id].produce(topic: TopicName("handover")!, records: [ProduceRecord(partition: PartitionID(0), value: [2])], acks: .none, completion: $0) }
            if case .success(let p) = none { #expect(p.first?.offset == nil, "acks=0 answers before the append, without an offset") }
        }
    }

    /// A broker silent for longer than fenceAfterMilliseconds is fenced (not alive, left out of new
    /// topics); when it is heard again it is unfenced and ready.
    @Test func silentBrokerIsFencedAndUnfencedWhenItReturns() throws {
        let c = try TestCluster { $0.fenceAfterMilliseconds = 1_000 }
        try c.waitUntilReady()
        let controller = c.controller
        let silent = c.ids.first { $0 != controller }!
        c.network.isolate(silent)
        try c.eventually("the controller fences broker \(silent)") {
            c[controller].describeCluster().brokers.first { $0.id == silent }?.isAlive == false
        }
        let created = try c.createTopic("while-fenced", partitions: 2, through: controller, replicationFactor: nil)
        for p in created.partitions {
            #expect(!p.replicas.contains(silent), "a new partition placed on fenced broker \(silent): \(p.replicas)")
            #expect(p.replicas.count == 2)
        }
        let three = try c.answer("RF=3 with two brokers alive") {
            c[controller].createTopic(name: TopicName("too-wide")!, partitions: 1, replicationFactor: 3, configs: [], completion: $0)
        }
        if case .success = three { Issue.record("a topic with 3 replicas was created while only 2 brokers are alive") }
        c.network.heal(silent)
        try c.waitUntilReady()
        #expect(c[silent].listTopics() == [TopicName("while-fenced")!])
    }

    /// Garbage from a peer (frames and call bodies) is refused or ignored; the broker keeps working.
    @Test func hostileFramesAndCallsLeaveABrokerWorking() throws {
        let c = try TestCluster()
        try c.waitUntilReady()
        _ = try c.createTopic("hostile", partitions: 1, through: c.ids[0])
        var failed: [(String, BrokerError)] = []
        _ = try c.produceEventually("hostile", partition: 0, value: "first", through: c.ids[0], failed: &failed)
        let target = c.ids[0]
        let node = try #require(c[target].clusterNode)
        let peer = c.ids[1]
        var rng = SplitMix64(seed: 42)
        func noise(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8(truncatingIfNeeded: rng.next()) } }
        let report = LeaderReport.encode([LeaderReport(group: TopicPartition(TopicName("hostile")!, PartitionID(0)), term: Term(1), leader: peer,
                                                       offsets: PartitionOffsets(logStartOffset: Offset(0), highWatermark: Offset(1), logEndOffset: Offset(1)),
                                                       inSyncReplicas: [peer], replicaStates: [])])
        var frames: [[UInt8]] = [[], [0], [1], [2], [3, 1, 2], [255] + noise(20)]
        for _ in 0..<200 {
            frames.append([1] + noise(rng.below(200)))
            frames.append([2] + noise(rng.below(200)))
            var mutated = ClusterWire.frame(.report, report)
            mutated[1 + rng.below(mutated.count - 1)] ^= UInt8(1 + rng.below(255))
            frames.append(mutated)
        }
        node.receive(frames: frames, from: peer)
        for method in [PeerCall.produce, PeerCall.read, PeerCall.metadata, PeerCall.offsets, PeerCall.transfer] {
            for n in [0, 1, 7, 64, 300] {
                let body = noise(n)
                let r = try c.answer("\(method) with \(n) random bytes") { node.handle(method: method, body: body, from: peer, reply: $0) }
                if case .failure(let e) = r { #expect(e.httpStatus == 400, "\(method): \(e)") } else { Issue.record("\(method) accepted \(n) random bytes") }
            }
        }
        let unknown = try c.answer("an unknown method") { node.handle(method: "../../admin", body: [], from: peer, reply: $0) }
        if case .failure(let e) = unknown { #expect(e.httpStatus == 404) } else { Issue.record("unknown method answered \(unknown)") }

        let (offset, value) = try c.produceEventually("hostile", partition: 0, value: "after", through: target, failed: &failed)
        for id in c.ids {
            #expect(try c.records("hostile", 0, through: id).records.contains { $0.0 == offset.rawValue && $0.1 == value })
        }
        let allReady = c.running.allSatisfy { $0.isReady }
        #expect(allReady)
    }

    /// The in-memory network keeps the `PeerTransport` contract the runtime relies on.
    @Suite struct Network {
        final class Recorder: PeerHandler {
            let frames = Mutex<[(NodeID, [UInt8])]>([])
            func receive(frames: [[UInt8]], from peer: NodeID) {
                self.frames.withLock { f in for frame in frames { f.append((peer, frame)) } }
            }
            func handle(method: String, body: [UInt8], from peer: NodeID, reply: @escaping @Sendable (Result<[UInt8], BrokerError>) -> Void) {
                switch method {
                case "echo": reply(.success(body.reversed()))
                case "fail": reply(.failure(.notEnoughReplicas("no")))
                default: break  // "never": the answer does not come
                }
            }
            var count: Int { frames.withLock { $0.count } }
        }

        func call(_ t: InMemoryPeerTransport, _ peer: NodeID, _ method: String, _ body: [UInt8] = [1, 2, 3], timeout: Int = 60_000,
                  _ extra: (() -> Void)? = nil) throws -> Result<[UInt8], BrokerError> {
            let c = TestClusterless()
            return try c.answer(method) { completion in
                t.call(peer, method: method, body: body, timeoutMilliseconds: timeout, completion: completion)
                extra?()
            }
        }

        @Test func framesArriveInOrderCallsAnswerAndContactIsTracked() throws {
            let network = InMemoryPeerNetwork()
            let (a, b) = (network.transport(for: NodeID(1)), network.transport(for: NodeID(2)))
            let (ra, rb) = (Recorder(), Recorder())
            try a.start(handler: ra)
            try b.start(handler: rb)
            defer { a.stop(); b.stop() }
            #expect(a.millisecondsSinceContact(NodeID(2)) == nil)
            for i in 0..<1_000 { a.send([UInt8(i & 0xff), UInt8(i >> 8)], to: NodeID(2)) }
            try TestClusterless().eventually("1000 frames delivered") { rb.count == 1_000 }
            #expect(rb.frames.withLock { $0.map { Int($0.1[0]) | Int($0.1[1]) << 8 } } == Array(0..<1_000))
            #expect(rb.frames.withLock { $0.allSatisfy { $0.0 == NodeID(1) } })
            #expect(b.millisecondsSinceContact(NodeID(1)) != nil)
            #expect(try call(a, NodeID(2), "echo").get() == [3, 2, 1])
            #expect(a.millisecondsSinceContact(NodeID(2)) != nil)
            guard case .failure(.notEnoughReplicas) = try call(a, NodeID(2), "fail") else { Issue.record("an error answer must arrive as sent"); return }
        }

        @Test func isolationDropsEverythingUntilHealed() throws {
            let network = InMemoryPeerNetwork()
            let (a, b) = (network.transport(for: NodeID(1)), network.transport(for: NodeID(2)))
            let rb = Recorder()
            try a.start(handler: Recorder())
            try b.start(handler: rb)
            defer { a.stop(); b.stop() }
            network.isolate(NodeID(2))
            for _ in 0..<10 { a.send([7], to: NodeID(2)) }
            let r = try call(a, NodeID(2), "echo", timeout: 100)
            guard case .failure(.unavailable(let m)) = r, m.contains("timed out") else { Issue.record("a call across a cut must time out: \(r)"); return }
            network.heal(NodeID(2))
            #expect(try call(a, NodeID(2), "echo").get() == [3, 2, 1])
            a.send([8], to: NodeID(2))
            try TestClusterless().eventually("the frame after the heal arrives") { rb.count >= 1 }
            #expect(rb.frames.withLock { $0.map(\.1) } == [[8]], "frames sent during the cut are dropped, not delayed")
        }

        @Test func stoppedOrAbsentPeersRefuseAndStopAnswersPendingCalls() throws {
            let network = InMemoryPeerNetwork()
            let a = network.transport(for: NodeID(1))
            try a.start(handler: Recorder())
            let refused = try call(a, NodeID(3), "echo")
            guard case .failure(.unavailable(let m)) = refused, m.contains("Couldn't connect") else { Issue.record("no listener must refuse at once: \(refused)"); return }
            let b = network.transport(for: NodeID(2))
            try b.start(handler: Recorder())
            // A call that is never answered ends with .shuttingDown when the caller stops.
            let pending = try call(a, NodeID(2), "never") {
                DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(100)) { a.stop() }
            }
            guard case .failure(.shuttingDown) = pending else { Issue.record("stop must answer pending calls with .shuttingDown: \(pending)"); return }
            guard case .failure(.shuttingDown) = try call(a, NodeID(2), "echo") else { Issue.record("calls after stop must fail with .shuttingDown"); return }
            b.stop()
        }
    }
}

/// Waiting without timed assertions: conditions are polled with generous deadlines, and a
/// completion-style call is awaited with a bound that only keeps a broken runtime (a completion
/// that never runs) from hanging the suite.
struct TestClusterless {
    func eventually(_ what: String, seconds: Double = 20, _ condition: () throws -> Bool) throws {
        let deadline = Date().addingTimeInterval(seconds)
        while true {
            if (try? condition()) == true { return }
            if Date() > deadline { throw ClusterTestTimeout(description: "timed out waiting for: \(what)") }
            usleep(20_000)
        }
    }

    func answer<T: Sendable>(_ what: String, _ call: (@escaping @Sendable (Result<T, BrokerError>) -> Void) -> Void) throws -> Result<T, BrokerError> {
        let box = Mutex<Result<T, BrokerError>?>(nil)
        let done = DispatchSemaphore(value: 0)
        call { result in
            box.withLock { $0 = result }
            done.signal()
        }
        guard done.wait(timeout: .now() + 60) == .success else { throw ClusterTestTimeout(description: "no answer to \(what)") }
        return box.withLock { $0! }
    }
}

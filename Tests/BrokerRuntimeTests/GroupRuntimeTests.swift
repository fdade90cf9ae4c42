import BrokerModel
import Foundation
import Synchronization
import Testing
@testable import BrokerRuntime

/// The group coordinator inside real brokers: a single node (records applied after the fsync,
/// replayed on restart) and three brokers on the in-memory peer network (records applied from Raft
/// on every replica, requests forwarded to the coordinator, failover). Conditions are polled with
/// generous deadlines; nothing asserts on time.
@Suite(.serialized) struct GroupRuntimeTests {
    let t = TestClusterless()
    let topic = TopicName("events")!

    func tp(_ p: Int32) -> TopicPartition { TopicPartition(topic, PartitionID(p)) }

    func join(_ b: Broker, _ group: GroupID, client: String, session: Int64 = 30_000, autoCommit: Bool = true) throws -> GroupMembership {
        try t.answer("join \(client)") {
            b.joinGroup(JoinGroupRequest(group: group, clientID: client, topics: [topic], sessionTimeoutMilliseconds: session,
                                         autoOffsetReset: .earliest, autoCommit: autoCommit), completion: $0)
        }.get()
    }

    func poll(_ b: Broker, _ group: GroupID, _ m: MemberID, wait: Int = 0) throws -> GroupPollResult {
        try t.answer("poll \(m)") { b.pollGroup(GroupPollRequest(group: group, member: m, maxRecords: 1_000, maxBytes: 1 << 20, waitMilliseconds: wait), completion: $0) }.get()
    }

    func values(_ r: GroupPollResult) throws -> [String] {
        try r.reads.flatMap { try $0.records().map { String(decoding: $0.record.value ?? [], as: UTF8.self) } }
    }

    func produce(_ b: Broker, partition: Int32, _ values: [String]) throws {
        _ = try t.answer("produce") { b.produce(topic: topic, records: values.map { ProduceRecord(partition: PartitionID(partition), value: Array($0.utf8)) }, acks: .all, completion: $0) }.get()
    }

    func committed(_ b: Broker, _ group: GroupID) throws -> [TopicPartition: Int64] {
        let offsets = try t.answer("offsets") { b.groupOffsets(group, member: nil, partitions: nil, completion: $0) }.get()
        var out: [TopicPartition: Int64] = [:]
        for o in offsets { if let x = o.offset { out[o.partition] = x.rawValue } }
        return out
    }

    // MARK: - single node

    /// A started single-node broker with one topic, on a temporary directory removed at the end.
    final class SingleNode {
        let root = NSTemporaryDirectory() + "petrel-groups-\(UUID().uuidString)"
        let broker: Broker
        init(topic: TopicName, partitions: Int32) throws {
            var config = BrokerConfiguration()
            config.dataDirectory = root
            broker = Broker(configuration: config)
            try broker.start()
            _ = try broker.createTopic(name: topic, partitions: partitions, replicationFactor: nil, configs: [])
        }
        deinit {
            broker.shutdown()
            try? FileManager.default.removeItem(atPath: root)
        }
    }

    @Test func singleNodeGroupLifecycleSurvivesRestart() throws {
        let root = NSTemporaryDirectory() + "petrel-groups-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: root) }
        var config = BrokerConfiguration()
        config.dataDirectory = root
        var b = Broker(configuration: config)
        try b.start()
        _ = try b.createTopic(name: topic, partitions: 2, replicationFactor: nil, configs: [])
        try produce(b, partition: 0, ["a0", "a1"])
        try produce(b, partition: 1, ["b0"])
        let g = GroupID("workers")!

        let first = try join(b, g, client: "one")
        #expect(first.generation == 1 && first.assignment.count == 2)
        let second = try join(b, g, client: "two")
        #expect(second.generation == 2 && second.assignment.count == 1)
        // The first member learns the rebalance on its next poll and only reads what it owns now.
        let p1 = try poll(b, g, first.member)
        #expect(p1.membership.generation == 2 && p1.membership.assignment.count == 1)
        let p2 = try poll(b, g, second.member)
        #expect(Set(try values(p1) + values(p2)) == ["a0", "a1", "b0"])
        // Auto-commit stores what was delivered, at the next poll.
        _ = try poll(b, g, first.member)
        _ = try poll(b, g, second.member)
        #expect(try committed(b, g) == [tp(0): 2, tp(1): 1])
        // A stale generation is refused.
        let stale = try t.answer("stale commit") {
            b.commitGroupOffsets(GroupCommitRequest(group: g, member: first.member, generation: 1, offsets: [CommittedOffsetEntry(partition: tp(0), offset: Offset(0))]), completion: $0)
        }
        guard case .failure(.staleGeneration) = stale else { Issue.record("stale commit answered \(stale)"); return }

        b.shutdown()
        b = Broker(configuration: config)
        try b.start()
        defer { b.shutdown() }
        let d = try t.answer("describe") { b.describeGroup(g, completion: $0) }.get()
        #expect(d.generation == 2 && d.members.count == 2)
        #expect(try committed(b, g) == [tp(0): 2, tp(1): 1])
        // Both leave: the group stays (offsets), empty, and can then be reset and deleted.
        for m in [first.member, second.member] { try t.answer("leave") { b.leaveGroup(g, member: m, completion: $0) }.get() }
        let reset = try t.answer("reset") { b.resetGroupOffsets(g, topics: [topic], to: .earliest, completion: $0) }.get()
        #expect(reset.map { $0.offset?.rawValue } == [0, 0])
        try t.answer("delete") { b.deleteGroup(g, completion: $0) }.get()
        let gone = try t.answer("describe deleted") { b.describeGroup(g, completion: $0) }
        guard case .failure(.unknownGroup) = gone else { Issue.record("deleted group answered \(gone)"); return }
    }

    @Test func expiredSessionRebalancesToTheOthers() throws {
        let node = try SingleNode(topic: topic, partitions: 4)
        // ARC may end a value's life after its last use: keep the broker up to the end of the test.
        defer { withExtendedLifetime(node) {} }
        let b = node.broker
        let g = GroupID("expiring")!
        let quiet = try join(b, g, client: "quiet", session: 1_000)
        let busy = try join(b, g, client: "busy", session: 30_000)
        #expect(quiet.assignment.count == 4 && busy.assignment.count == 2)
        // `busy` keeps polling; `quiet` never does again.
        try t.eventually("the silent member's partitions move to the polling one") {
            let r = try poll(b, g, busy.member, wait: 100)
            return r.membership.assignment.count == 4
        }
        let d = try t.answer("describe") { b.describeGroup(g, completion: $0) }.get()
        #expect(d.members.map(\.member) == [busy.member])
        let unknown = try t.answer("poll expired") { b.pollGroup(GroupPollRequest(group: g, member: quiet.member, maxRecords: 1, maxBytes: 1, waitMilliseconds: 0), completion: $0) }
        guard case .failure(.unknownMember) = unknown else { Issue.record("expired member's poll answered \(unknown)"); return }
    }

    @Test func aParkedPollEndsOnRebalanceWithTheNewAssignment() throws {
        let node = try SingleNode(topic: topic, partitions: 2)
        // ARC may end a value's life after its last use: keep the broker up to the end of the test.
        defer { withExtendedLifetime(node) {} }
        let b = node.broker
        let g = GroupID("wakeup")!
        let first = try join(b, g, client: "one")
        let answer = Mutex<Result<GroupPollResult, BrokerError>?>(nil)
        b.pollGroup(GroupPollRequest(group: g, member: first.member, maxRecords: 10, maxBytes: 1 << 20, waitMilliseconds: 30_000)) { r in answer.withLock { $0 = r } }
        usleep(200_000)
        _ = try join(b, g, client: "two")
        try t.eventually("the parked poll answers before its 30 s wait ends", seconds: 10) { answer.withLock { $0 } != nil }
        let r = try answer.withLock { $0! }.get()
        #expect(r.membership.generation == 2 && r.membership.assignment.count == 1 && r.reads.isEmpty)
    }

    // MARK: - cluster

    @Test func clusterGroupsRouteThroughAnyBrokerAndSurviveTheCoordinator() throws {
        let c = try TestCluster()
        try c.waitUntilReady()
        _ = try c.createTopic(topic.rawValue, partitions: 3, through: NodeID(1))
        for p in Int32(0)..<3 {
            var failed: [(String, BrokerError)] = []
            _ = try c.produceEventually(topic.rawValue, partition: p, value: "p\(p)", through: NodeID(2), failed: &failed)
        }
        let g = GroupID("cluster-workers")!
        var membership: GroupMembership?
        try c.eventually("a join through broker 1 (the offsets topic is created on first use)") {
            membership = try? join(c[NodeID(1)], g, client: "a")
            return membership != nil
        }
        let m = membership!
        var seen: [String] = []
        try c.eventually("a poll through broker 2 returns every record") {
            seen += try values(poll(c[NodeID(2)], g, m.member, wait: 100))
            return Set(seen.map { String($0.prefix(2)) }) == ["p0", "p1", "p2"]
        }
        let commit = GroupCommitRequest(group: g, member: m.member, generation: m.generation,
                                        offsets: (0..<3).map { CommittedOffsetEntry(partition: tp($0), offset: Offset(1)) })
        _ = try c.answer("commit through broker 3") { c[NodeID(3)].commitGroupOffsets(commit, completion: $0) }.get()
        for id in c.ids {
            #expect(try committed(c[id], g).count == 3, "broker \(id) sees the commits")
        }
        // Stop the coordinator's broker: another replica of its partition takes over with everything.
        let coordinator = try c.answer("describe") { c[NodeID(2)].describeGroup(g, completion: $0) }.get().coordinator
        c.stop(coordinator)
        let survivor = c.ids.first { $0 != coordinator }!
        var after: GroupDescription?
        try c.eventually("another broker coordinates the group", seconds: 30) {
            guard case .success(let d) = try c.answer("describe after failover", { c[survivor].describeGroup(g, completion: $0) }) else { return false }
            after = d
            return d.coordinator != coordinator
        }
        #expect(after?.members.map(\.member) == [m.member])
        #expect(after?.generation == m.generation)
        #expect(try committed(c[survivor], g) == [tp(0): 1, tp(1): 1, tp(2): 1])
        // The member goes on: a commit at the same generation is accepted by the new coordinator.
        let next = GroupCommitRequest(group: g, member: m.member, generation: m.generation, offsets: [CommittedOffsetEntry(partition: tp(0), offset: Offset(2))])
        try c.eventually("a commit after failover", seconds: 30) {
            if case .success = try c.answer("commit after failover", { c[survivor].commitGroupOffsets(next, completion: $0) }) { return true }
            return false
        }
        try c.start(coordinator)
        try c.eventually("the restarted broker serves the group with the new commit", seconds: 30) {
            try committed(c[coordinator], g)[tp(0)] == 2
        }
    }

}

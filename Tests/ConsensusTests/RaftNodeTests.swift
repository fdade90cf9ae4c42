import BrokerModel
import Consensus
import Testing

@Suite struct RaftNodeTests {
    func node(_ id: Int32, voters: [Int32] = [1]) -> (RaftNode<MemoryRaftStorage>, MemoryRaftStorage) {
        let disk = MemoryRaftStorage(membership: Membership(voters: Set(voters.map { NodeID($0) })))
        var c = RaftConfiguration(id: NodeID(id), randomSeed: 1)
        c.electionTicks = 10
        return (RaftNode(configuration: c, storage: disk), disk)
    }

    mutating func drain(_ n: inout RaftNode<MemoryRaftStorage>, _ disk: MemoryRaftStorage) -> [Ready] {
        var readies: [Ready] = []
        while n.hasReady {
            let r = n.ready()
            disk.apply(r)
            n.advance(r)
            readies.append(r)
        }
        return readies
    }

    @Test mutating func singleNodeElectsItselfAndCommitsThroughItsMarker() throws {
        var (n, disk) = node(1)
        for _ in 0..<20 { n.tick() }
        #expect(n.isLeader)
        _ = drain(&n, disk)
        #expect(n.commit == Offset(0), "the leader marker at offset 0 is committed")
        let p = try n.propose(RecordBatch.encode(records: [Record(value: [1], timestamp: 0), Record(value: [2], timestamp: 0)]))
        #expect(p.offset == Offset(2) && p.term == Term(1), "a 2-record batch after the marker occupies offsets 1...2")
        let readies = drain(&n, disk)
        #expect(n.commit == Offset(2))
        let applied = readies.flatMap(\.committedEntries)
        #expect(applied.map(\.lastOffset) == [Offset(2)])
        #expect(disk.hardState.commit == Offset(2))
    }

    @Test mutating func restartKeepsTermVoteCommitAndMembership() throws {
        var (n, disk) = node(1)
        for _ in 0..<20 { n.tick() }
        _ = drain(&n, disk)
        _ = try n.proposeMembershipChange(.addLearner(NodeID(2)))
        _ = drain(&n, disk)
        let restarted = RaftNode(configuration: RaftConfiguration(id: NodeID(1), randomSeed: 2), storage: disk)
        #expect(restarted.term == n.term && restarted.vote == NodeID(1) && restarted.commit == n.commit)
        #expect(restarted.membership == Membership(voters: [NodeID(1)], learners: [NodeID(2)]))
        #expect(restarted.role == .follower)
    }

    @Test mutating func proposalsAreRefusedByFollowersAndLimitedOnLeaders() throws {
        var (f, _) = node(2, voters: [1, 2, 3])
        #expect(throws: ProposalError.notLeader(leader: nil)) {
            _ = try f.propose(RecordBatch.encode(records: [Record(value: [1], timestamp: 0)]))
        }
        var (n, disk) = node(1)
        for _ in 0..<20 { n.tick() }
        _ = drain(&n, disk)
        #expect(throws: ProposalError.invalidMembershipChange("cannot remove the last voter")) {
            _ = try n.proposeMembershipChange(.remove(NodeID(1)))
        }
        #expect(throws: ProposalError.invalidMembershipChange("3 is not a learner")) {
            _ = try n.proposeMembershipChange(.promote(NodeID(3)))
        }
    }

    /// The Ready contract is enforced: touching the node between `ready()` and `advance(_:)` traps.
    @Test func tickBetweenReadyAndAdvanceTraps() async {
        await #expect(processExitsWith: .failure) {
            let disk = MemoryRaftStorage(membership: Membership(voters: [NodeID(1)]))
            var n = RaftNode(configuration: RaftConfiguration(id: NodeID(1), randomSeed: 1), storage: disk)
            for _ in 0..<30 { n.tick() }
            _ = n.ready()
            n.tick()
        }
    }

    @Test func membershipControlBatchRoundTrips() {
        let m = Membership(voters: [NodeID(1), NodeID(3)], learners: [NodeID(9)])
        let b = ControlBatch.membership(m)
        #expect(b.isControl)
        #expect(ControlBatch.decodeMembership(b) == m)
        #expect(ControlBatch.decodeMembership(RecordBatch.encode(records: [Record(value: [1], timestamp: 0)])) == nil)
    }

    @Test func storageTruncatesAConflictingSuffixAndCompacts() {
        let disk = MemoryRaftStorage(membership: Membership(voters: [NodeID(1)]))
        func b(_ base: Int64, _ n: Int, _ t: Int32) -> RecordBatch {
            RecordBatch.encode(records: (0..<n).map { _ in Record(value: [0], timestamp: 0) }, baseOffset: Offset(base), partitionLeaderEpoch: t)
        }
        disk.append([b(0, 2, 1), b(2, 3, 1), b(5, 1, 1)])
        disk.append([b(2, 1, 2)])
        #expect(disk.stored.map(\.lastOffset) == [Offset(1), Offset(2)])
        #expect(disk.term(endingAt: Offset(2)) == Term(2))
        #expect(disk.term(endingAt: Offset(0)) == nil, "offset 0 is inside a batch")
        disk.setHardState(HardState(term: Term(2), vote: nil, commit: Offset(2)))
        disk.compact(through: Offset(1))
        #expect(disk.logStartOffset == Offset(2))
        #expect(disk.snapshotPoint == LogPosition(offset: Offset(1), term: Term(1)))
        #expect(disk.batches(from: Offset(2), bytesMax: 1).count == 1)
    }
}

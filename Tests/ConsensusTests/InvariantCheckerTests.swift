import BrokerModel
import BrokerTesting
import Consensus
import Testing

/// Each invariant checker is shown to fail: it is fed a hand-made bad history and must report it.
/// A checker that cannot fail proves nothing about the simulation runs that pass it.
@Suite struct InvariantCheckerTests {
    func batch(_ base: Int64, _ count: Int = 1, term: Int32, value: String = "v", control: Bool = false) -> RecordBatch {
        RecordBatch.encode(
            records: (0..<count).map { _ in Record(value: Array(value.utf8), timestamp: 0) }, baseOffset: Offset(base),
            partitionLeaderEpoch: term, isControl: control)
    }

    @Test func twoLeadersInOneTermIsReported() {
        var c = RaftInvariantChecker()
        c.observeLeader(NodeID(1), term: Term(3))
        c.observeLeader(NodeID(1), term: Term(3))
        c.observeLeader(NodeID(2), term: Term(4))
        #expect(c.violations.isEmpty)
        c.observeLeader(NodeID(2), term: Term(3))
        #expect(c.violations == [.twoLeadersInOneTerm(term: Term(3), first: NodeID(1), second: NodeID(2))])
    }

    @Test func logMismatchIsReported() {
        var c = RaftInvariantChecker()
        let a = NodeLog(startOffset: .zero, commit: Offset(-1), batches: [batch(0, term: 1, value: "a"), batch(1, term: 2)])
        let good = NodeLog(startOffset: .zero, commit: Offset(-1), batches: [batch(0, term: 1, value: "a"), batch(1, term: 2), batch(2, term: 2)])
        c.checkLogMatching(NodeID(1), a, NodeID(2), good)
        // Divergent tails with different terms are allowed (uncommitted, will be truncated).
        let divergent = NodeLog(startOffset: .zero, commit: Offset(-1), batches: [batch(0, term: 1, value: "a"), batch(1, term: 3)])
        c.checkLogMatching(NodeID(1), a, NodeID(3), divergent)
        #expect(c.violations.isEmpty)
        // Same term at offset 1, but a different entry at offset 0: log matching is broken.
        let bad = NodeLog(startOffset: .zero, commit: Offset(-1), batches: [batch(0, term: 1, value: "b"), batch(1, term: 2)])
        c.checkLogMatching(NodeID(1), a, NodeID(4), bad)
        #expect(c.violations.count == 1)
        guard case .logMismatch(_, _, let at, _) = c.violations.first else { Issue.record("wrong violation"); return }
        #expect(at == Offset(0))
    }

    @Test func leaderWithoutACommittedEntryIsReported() {
        var c = RaftInvariantChecker()
        c.observeCommitted(NodeID(1), [batch(0, term: 1), batch(1, 2, term: 1)], term: Term(1))
        let complete = NodeLog(startOffset: .zero, commit: Offset(2), batches: [batch(0, term: 1), batch(1, 2, term: 1), batch(3, term: 2)])
        c.checkLeaderCompleteness(NodeID(2), term: Term(2), log: complete)
        #expect(c.violations.isEmpty)
        let incomplete = NodeLog(startOffset: .zero, commit: Offset(0), batches: [batch(0, term: 1), batch(1, term: 2)])
        c.checkLeaderCompleteness(NodeID(3), term: Term(2), log: incomplete)
        #expect(c.violations == [.leaderIncomplete(leader: NodeID(3), term: Term(2), missing: Offset(2))])
    }

    @Test func aLateLeaderOfAnOlderTermNeedNotHoldNewerCommits() {
        var c = RaftInvariantChecker()
        c.observeCommitted(NodeID(1), [batch(0, term: 1)], term: Term(1))
        c.observeCommitted(NodeID(5), [batch(1, term: 5)], term: Term(5))
        // Elected in term 4 with votes cast before term 5 began; it has offset 0 but not 1.
        c.checkLeaderCompleteness(NodeID(2), term: Term(4), log: NodeLog(startOffset: .zero, commit: .zero, batches: [batch(0, term: 1)]))
        #expect(c.violations.isEmpty)
        c.checkLeaderCompleteness(NodeID(3), term: Term(6), log: NodeLog(startOffset: .zero, commit: .zero, batches: [batch(0, term: 1)]))
        #expect(c.violations == [.leaderIncomplete(leader: NodeID(3), term: Term(6), missing: Offset(1))])
    }

    @Test func changedCommittedEntryIsReported() {
        var c = RaftInvariantChecker()
        c.observeCommitted(NodeID(1), [batch(0, term: 1, value: "x")], term: Term(1))
        c.observeCommitted(NodeID(2), [batch(0, term: 1, value: "x")], term: Term(1))
        #expect(c.violations.isEmpty)
        c.observeCommitted(NodeID(3), [batch(0, term: 1, value: "y")], term: Term(1))
        #expect(c.violations.count == 1)
        guard case .committedEntryChanged(let n, let at, _) = c.violations.first else { Issue.record("wrong violation"); return }
        #expect(n == NodeID(3) && at == .zero)
    }

    @Test func committedEntryChangedOrLostInADurableLogIsReported() {
        var c = RaftInvariantChecker()
        c.observeCommitted(NodeID(1), [batch(0, term: 1), batch(1, term: 1)], term: Term(1))
        c.checkCommittedPrefix(NodeID(2), log: NodeLog(startOffset: .zero, commit: Offset(1), batches: [batch(0, term: 1), batch(1, term: 1)]))
        // Compacted below the log start is fine.
        c.checkCommittedPrefix(NodeID(2), log: NodeLog(startOffset: Offset(1), commit: Offset(1), batches: [batch(1, term: 1)]))
        #expect(c.violations.isEmpty)
        c.checkCommittedPrefix(NodeID(3), log: NodeLog(startOffset: .zero, commit: Offset(1), batches: [batch(0, term: 1)]))
        #expect(c.violations == [.committedEntryLost(node: NodeID(3), at: Offset(1))])
        c.checkCommittedPrefix(NodeID(4), log: NodeLog(startOffset: .zero, commit: Offset(1), batches: [batch(0, term: 1), batch(1, term: 2)]))
        #expect(c.violations.count == 2)
    }

    @Test func commitMovingBackIsReported() {
        var c = RaftInvariantChecker()
        c.observeCommit(NodeID(1), commit: Offset(3))
        c.observeCommit(NodeID(1), commit: Offset(5))
        c.observeCommit(NodeID(2), commit: Offset(1))
        #expect(c.violations.isEmpty)
        c.observeCommit(NodeID(1), commit: Offset(4))
        #expect(c.violations == [.commitMovedBack(node: NodeID(1), from: Offset(5), to: Offset(4))])
    }

    @Test func controlRecordSurfacingIsReported() throws {
        var c = RaftInvariantChecker()
        c.observeDelivered(NodeID(1), try batch(0, term: 1).records())
        #expect(c.violations.isEmpty)
        var marker = ControlBatch.leaderMarker(leader: NodeID(1), term: Term(1))
        marker.setBaseOffset(Offset(7))
        c.observeDelivered(NodeID(1), try marker.records())
        #expect(c.violations == [.controlEntrySurfaced(node: NodeID(1), at: Offset(7))])
    }

    @Test func staleReadIsReported() {
        var c = RaftInvariantChecker()
        c.observeRead(NodeID(1), readOffset: Offset(5), commitKnownAtStart: Offset(5))
        #expect(c.violations.isEmpty)
        c.observeRead(NodeID(1), readOffset: Offset(4), commitKnownAtStart: Offset(5))
        #expect(c.violations == [.staleRead(node: NodeID(1), readOffset: Offset(4), knownCommit: Offset(5))])
    }

    @Test func livenessFailureIsReported() {
        // Liveness is checked by the simulation: with every message dropped forever no leader can be
        // elected, so the run must report it.
        var options = RaftSimulationOptions()
        options.ticks = 120
        options.livenessBoundTicks = 40
        options.nodeCount = 3
        let sim = RaftSimulation(seed: 1, options: options)
        sim.dropEverything = true
        let result = sim.run()
        #expect(result.violations.contains { if case .notLive = $0 { true } else { false } })
    }
}

import BrokerModel
import Consensus
import Testing

/// Raft §5.4.2 (the paper's Figure 8): a leader must not commit an entry of an earlier term by
/// counting replicas, only through an entry of its own term. Built by hand, message by message,
/// because random simulation reaches this interleaving rarely.
@Suite struct CommitRuleTests {
    struct Net {
        var nodes: [NodeID: RaftNode<MemoryRaftStorage>] = [:]
        var disks: [NodeID: MemoryRaftStorage] = [:]
        var inFlight: [RaftEnvelope] = []

        init(count: Int32) {
            let voters = Set((1...count).map { NodeID($0) })
            for n in voters { disks[n] = MemoryRaftStorage(membership: Membership(voters: voters)) }
            for n in voters { start(n) }
        }

        mutating func start(_ n: NodeID) {
            var c = RaftConfiguration(id: n, randomSeed: 5)
            c.preVote = false
            c.checkQuorum = false
            c.appendBytesMax = 1  // one batch per append, so replicas can receive them one by one
            nodes[n] = RaftNode(configuration: c, storage: disks[n]!)
        }

        mutating func flush() {
            for n in nodes.keys.sorted() {
                while nodes[n]!.hasReady {
                    let r = nodes[n]!.ready()
                    disks[n]!.apply(r)
                    inFlight += r.messages
                    nodes[n]!.advance(r)
                }
            }
        }

        /// Delivers the messages `allowed` accepts, drops the rest, until nothing is in flight.
        mutating func run(_ allowed: (RaftEnvelope) -> Bool) {
            runTransforming { allowed($0) ? $0 : nil }
        }

        /// Delivers what `transform` returns for each message (nil drops it), until nothing is in flight.
        mutating func runTransforming(_ transform: (RaftEnvelope) -> RaftEnvelope?) {
            flush()
            var rounds = 0
            while !inFlight.isEmpty && rounds < 1000 {
                rounds += 1
                let batch = inFlight
                inFlight = []
                for m in batch {
                    guard let t = transform(m), nodes[t.to] != nil else { continue }
                    nodes[t.to]!.step(t)
                }
                flush()
            }
        }

        mutating func campaign(_ n: NodeID) {
            let term = nodes[n]!.term
            while nodes[n]!.term == term { nodes[n]!.tick() }
        }
    }

    func id(_ n: Int32) -> NodeID { NodeID(n) }
    func batch() -> RecordBatch { RecordBatch.encode(records: [Record(value: [1], timestamp: 0)]) }

    @Test func anOldTermEntryOnAMajorityIsNotCommittedUntilACurrentTermEntryIs() throws {
        var net = Net(count: 5)
        // Term 1: node 1 leads; its marker (offset 0) commits everywhere.
        net.campaign(id(1))
        net.run { _ in true }
        #expect(net.nodes[id(1)]!.isLeader && net.nodes[id(1)]!.commit == Offset(0))

        // Offset 1 (term 1) reaches only node 2.
        _ = try net.nodes[id(1)]!.propose(batch())
        net.run { $0.to == self.id(2) || $0.from == self.id(2) }
        #expect(net.disks[id(2)]!.lastOffset == Offset(1))

        // Term 2: node 5 wins with votes from 3 and 4, appends its marker at offset 1, and crashes
        // before sending it anywhere.
        net.campaign(id(5))
        let side: Set<NodeID> = [id(3), id(4), id(5)]
        net.run { side.contains($0.from) && side.contains($0.to) && !($0.from == self.id(5) && $0.message.isAppend) }
        #expect(net.nodes[id(5)]!.isLeader && net.nodes[id(5)]!.term == Term(2))
        net.nodes[id(5)] = nil

        // Node 1 restarts; after a failed term-2 election it wins term 3 (votes of 2, 3, 4).
        net.start(id(1))
        while !net.nodes[id(1)]!.isLeader {
            net.campaign(id(1))
            net.run { $0.message.isVote || $0.message.isVoteResponse }
        }
        #expect(net.nodes[id(1)]!.term == Term(3))

        // Replicate offset 1 (term 1) to nodes 2 and 3, but keep the term-3 marker (offset 2)
        // away from 3: offset 1 is now on a majority (1, 2, 3), yet it must not be committed.
        net.nodes[id(1)]!.tick()  // heartbeats restart the probes the election's drops stalled
        net.runTransforming { m in
            if m.to == self.id(4) || m.from == self.id(4) { return nil }
            if m.to == self.id(3), case .append(let previous, let entries, let commit) = m.message {
                var stripped = m
                stripped.message = .append(previous: previous, entries: entries.filter { $0.lastOffset <= Offset(1) }, commit: commit)
                return stripped
            }
            return m
        }
        #expect(net.disks[id(3)]!.lastOffset == Offset(1))
        #expect(net.nodes[id(1)]!.commit == Offset(0), "an entry of term 1 was committed by counting replicas in term 3")

        // Once the term-3 marker is on a majority, everything before it commits with it.
        net.nodes[id(1)]!.tick()
        net.run { $0.to != self.id(4) && $0.from != self.id(4) }
        #expect(net.nodes[id(1)]!.commit == Offset(2))
    }
}

extension RaftMessage {
    var isAppend: Bool { if case .append = self { true } else { false } }
    var isVote: Bool { if case .vote = self { true } else { false } }
    var isVoteResponse: Bool { if case .voteResponse = self { true } else { false } }
}

import BrokerModel
import Consensus
import Foundation

/// Runs a Raft scenario script and produces its transcript (etcd's data-driven tests, in our words).
///
/// Script syntax, one command per line (`#` starts a comment):
///
///     cluster 3 [no-prevote] [no-checkquorum]   nodes 1...3, all voters
///     tick 1 [times]                            ticks node 1
///     tick-all 20                               20 times: tick every node, then stabilize
///     (any node number may be written `leader`: the leader of the highest term)
///     campaign 1                                ticks node 1 until it stops being a follower
///     stabilize                                 persist every Ready, deliver every message, until quiet
///     propose 1 hello                           node 1 proposes a one-record batch
///     isolate 3 / partition 1 2 | 3 / cut 1 3 (one way, 1 cannot send to 3) / heal
///     crash 3 / restart 3                       crash loses nothing durable (every Ready is synced)
///     transfer 1 2                              leader 1 hands leadership to 2
///     add-learner 1 4 / promote 1 4 / remove 1 2    membership changes proposed at leader 1
///     compact 1 7                               node 1 drops its log through offset 7
///     read 1 42                                 read-index with context 42 at node 1
///     status / log 1                            print state
///
/// Transcript: each command echoed as `> command`, then what happened: delivered messages
/// (`from->to tTERM ...`), events (`n: ...`), commits and read states.
final class ScenarioCluster {
    var nodes: [NodeID: RaftNode<MemoryRaftStorage>] = [:]
    var disks: [NodeID: MemoryRaftStorage] = [:]
    var blocked: Set<[NodeID]> = []
    var queue: [RaftEnvelope] = []
    var output: [String] = []
    var preVote = true
    var checkQuorum = true
    var nextValue = 0

    func out(_ s: String) { output.append(s) }

    func configuration(_ id: NodeID) -> RaftConfiguration {
        var c = RaftConfiguration(id: id, randomSeed: 42)
        c.electionTicks = 10
        c.preVote = preVote
        c.checkQuorum = checkQuorum
        c.inflightAppendsMax = 2
        c.appendBytesMax = 512
        return c
    }

    func startNode(_ id: NodeID, membership: Membership) {
        let disk = disks[id] ?? MemoryRaftStorage(membership: membership)
        disks[id] = disk
        nodes[id] = RaftNode(configuration: configuration(id), storage: disk)
    }

    func run(script: String) -> String {
        for raw in script.split(separator: "\n", omittingEmptySubsequences: false) {
            let line = raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init)?
                .trimmingCharacters(in: .whitespaces) ?? ""
            if line.isEmpty { continue }
            out("> \(line)")
            execute(line.split(separator: " ").map(String.init))
        }
        return output.joined(separator: "\n") + "\n"
    }

    /// A node number, or `leader`: the leader of the highest term.
    func id(_ s: String) -> NodeID {
        if s == "leader" {
            return nodes.filter { $0.value.isLeader }.max { $0.value.term < $1.value.term }?.key ?? NodeID(0)
        }
        return NodeID(Int32(s)!)
    }

    func execute(_ w: [String]) {
        let needsRunningNode: Set<String> = ["tick", "campaign", "propose", "transfer", "add-learner", "promote", "remove", "read"]
        if needsRunningNode.contains(w[0]) && nodes[id(w[1])] == nil {
            out("error: node \(w[1]) is not running")
            return
        }
        switch w[0] {
        case "cluster":
            preVote = !w.contains("no-prevote")
            checkQuorum = !w.contains("no-checkquorum")
            let ids = Set((1...Int32(w[1])!).map { NodeID($0) })
            for n in ids.sorted() { startNode(n, membership: Membership(voters: ids)) }
        case "tick":
            let n = id(w[1])
            for _ in 0..<(w.count > 2 ? Int(w[2])! : 1) { nodes[n]?.tick() }
        case "tick-all":
            for _ in 0..<Int(w[1])! {
                for n in nodes.keys.sorted() { nodes[n]!.tick() }
                stabilize()
            }
        case "campaign":
            let n = id(w[1])
            var ticks = 0
            while nodes[n]!.role == .follower && ticks < 100 {
                nodes[n]!.tick()
                ticks += 1
            }
            out("(\(ticks) ticks)")
        case "stabilize": stabilize()
        case "propose":
            let n = id(w[1])
            nextValue += 1
            let value = w.count > 2 ? w[2] : "v\(nextValue)"
            let count = w.count > 3 ? Int(w[3])! : 1
            let batch = RecordBatch.encode(records: (0..<count).map { _ in Record(value: Array(value.utf8), timestamp: 0) })
            report(catching: { () throws(ProposalError) -> LogPosition in try nodes[n]!.propose(batch) })
        case "isolate":
            let n = id(w[1])
            for m in nodes.keys where m != n {
                blocked.insert([n, m])
                blocked.insert([m, n])
            }
        case "partition":
            let bar = w.firstIndex(of: "|")!
            let left = w[1..<bar].map(id)
            let right = w[(bar + 1)...].map(id)
            for a in left { for b in right { blocked.insert([a, b]); blocked.insert([b, a]) } }
        case "cut": blocked.insert([id(w[1]), id(w[2])])
        case "heal": blocked = []
        case "crash":
            let n = id(w[1])
            nodes[n] = nil
            queue.removeAll { $0.to == n }
        case "restart":
            let n = id(w[1])
            startNode(n, membership: .empty)
            out("\(n): restarted \(nodes[n]!.hardState) log=\(nodes[n]!.logStartOffset)...\(nodes[n]!.lastOffset)")
        case "transfer":
            let n = id(w[1])
            do { try nodes[n]!.transferLeadership(to: id(w[2])) } catch { out("error: \(error)") }
        case "add-learner", "promote", "remove":
            let n = id(w[1])
            let target = id(w[2])
            let change: MembershipChange =
                w[0] == "add-learner" ? .addLearner(target) : w[0] == "promote" ? .promote(target) : .remove(target)
            if w[0] == "add-learner" && nodes[target] == nil { startNode(target, membership: .empty) }
            report(catching: { () throws(ProposalError) -> LogPosition in try nodes[n]!.proposeMembershipChange(change) })
        case "compact":
            let n = id(w[1])
            disks[n]!.compact(through: Offset(Int64(w[2])!))
            out("\(n): log now starts at \(disks[n]!.logStartOffset)")
        case "read":
            let n = id(w[1])
            do { try nodes[n]!.readIndex(context: UInt64(w[2])!) } catch { out("error: \(error)") }
        case "status":
            for (n, r) in nodes.sorted(by: { $0.key < $1.key }) {
                out("\(n): \(r.role.rawValue) term=\(r.term) leader=\(r.leader.map(\.description) ?? "-") commit=\(r.commit) log=\(r.logStartOffset)...\(r.lastOffset) \(r.membership)")
            }
        case "log":
            let n = id(w[1])
            let d = disks[n]!
            let batches = d.stored.map { "\($0.baseOffset)-\($0.lastOffset)@\($0.term)\($0.isControl ? "c" : "")" }
            out("\(n): start=\(d.logStartOffset) [\(batches.joined(separator: " "))]")
        default:
            out("unknown command \(w[0])")
        }
    }

    func report(catching body: () throws(ProposalError) -> LogPosition) {
        do {
            let p = try body()
            out("proposed at \(p)")
        } catch {
            out("error: \(error)")
        }
    }

    /// Persists and sends every Ready, delivers every message, until nothing moves.
    func stabilize() {
        for _ in 0..<10_000 {
            var moved = false
            for n in nodes.keys.sorted() {
                guard var node = nodes[n], node.hasReady else { continue }
                let ready = node.ready()
                disks[n]!.apply(ready)
                for e in ready.events { out("\(n): \(e)") }
                if let c = ready.commit { out("\(n): commit \(c)") }
                for r in ready.readStates { out("\(n): read \(r.context) ready at \(r.offset)") }
                for m in ready.messages where !blocked.contains([m.from, m.to]) { queue.append(m) }
                node.advance(ready)
                nodes[n] = node
                moved = true
            }
            let deliver = queue
            queue = []
            for m in deliver {
                guard nodes[m.to] != nil else { continue }
                out("\(m)")
                nodes[m.to]!.step(m)
                moved = true
            }
            if !moved { return }
        }
        out("did not stabilize")
    }
}

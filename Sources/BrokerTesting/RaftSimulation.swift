import BrokerModel
import Consensus

/// Knobs of one simulated run. Everything else is drawn from the seed.
public struct RaftSimulationOptions: Sendable {
    /// Logical ticks of the whole run; faults are injected during the first `faultFraction` of it.
    public var ticks: Int = 400
    public var faultFraction: Double = 0.6
    /// After faults heal, a leader must be elected and a proposal committed within this many ticks.
    public var livenessBoundTicks: Int = 120
    public var electionTicks: Int = 10
    /// Node count; when nil, 3 or 5 drawn from the seed.
    public var nodeCount: Int?
    public var membershipChanges = true
    /// Also trace every message sent (replaying one seed).
    public var traceMessages = false
    public init() {}
}

/// Counts from one or many runs.
public struct RaftSimulationStats: Sendable, CustomStringConvertible {
    public var seeds = 0
    public var ticks = 0
    public var messagesSent = 0
    public var messagesDropped = 0
    public var messagesDuplicated = 0
    public var partitions = 0
    public var crashes = 0
    public var slowDisks = 0
    public var compactions = 0
    public var membershipChanges = 0
    public var transfers = 0
    public var elections = 0
    public var commits = 0
    public var reads = 0
    public init() {}
    public var faults: Int { messagesDropped + messagesDuplicated + partitions + crashes + slowDisks }
    public mutating func add(_ o: RaftSimulationStats) {
        seeds += o.seeds; ticks += o.ticks; messagesSent += o.messagesSent; messagesDropped += o.messagesDropped
        messagesDuplicated += o.messagesDuplicated; partitions += o.partitions; crashes += o.crashes; slowDisks += o.slowDisks
        compactions += o.compactions; membershipChanges += o.membershipChanges; transfers += o.transfers
        elections += o.elections; commits += o.commits; reads += o.reads
    }
    public var description: String {
        "seeds=\(seeds) ticks=\(ticks) messages=\(messagesSent) faults=\(faults) (dropped=\(messagesDropped) duplicated=\(messagesDuplicated) partitions=\(partitions) crashes=\(crashes) slow-disks=\(slowDisks)) compactions=\(compactions) membership-changes=\(membershipChanges) transfers=\(transfers) leaders-elected=\(elections) batches-committed=\(commits) reads=\(reads)"
    }
}

public struct RaftSimulationResult: Sendable {
    public var seed: UInt64
    public var violations: [RaftViolation]
    public var stats: RaftSimulationStats
    /// The tail of the event trace (for a failing seed).
    public var trace: [String]
    public var passed: Bool { violations.isEmpty }
}

/// A whole Raft group in one process: simulated network, disks and clocks, driven by one seed.
///
/// Time advances in steps; each node ticks every 3–5 steps (tick skew). Messages take 1–`delayMax`
/// steps and may be dropped, duplicated, reordered or cut by symmetric or one-way partitions.
/// A node persists each `Ready` on its disk, which may be slow; only when the write completes are
/// its messages sent (the core's contract). A crash loses whatever was not yet durable — a random
/// prefix of the pending write may survive, as after a power cut. After the fault phase everything
/// heals and liveness is required within a bound.
public final class RaftSimulation {
    final class Node {
        let id: NodeID
        var disk: MemoryRaftStorage
        var raft: RaftNode<MemoryRaftStorage>?
        var incarnation: UInt64 = 0
        var pending: Ready?
        var pendingDoneAt = 0
        var inbox: [RaftEnvelope] = []
        var pendingTicks = 0
        var tickPeriod = 4
        var nextTickAt = 0
        var slowDisk = false
        var restartAt = -1
        var pendingReads: [UInt64: Offset] = [:]
        init(id: NodeID, disk: MemoryRaftStorage) {
            self.id = id
            self.disk = disk
        }
        var alive: Bool { raft != nil }
    }

    public let seed: UInt64
    let options: RaftSimulationOptions
    var random: SplitMix64
    var nodes: [Node] = []
    var now = 0
    var inflight: [[RaftEnvelope]]
    let delayMax: Int
    var checker = RaftInvariantChecker()
    var stats = RaftSimulationStats()
    var trace: [String] = []
    var traceMax = 400
    var blocked: Set<Pair> = []
    var nextNodeID: Int32
    var nextPayload = 0
    var nextReadContext: UInt64 = 1
    // Fault rates for this seed, per million.
    let dropRate: Int
    let duplicateRate: Int
    let crashRate: Int
    let partitionRate: Int
    let slowDiskRate: Int
    var healed = false
    /// Test hook: drop every message, even after healing, to show the liveness check can fail.
    public var dropEverything = false
    var healedAt = 0
    var committedAfterHeal = false
    var proposalsAfterHeal: Set<BatchFingerprintKey> = []

    struct Pair: Hashable { var from: NodeID; var to: NodeID }
    struct BatchFingerprintKey: Hashable { var lastOffset: Offset; var term: Term }

    public init(seed: UInt64, options: RaftSimulationOptions = RaftSimulationOptions()) {
        self.seed = seed
        self.options = options
        if options.traceMessages { traceMax = 200_000 }
        var r = SplitMix64(seed: seed)
        let count = options.nodeCount ?? (r.below(2) == 0 ? 3 : 5)
        delayMax = 2 + r.below(8)
        dropRate = [0, 10_000, 50_000, 150_000][r.below(4)]
        duplicateRate = [0, 10_000, 50_000][r.below(3)]
        crashRate = [0, 500, 2_000][r.below(3)]
        partitionRate = [0, 1_000, 4_000][r.below(3)]
        slowDiskRate = [0, 1_000, 5_000][r.below(3)]
        random = r
        inflight = Array(repeating: [], count: delayMax * 3 + 2)
        nextNodeID = Int32(count + 1)
        let members = Set((1...count).map { NodeID(Int32($0)) })
        for n in members.sorted() {
            let node = Node(id: n, disk: MemoryRaftStorage(membership: Membership(voters: members)))
            node.tickPeriod = 3 + random.below(3)
            node.nextTickAt = random.below(node.tickPeriod)
            nodes.append(node)
            start(node)
        }
    }

    func log(_ s: @autoclosure () -> String) {
        if trace.count >= traceMax { trace.removeFirst(traceMax / 4) }
        trace.append("[\(now)] \(s())")
    }

    func start(_ node: Node) {
        var c = RaftConfiguration(id: node.id, randomSeed: seed &+ node.incarnation &* 7919)
        c.electionTicks = options.electionTicks
        c.inflightAppendsMax = 4
        c.appendBytesMax = 4096
        node.incarnation += 1
        node.raft = RaftNode(configuration: c, storage: node.disk)
        node.restartAt = -1
        log("start \(node.id) \(node.disk.hardState) log=\(node.disk.logStartOffset)...\(node.disk.lastOffset)")
    }

    /// Runs the whole scenario and returns what the checkers found.
    public func run() -> RaftSimulationResult {
        let stepsPerTick = 4
        let totalSteps = options.ticks * stepsPerTick
        let healStep = Int(Double(totalSteps) * options.faultFraction)
        while now < totalSteps && checker.violations.isEmpty {
            if !healed && now >= healStep { heal() }
            if !healed { injectFaults() }
            deliver()
            for node in nodes { drive(node) }
            if now % 64 == 0 { checkLogs() }
            if healed && !committedAfterHeal && now - healedAt > options.livenessBoundTicks * stepsPerTick {
                checker.reportNotLive("no proposal committed within \(options.livenessBoundTicks) ticks after faults healed")
            }
            now += 1
        }
        if checker.violations.isEmpty { checkLogs() }
        if checker.violations.isEmpty && !committedAfterHeal {
            checker.reportNotLive("run ended without a commit after faults healed")
        }
        stats.seeds = 1
        stats.ticks = options.ticks
        stats.commits = checker.committed.count
        return RaftSimulationResult(seed: seed, violations: checker.violations, stats: stats, trace: trace)
    }

    // MARK: faults

    func heal() {
        healed = true
        healedAt = now
        blocked = []
        for n in nodes {
            n.slowDisk = false
            if !n.alive { start(n) }
        }
        log("heal")
    }

    func injectFaults() {
        if random.chance(perMillion: partitionRate) {
            stats.partitions += 1
            blocked = []
            let alive = nodes.map(\.id)
            switch random.below(3) {
            case 0:
                log("heal partitions")
            case 1:
                // Symmetric: split into two sides.
                var side = Set<NodeID>()
                for n in alive where random.below(2) == 0 { side.insert(n) }
                for a in alive { for b in alive where side.contains(a) != side.contains(b) { blocked.insert(Pair(from: a, to: b)) } }
                log("partition \(side.sorted()) | rest")
            default:
                // One-way: one node cannot send to (or cannot hear from) the others.
                let a = alive[random.below(alive.count)]
                let outgoing = random.below(2) == 0
                for b in alive where b != a { blocked.insert(outgoing ? Pair(from: a, to: b) : Pair(from: b, to: a)) }
                log("one-way partition \(a) \(outgoing ? "cannot send" : "cannot hear")")
            }
        }
        for n in nodes {
            if n.alive && random.chance(perMillion: crashRate) { crash(n) }
            if !n.alive && n.restartAt >= 0 && now >= n.restartAt { start(n) }
            if random.chance(perMillion: slowDiskRate) {
                n.slowDisk.toggle()
                if n.slowDisk { stats.slowDisks += 1 }
            }
        }
    }

    func crash(_ n: Node) {
        stats.crashes += 1
        if let r = n.pending {
            // Power cut mid-write: some prefix of the write reached the platter.
            let steps = (r.snapshot == nil ? 0 : 1) + r.entries.count + (r.hardState == nil ? 0 : 1)
            var keep = random.below(steps + 1)
            if let s = r.snapshot, keep > 0 { n.disk.install(s); keep -= 1 }
            n.disk.append(Array(r.entries.prefix(keep)))
            keep -= min(keep, r.entries.count)
            if let h = r.hardState, keep > 0 { n.disk.setHardState(h) }
        }
        n.pending = nil
        n.raft = nil
        n.inbox = []
        n.pendingTicks = 0
        n.pendingReads = [:]
        n.restartAt = now + 4 * (1 + random.below(30))
        log("crash \(n.id)")
    }

    // MARK: network

    func send(_ m: RaftEnvelope) {
        stats.messagesSent += 1
        if options.traceMessages { log("send \(m)") }
        if blocked.contains(Pair(from: m.from, to: m.to)) || dropEverything { return }
        if !healed && random.chance(perMillion: dropRate) {
            stats.messagesDropped += 1
            return
        }
        var copies = 1
        if !healed && random.chance(perMillion: duplicateRate) {
            stats.messagesDuplicated += 1
            copies = 2
        }
        for _ in 0..<copies {
            let delay = 1 + random.below(delayMax)
            inflight[(now + delay) % inflight.count].append(m)
        }
    }

    func deliver() {
        let slot = now % inflight.count
        let due = inflight[slot]
        inflight[slot] = []
        for m in due {
            guard let n = nodes.first(where: { $0.id == m.to }), n.alive else { continue }
            if blocked.contains(Pair(from: m.from, to: m.to)) { continue }
            // A node's receive buffer is bounded; beyond it messages are lost like on a full socket.
            if n.inbox.count < 256 { n.inbox.append(m) }
        }
    }

    // MARK: driving one node

    func drive(_ n: Node) {
        guard n.alive else { return }
        if now >= n.nextTickAt {
            n.nextTickAt = now + n.tickPeriod
            n.pendingTicks = min(n.pendingTicks + 1, 3)
        }
        if n.pending != nil {
            if now < n.pendingDoneAt { return }
            complete(n)
        }
        // Move the node out while driving it so its arrays are uniquely referenced (no copy on write).
        guard var raft = n.raft.take() else { return }
        for m in n.inbox { raft.step(m) }
        n.inbox = []
        for _ in 0..<n.pendingTicks { raft.tick() }
        n.pendingTicks = 0
        if raft.isLeader { clientActions(n, &raft) }
        if raft.hasReady {
            let ready = raft.ready()
            n.pending = ready
            let needsDisk = ready.snapshot != nil || !ready.entries.isEmpty || ready.hardState != nil
            n.pendingDoneAt = needsDisk ? now + (n.slowDisk ? 4 + random.below(24) : random.below(2)) : now
            n.raft = raft
            if n.pendingDoneAt == now { complete(n) }
        } else {
            n.raft = raft
        }
        maybeCompact(n)
    }

    func complete(_ n: Node) {
        guard let ready = n.pending, var raft = n.raft.take() else { return }
        n.pending = nil
        if let s = ready.snapshot, let data = s.data, data != Array("state@\(s.point.offset)".utf8) {
            checker.reportSnapshotMismatch(n.id, at: s.point.offset)
        }
        n.disk.apply(ready)
        for e in ready.events {
            log("\(n.id): \(e)")
            if case .becameLeader(let term) = e {
                stats.elections += 1
                checker.observeLeader(n.id, term: term)
                checker.checkLeaderCompleteness(n.id, term: term, log: NodeLog(n.disk))
            }
        }
        if let c = ready.commit { checker.observeCommit(n.id, commit: c) }
        if !ready.committedEntries.isEmpty {
            checker.observeCommitted(n.id, ready.committedEntries, term: raft.term)
            var records: [StoredRecord] = []
            for b in ready.committedEntries where !b.isControl {
                if let rs = try? b.records() { records.append(contentsOf: rs) }
                if healed && proposalsAfterHeal.contains(BatchFingerprintKey(lastOffset: b.lastOffset, term: b.term)) {
                    committedAfterHeal = true
                }
            }
            checker.observeDelivered(n.id, records)
        }
        for rs in ready.readStates {
            stats.reads += 1
            if let known = n.pendingReads.removeValue(forKey: rs.context) {
                checker.observeRead(n.id, readOffset: rs.offset, commitKnownAtStart: known)
            }
        }
        if let s = ready.softState, s.role != .leader { n.pendingReads = [:] }
        for m in ready.messages { send(m) }
        raft.advance(ready)
        n.raft = raft
    }

    func clientActions(_ n: Node, _ raft: inout RaftNode<MemoryRaftStorage>) {
        if random.below(10) == 0 {
            nextPayload += 1
            let count = 1 + random.below(3)
            let records = (0..<count).map { i in
                Record(key: Array("k\(nextPayload)".utf8), value: Array("seed\(seed)-p\(nextPayload)-\(i)".utf8), timestamp: Int64(now))
            }
            if let position = try? raft.propose(RecordBatch.encode(records: records)), healed {
                proposalsAfterHeal.insert(BatchFingerprintKey(lastOffset: position.offset, term: position.term))
            }
        }
        if random.below(40) == 0 {
            let context = nextReadContext
            nextReadContext += 1
            if (try? raft.readIndex(context: context)) != nil { n.pendingReads[context] = checker.highestCommit }
        }
        guard !healed else { return }
        if options.membershipChanges && random.below(150) == 0 { changeMembership(n, &raft) }
        if random.below(400) == 0 {
            let others = raft.membership.voters.sorted().filter { $0 != n.id }
            if !others.isEmpty, (try? raft.transferLeadership(to: others[random.below(others.count)])) != nil {
                stats.transfers += 1
                log("\(n.id): transfer leadership")
            }
        }
    }

    /// Add a learner, promote it once caught up, remove a voter (sometimes the leader itself),
    /// keeping between 3 and 5 voters.
    func changeMembership(_ n: Node, _ raft: inout RaftNode<MemoryRaftStorage>) {
        let m = raft.membership
        let change: MembershipChange
        if let learner = m.learners.sorted().first {
            change = .promote(learner)
        } else if m.voters.count > 3 && (m.voters.count >= 5 || random.below(2) == 0) {
            let voters = m.voters.sorted()
            change = .remove(voters[random.below(voters.count)])
        } else if m.voters.count < 5 && nextNodeID < 12 {
            let id = NodeID(nextNodeID)
            if !nodes.contains(where: { $0.id == id }) {
                let node = Node(id: id, disk: MemoryRaftStorage(membership: .empty))
                node.tickPeriod = 3 + random.below(3)
                node.nextTickAt = now + random.below(node.tickPeriod)
                nodes.append(node)
                start(node)
            }
            change = .addLearner(id)
        } else {
            return
        }
        do {
            _ = try raft.proposeMembershipChange(change)
            if case .addLearner = change { nextNodeID += 1 }
            stats.membershipChanges += 1
            log("\(n.id): propose \(change)")
        } catch {}
    }

    /// Retention: now and then a node drops committed batches from the front of its log.
    func maybeCompact(_ n: Node) {
        guard n.pending == nil, let raft = n.raft, random.below(300) == 0 else { return }
        let limit = min(raft.applied, n.disk.hardState.commit)
        guard limit > n.disk.snapshotPoint.offset, let b = n.disk.batch(containing: limit) else { return }
        let through = b.lastOffset == limit ? limit : b.baseOffset - 1
        guard through > n.disk.snapshotPoint.offset else { return }
        // The "state machine image" is a token naming its offset, so a follower that receives it
        // can check the hand-over carried the image of exactly the snapshot point.
        n.disk.compact(through: through, data: Array("state@\(through)".utf8))
        stats.compactions += 1
        log("\(n.id): compact through \(through)")
    }

    func checkLogs() {
        let logs = nodes.map { ($0.id, NodeLog($0.disk)) }
        for (id, log) in logs { checker.checkCommittedPrefix(id, log: log) }
        for i in logs.indices {
            for j in logs.indices where j > i {
                checker.checkLogMatching(logs[i].0, logs[i].1, logs[j].0, logs[j].1)
            }
        }
    }
}

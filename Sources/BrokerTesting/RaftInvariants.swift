import BrokerModel
import Consensus

/// One broken Raft invariant, with enough detail to debug it from the seed's replay.
public enum RaftViolation: Hashable, Sendable, CustomStringConvertible {
    case twoLeadersInOneTerm(term: Term, first: NodeID, second: NodeID)
    case logMismatch(nodes: NodeID, NodeID, at: Offset, detail: String)
    case leaderIncomplete(leader: NodeID, term: Term, missing: Offset)
    case committedEntryChanged(node: NodeID, at: Offset, detail: String)
    case committedEntryLost(node: NodeID, at: Offset)
    case commitMovedBack(node: NodeID, from: Offset, to: Offset)
    case controlEntrySurfaced(node: NodeID, at: Offset)
    case staleRead(node: NodeID, readOffset: Offset, knownCommit: Offset)
    case notLive(detail: String)

    public var description: String {
        switch self {
        case .twoLeadersInOneTerm(let t, let a, let b): "two leaders in term \(t): \(a) and \(b)"
        case .logMismatch(let a, let b, let o, let d): "log matching broken between \(a) and \(b) at \(o): \(d)"
        case .leaderIncomplete(let l, let t, let o): "leader \(l) of term \(t) lacks committed entry \(o)"
        case .committedEntryChanged(let n, let o, let d): "committed entry \(o) changed on \(n): \(d)"
        case .committedEntryLost(let n, let o): "committed entry \(o) lost on \(n)"
        case .commitMovedBack(let n, let a, let b): "commit moved back on \(n) from \(a) to \(b)"
        case .controlEntrySurfaced(let n, let o): "control entry surfaced as a record on \(n) at \(o)"
        case .staleRead(let n, let r, let c): "read index \(r) on \(n) below commit \(c) known when the read started"
        case .notLive(let d): "not live: \(d)"
        }
    }
}

/// What identifies a batch: position, term and the CRC of its records.
public struct BatchFingerprint: Hashable, Sendable, CustomStringConvertible {
    public var baseOffset: Offset
    public var lastOffset: Offset
    public var term: Term
    public var crc: UInt32
    public init(_ batch: RecordBatch) {
        baseOffset = batch.baseOffset
        lastOffset = batch.lastOffset
        term = batch.term
        crc = batch.crc
    }
    public var description: String { "\(baseOffset)-\(lastOffset)@\(term)#\(crc)" }
}

/// Checks Raft's safety properties against observations of a running cluster (the simulator's) or
/// against a hand-made history (the tests that show each checker can fail).
///
/// The checker remembers every committed batch any node ever reported and every leader of every
/// term; it is fed only what a node made durable, because only that is visible to clients.
public struct RaftInvariantChecker: Sendable {
    public private(set) var violations: [RaftViolation] = []
    /// Every committed batch ever reported by any node, by last offset.
    public private(set) var committed: [Offset: BatchFingerprint] = [:]
    /// The lowest term in which a node reported each committed batch: the term in which it was
    /// committed (the leader reports its commit before any follower can learn of it).
    public private(set) var commitTerm: [Offset: Term] = [:]
    public private(set) var leaders: [Term: NodeID] = [:]
    public private(set) var commitByNode: [NodeID: Offset] = [:]
    /// Highest commit any node has announced (for read-index freshness).
    public private(set) var highestCommit = Offset(-1)
    /// Stop recording after this many so a broken run does not eat memory.
    public var violationsMax = 20

    public init() {}

    mutating func report(_ v: RaftViolation) {
        if violations.count < violationsMax { violations.append(v) }
    }

    /// Election safety: at most one leader per term.
    public mutating func observeLeader(_ node: NodeID, term: Term) {
        if let existing = leaders[term], existing != node {
            report(.twoLeadersInOneTerm(term: term, first: existing, second: node))
        } else {
            leaders[term] = node
        }
    }

    /// A node made `commit` durable and announced it: it must never go back, even across restarts.
    public mutating func observeCommit(_ node: NodeID, commit: Offset) {
        if let previous = commitByNode[node], commit < previous {
            report(.commitMovedBack(node: node, from: previous, to: commit))
        }
        commitByNode[node] = max(commit, commitByNode[node] ?? commit)
        highestCommit = max(highestCommit, commit)
    }

    /// A node in `term` applied these committed batches: each must equal what any other node
    /// committed there.
    public mutating func observeCommitted(_ node: NodeID, _ batches: [RecordBatch], term: Term) {
        for b in batches {
            commitTerm[b.lastOffset] = min(term, commitTerm[b.lastOffset] ?? term)
            let f = BatchFingerprint(b)
            if let known = committed[b.lastOffset] {
                if known != f { report(.committedEntryChanged(node: node, at: b.lastOffset, detail: "\(known) became \(f)")) }
            } else {
                committed[b.lastOffset] = f
            }
        }
    }

    /// Records a node delivered to its readers: control batches must never be among them.
    public mutating func observeDelivered(_ node: NodeID, _ records: [StoredRecord]) {
        for r in records where r.record.key.map(ControlBatch.isRaftControlKey) ?? false {
            report(.controlEntrySurfaced(node: node, at: r.offset))
        }
    }

    /// A read-index answer must not be older than the highest commit known when the read began.
    public mutating func observeRead(_ node: NodeID, readOffset: Offset, commitKnownAtStart: Offset) {
        if readOffset < commitKnownAtStart {
            report(.staleRead(node: node, readOffset: readOffset, knownCommit: commitKnownAtStart))
        }
    }

    /// Leader completeness: a node that just became leader of `term` holds every batch committed in
    /// an earlier term, above its log start. (A leader of an old term, elected late, need not hold
    /// what a newer term's leader has committed meanwhile.)
    public mutating func checkLeaderCompleteness(_ node: NodeID, term: Term, log: NodeLog) {
        for (offset, f) in committed where offset >= log.startOffset && (commitTerm[offset] ?? .zero) < term {
            guard let b = log.batch(endingAt: offset), BatchFingerprint(b) == f else {
                report(.leaderIncomplete(leader: node, term: term, missing: offset))
                return
            }
        }
    }

    /// A node's durable log must hold, unchanged, every committed batch between its log start and
    /// its durable commit.
    public mutating func checkCommittedPrefix(_ node: NodeID, log: NodeLog) {
        for b in log.batches where b.lastOffset <= log.commit {
            if let f = committed[b.lastOffset], f != BatchFingerprint(b) {
                report(.committedEntryChanged(node: node, at: b.lastOffset, detail: "\(f) became \(BatchFingerprint(b))"))
                return
            }
        }
        for (offset, _) in committed where offset >= log.startOffset && offset <= log.commit {
            if log.batch(endingAt: offset) == nil {
                report(.committedEntryLost(node: node, at: offset))
                return
            }
        }
    }

    /// Log matching: if two logs hold a batch ending at the same offset with the same term, they are
    /// identical up to there (compared from the later of the two log starts).
    public mutating func checkLogMatching(_ a: NodeID, _ logA: NodeLog, _ b: NodeID, _ logB: NodeLog) {
        // Walk both logs backwards from the highest common position with equal terms.
        var i = logA.batches.count - 1
        var j = logB.batches.count - 1
        var matched = false
        while i >= 0 && j >= 0 {
            let x = logA.batches[i]
            let y = logB.batches[j]
            if !matched {
                if x.lastOffset > y.lastOffset { i -= 1; continue }
                if y.lastOffset > x.lastOffset { j -= 1; continue }
                if x.term != y.term { i -= 1; j -= 1; continue }
                matched = true
            }
            if BatchFingerprint(x) != BatchFingerprint(y) {
                report(.logMismatch(nodes: a, b, at: min(x.lastOffset, y.lastOffset), detail: "\(BatchFingerprint(x)) vs \(BatchFingerprint(y))"))
                return
            }
            i -= 1
            j -= 1
        }
    }

    public mutating func reportNotLive(_ detail: String) { report(.notLive(detail: detail)) }

    /// A snapshot whose state machine image is not the image at its point.
    public mutating func reportSnapshotMismatch(_ node: NodeID, at offset: Offset) {
        report(.committedEntryChanged(node: node, at: offset, detail: "snapshot image does not match its point"))
    }
}

/// A node's durable log as the checker sees it.
public struct NodeLog: Sendable {
    public var startOffset: Offset
    public var commit: Offset
    public var batches: [RecordBatch]
    public init(startOffset: Offset, commit: Offset, batches: [RecordBatch]) {
        self.startOffset = startOffset
        self.commit = commit
        self.batches = batches
    }
    public init(_ storage: MemoryRaftStorage) {
        self.init(startOffset: storage.logStartOffset, commit: storage.hardState.commit, batches: storage.stored)
    }
    public func batch(endingAt offset: Offset) -> RecordBatch? {
        var low = 0
        var high = batches.count - 1
        while low <= high {
            let mid = (low + high) / 2
            let o = batches[mid].lastOffset
            if o == offset { return batches[mid] }
            if o < offset { low = mid + 1 } else { high = mid - 1 }
        }
        return nil
    }
}

import BrokerModel

/// A message between two members of one Raft group. Value type; the transport may batch many
/// groups' messages per node pair (a later concern) but never changes their content.
///
/// `term` is the sender's current term, except in a granted pre-vote response, where it is the
/// term the pre-candidate proposed (etcd's convention), and in a pre-vote request, where it is the
/// term the sender would campaign for (its own term + 1) without having adopted it.
public struct RaftEnvelope: Equatable, Sendable, CustomStringConvertible {
    public var from: NodeID
    public var to: NodeID
    public var term: Term
    public var message: RaftMessage
    public init(from: NodeID, to: NodeID, term: Term, message: RaftMessage) {
        self.from = from
        self.to = to
        self.term = term
        self.message = message
    }
    public var description: String { "\(from)->\(to) t\(term) \(message)" }
}

public enum RaftMessage: Equatable, Sendable, CustomStringConvertible {
    case preVote(lastLog: LogPosition)
    case preVoteResponse(granted: Bool)
    /// `isLeadershipTransfer` lets the vote through a voter's leader lease (the old leader asked for it).
    case vote(lastLog: LogPosition, isLeadershipTransfer: Bool)
    case voteResponse(granted: Bool)
    /// Entries follow `previous`; `commit` is the leader's commit offset.
    case append(previous: LogPosition, entries: [RecordBatch], commit: Offset)
    case appendResponse(AppendResult)
    /// `commit` is at most what the follower is known to hold. `readSequence` lets the leader
    /// confirm pending linearizable reads (read-index).
    case heartbeat(commit: Offset, readSequence: UInt64)
    case heartbeatResponse(readSequence: UInt64)
    case installSnapshot(Snapshot)
    /// Leadership transfer: the receiver campaigns at once, skipping pre-vote.
    case timeoutNow

    public var description: String {
        switch self {
        case .preVote(let l): "PreVote last=\(l)"
        case .preVoteResponse(let g): "PreVoteResponse \(g ? "granted" : "rejected")"
        case .vote(let l, let t): "Vote last=\(l)\(t ? " transfer" : "")"
        case .voteResponse(let g): "VoteResponse \(g ? "granted" : "rejected")"
        case .append(let p, let e, let c):
            "Append prev=\(p) entries=[\(e.map { "\($0.baseOffset)-\($0.lastOffset)@\($0.partitionLeaderEpoch)\($0.isControl ? "c" : "")" }.joined(separator: " "))] commit=\(c)"
        case .appendResponse(let r): "AppendResponse \(r)"
        case .heartbeat(let c, let s): "Heartbeat commit=\(c) read=\(s)"
        case .heartbeatResponse(let s): "HeartbeatResponse read=\(s)"
        case .installSnapshot(let s): "InstallSnapshot \(s)"
        case .timeoutNow: "TimeoutNow"
        }
    }
}

public enum AppendResult: Hashable, Sendable, CustomStringConvertible {
    /// The follower's log matches the leader's through `match` and that prefix is durable.
    case accepted(match: Offset)
    /// The entry before the append did not match. `hint` is the follower's last position at or
    /// before `previousOffset` whose term is at most the leader's term there: the leader can skip
    /// back a whole term per round trip (fast conflict resolution).
    case rejected(previousOffset: Offset, hint: LogPosition)
    public var description: String {
        switch self {
        case .accepted(let m): "accepted match=\(m)"
        case .rejected(let p, let h): "rejected prev=\(p) hint=\(h)"
        }
    }
}

/// Something worth a log line. Not needed for correctness; golden transcripts print them.
public enum RaftEvent: Hashable, Sendable, CustomStringConvertible {
    case becameFollower(term: Term, leader: NodeID?)
    case becamePreCandidate(term: Term)
    case becameCandidate(term: Term)
    case becameLeader(term: Term)
    case voteGranted(to: NodeID, term: Term, preVote: Bool)
    case voteRejected(to: NodeID, term: Term, preVote: Bool)
    case voteIgnoredInLease(from: NodeID, term: Term)
    case steppedDownNoQuorum(term: Term)
    case truncated(from: Offset)
    case snapshotRestored(LogPosition)
    case membershipChanged(Membership, at: Offset)
    case removedSelfSteppingDown(term: Term)
    case transferStarted(to: NodeID)
    case transferAborted(to: NodeID)

    public var description: String {
        switch self {
        case .becameFollower(let t, let l): "became follower term=\(t) leader=\(l.map(\.description) ?? "-")"
        case .becamePreCandidate(let t): "became pre-candidate term=\(t)"
        case .becameCandidate(let t): "became candidate term=\(t)"
        case .becameLeader(let t): "became leader term=\(t)"
        case .voteGranted(let n, let t, let p): "\(p ? "pre-vote" : "vote") granted to \(n) term=\(t)"
        case .voteRejected(let n, let t, let p): "\(p ? "pre-vote" : "vote") rejected for \(n) term=\(t)"
        case .voteIgnoredInLease(let n, let t): "vote request from \(n) term=\(t) ignored: leader lease"
        case .steppedDownNoQuorum(let t): "stepped down term=\(t): no quorum heard within an election timeout"
        case .truncated(let o): "truncated uncommitted log from \(o)"
        case .snapshotRestored(let p): "restored snapshot at \(p)"
        case .membershipChanged(let m, let o): "membership \(m) at \(o)"
        case .removedSelfSteppingDown(let t): "removed from voters, stepping down term=\(t)"
        case .transferStarted(let n): "leadership transfer to \(n) started"
        case .transferAborted(let n): "leadership transfer to \(n) aborted"
        }
    }
}

/// Everything the node asks its caller to do, collected since the last `advance`.
///
/// ## The contract, in order
///
/// 1. If `snapshot` is set, install it: discard the whole stored log and restart it after
///    `snapshot.point` (and, for a state machine, restore `snapshot.data`).
/// 2. Append `entries`. If the first one starts at or before the stored last offset, first discard
///    every stored batch whose last offset is at or after `entries[0].baseOffset` (a divergent,
///    never-committed suffix); the node guarantees that no committed batch is ever discarded.
/// 3. Store `hardState` if set.
/// 4. Make 1–3 durable (fsync). Group commit is fine: one fsync may cover several `Ready`s only if
///    none of their messages left before it.
/// 5. Only now send `messages`. A vote or an append acknowledgement sent before the state is durable
///    could, after a crash, let two leaders win one term or let a "committed" entry vanish.
/// 6. Apply `committedEntries` (state machines) and serve `readStates` once applied through their offset.
///    Control batches among them are Raft's own and must be skipped by readers.
/// 7. Call `advance(_:)` with this value. Until then call nothing else on the node: no `step`,
///    `tick`, `propose` (the node enforces this).
public struct Ready: Sendable {
    public var softState: SoftState?
    public var hardState: HardState?
    public var snapshot: Snapshot?
    public var entries: [RecordBatch]
    public var messages: [RaftEnvelope]
    public var committedEntries: [RecordBatch]
    public var readStates: [ReadState]
    public var events: [RaftEvent]
    /// The commit offset once this `Ready` is durable (the new high watermark minus one), if it moved.
    public var commit: Offset?
}

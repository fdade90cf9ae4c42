import BrokerModel

/// A point in the log: the last offset of a batch together with the term that wrote it.
///
/// Raft's `(index, term)` pair. Because an entry is a record batch that may hold many records, the
/// Raft index of an entry is the batch's *last* offset. The position "before everything" is
/// `(Offset(-1), Term.zero)`.
public struct LogPosition: Hashable, Sendable, CustomStringConvertible {
    public var offset: Offset
    public var term: Term
    public init(offset: Offset, term: Term) {
        self.offset = offset
        self.term = term
    }
    /// The position before the first possible entry.
    public static let beforeStart = LogPosition(offset: Offset(-1), term: .zero)
    /// Raft §5.4.1: a log is at least as up to date as another when its last term is higher, or
    /// equal with an offset at least as high.
    public func isAtLeastAsUpToDate(as other: LogPosition) -> Bool {
        term > other.term || (term == other.term && offset >= other.offset)
    }
    public var description: String { "\(offset)@\(term)" }
}

/// The state that must be durable before any message of the same `Ready` leaves the node.
///
/// `vote` must survive a crash or a node could vote twice in one term; `term` must survive or a node
/// could accept a deposed leader; `commit` survives so a restarted node never shows a lower high
/// watermark than it already announced.
public struct HardState: Hashable, Sendable, CustomStringConvertible {
    public var term: Term
    public var vote: NodeID?
    /// The last committed offset (inclusive). The Kafka high watermark is `commit + 1`.
    public var commit: Offset
    public init(term: Term = .zero, vote: NodeID? = nil, commit: Offset = Offset(-1)) {
        self.term = term
        self.vote = vote
        self.commit = commit
    }
    public var description: String { "term=\(term) vote=\(vote.map { String($0.rawValue) } ?? "-") commit=\(commit)" }
}

/// Who takes part in a group. Voters elect and form quorums; learners only receive the log.
public struct Membership: Hashable, Sendable, CustomStringConvertible {
    public var voters: Set<NodeID>
    public var learners: Set<NodeID>
    public init(voters: Set<NodeID> = [], learners: Set<NodeID> = []) {
        precondition(voters.isDisjoint(with: learners), "a node is either a voter or a learner")
        self.voters = voters
        self.learners = learners
    }
    public static let empty = Membership()
    public var members: Set<NodeID> { voters.union(learners) }
    /// Votes or acknowledgements needed: a strict majority of voters.
    public var quorum: Int { voters.count / 2 + 1 }
    public var description: String {
        let v = voters.sorted().map(\.description).joined(separator: ",")
        let l = learners.sorted().map(\.description).joined(separator: ",")
        return l.isEmpty ? "voters={\(v)}" : "voters={\(v)} learners={\(l)}"
    }
}

/// One single-server membership change (Raft dissertation §4.1): at most one is uncommitted at a time.
public enum MembershipChange: Hashable, Sendable, CustomStringConvertible {
    /// Adds a node that receives the log but does not vote.
    case addLearner(NodeID)
    /// Turns a caught-up learner into a voter.
    case promote(NodeID)
    /// Removes a voter or learner (the leader may remove itself; it steps down once that commits).
    case remove(NodeID)
    public var description: String {
        switch self {
        case .addLearner(let n): "add-learner \(n)"
        case .promote(let n): "promote \(n)"
        case .remove(let n): "remove \(n)"
        }
    }
}

/// What a follower behind the leader's log start receives instead of entries.
///
/// For a state machine group (metadata, consumer groups) `data` is the state machine's image at
/// `point`. For a data partition `data` is nil: the follower discards its log and restarts it at
/// `point.offset + 1`, the leader's log start (the records below it were removed by retention).
public struct Snapshot: Hashable, Sendable, CustomStringConvertible {
    public var point: LogPosition
    public var membership: Membership
    public var data: [UInt8]?
    public init(point: LogPosition, membership: Membership, data: [UInt8]? = nil) {
        self.point = point
        self.membership = membership
        self.data = data
    }
    public var description: String { "snapshot at \(point) \(membership)\(data == nil ? "" : " with \(data!.count) bytes")" }
}

/// The role a node plays in its current term.
public enum RaftRole: String, Hashable, Sendable {
    case follower, preCandidate, candidate, leader
}

/// Role, term and leader: changes here are worth a log line, but need not be persisted.
public struct SoftState: Hashable, Sendable, CustomStringConvertible {
    public var role: RaftRole
    public var term: Term
    public var leader: NodeID?
    public var description: String { "\(role.rawValue) term=\(term) leader=\(leader.map(\.description) ?? "-")" }
}

/// A linearizable read may be served once the state machine has applied through `offset`.
public struct ReadState: Hashable, Sendable {
    public var context: UInt64
    public var offset: Offset
}

/// Why a proposal, membership change, transfer or read was refused. Operating errors: the caller
/// answers its client (redirect to `leader`, retry later, 429).
public enum ProposalError: Error, Hashable, Sendable {
    case notLeader(leader: NodeID?)
    case leadershipTransferInProgress
    /// Too many uncommitted bytes on the leader (a slow quorum must not grow memory without bound).
    case uncommittedBytesLimit
    /// A membership change is still uncommitted, or the leader has not yet committed an entry of
    /// its own term (the single-server change needs both; see Ongaro's 2015 erratum).
    case membershipChangePending
    case invalidMembershipChange(String)
    /// The learner to promote has not caught up with the commit offset yet.
    case learnerNotCaughtUp
    /// The leader has not yet committed an entry of its term, so it does not know the commit offset.
    case leaderNotReady
    case pendingReadsLimit
    case termOverflow
}

/// Tunables of one node. Ticks are logical: the runtime calls `tick()` at a fixed interval on the
/// monotonic clock (e.g. every 100 ms), never from the wall clock.
public struct RaftConfiguration: Sendable {
    public var id: NodeID
    /// A follower campaigns after a random timeout in `electionTicks ..< 2 * electionTicks` without
    /// hearing from a leader. A leader checks its quorum every `electionTicks`.
    public var electionTicks: Int = 10
    public var heartbeatTicks: Int = 1
    public var preVote: Bool = true
    public var checkQuorum: Bool = true
    /// Appends in flight to one follower in replicate state (pipelining bound).
    public var inflightAppendsMax: Int = 8
    /// Bytes of batches in one append message (at least one batch is always sent).
    public var appendBytesMax: Int = 1 << 20
    /// Bytes of entries the leader accepts beyond its commit offset before refusing proposals.
    public var uncommittedBytesMax: Int = 64 << 20
    /// Bytes of committed entries handed out in one `Ready`.
    public var applyBytesMax: Int = 4 << 20
    /// False for groups without a state machine (data partitions): `Ready.committedEntries` stays
    /// empty and `applied` follows `commit`, so the caller is not handed bytes it would not use.
    public var deliversCommittedEntries: Bool = true
    /// Linearizable reads waiting for a quorum of heartbeat acknowledgements.
    public var pendingReadsMax: Int = 1024
    /// Seed of the generator that randomizes election timeouts.
    public var randomSeed: UInt64
    public init(id: NodeID, randomSeed: UInt64) {
        self.id = id
        self.randomSeed = randomSeed
    }
}

import BrokerModel
import Consensus
import LogStorage
import Synchronization

/// This broker's replica of one Raft group: a data partition, or the metadata log (`__cluster`-0).
///
/// Only the driver thread touches the `RaftNode` (it alone calls tick/step/propose/ready/advance);
/// other threads put inputs in `inbox` and schedule the replica. Readers on HTTP threads read the log
/// under the same lock. Completions run outside the lock (STYLE.md #4).
final class Replica: Sendable {
    let group: TopicPartition
    /// The topic id from metadata (nil for the metadata group): a re-created topic is a new replica.
    let topicID: UInt64
    let state: Mutex<ReplicaState>

    init(group: TopicPartition, topicID: UInt64, state: consuming sending ReplicaState) {
        self.group = group
        self.topicID = topicID
        self.state = Mutex(state)
    }
}

/// An input waiting for the driver thread.
enum ReplicaInput {
    case tick
    case step(RaftEnvelope)
    case propose(Proposal)
    case transfer(to: NodeID)
    /// One single-server membership change, proposed by the leader (reassignment, joining learners).
    case membership(MembershipChange)
    /// Retention: drop whole segments past retention.ms/retention.bytes, never past the commit.
    case retention
    /// Confirm this replica still leads (Raft's read-index, dissertation §6.4): answered with the
    /// commit offset once a majority acknowledged a heartbeat sent after the request.
    case confirmLeadership(LeadershipCheck)
}

/// A read waiting for a quorum to confirm the leader. `id` is the read-index context.
struct LeadershipCheck {
    var id: UInt64
    var deadline: Int64
    var completion: @Sendable (Result<Offset, BrokerError>) -> Void
}

/// A client batch on its way into the leader's log.
struct Proposal {
    var batch: RecordBatch
    var acks: Acks
    var deadline: Int64
    /// Called once: with the batch's base offset when `acks` is satisfied, or with an error.
    var completion: @Sendable (Result<Offset, BrokerError>) -> Void
}

/// A proposal that is in the log, waiting for `acks`.
struct AppendWaiter {
    var lastOffset: Offset
    var baseOffset: Offset
    var term: Term
    var acks: Acks
    var deadline: Int64
    var completion: @Sendable (Result<Offset, BrokerError>) -> Void
}

struct ReplicaState: ~Copyable {
    var node: RaftNode<ReplicaStorage>
    var storage: ReplicaStorage { node.storage }
    var config: TopicConfig
    var minInSyncReplicas: Int
    var inbox: [ReplicaInput] = []
    /// In the driver's queue (queued once however many inputs arrive).
    var isScheduled = false
    /// Offsets below it are committed and visible to readers (Raft commit + 1).
    var highWatermark: Offset
    var appendWaiters: [AppendWaiter] = []
    var readWaiters: [ReadWaiter] = []
    var closedReason: BrokerError?
    /// Soft state as of the last advance, readable without touching the node.
    var role: RaftRole = .follower
    var leader: NodeID?
    var term: Term = .zero
    /// While leading: the offset of this leader's first entry; every earlier leader's entry is
    /// below it (the group coordinator waits until it has applied this far).
    var leaderTermStart = Offset(Int64.max)
    /// Leader only: when each follower last had everything committed (wall clock, ms). Kafka's
    /// ISR rule in Raft terms: a follower is in sync while it caught up within `lagMaxMilliseconds`.
    var caughtUpAt: [NodeID: Int64] = [:]
    static let lagMaxMilliseconds: Int64 = 5_000
    /// Leadership checks waiting for their read state (bounded by the node's pendingReadsMax).
    var leadershipChecks: [UInt64: LeadershipCheck] = [:]

    init(node: sending RaftNode<ReplicaStorage>, config: TopicConfig, minInSyncReplicas: Int) {
        self.node = node
        self.config = config
        self.minInSyncReplicas = minInSyncReplicas
        self.highWatermark = max(node.commit + 1, node.storage.log.logStartOffset)
        self.term = node.term
    }

    var log: PartitionLog { node.storage.log }

    var offsets: PartitionOffsets {
        PartitionOffsets(logStartOffset: log.logStartOffset, highWatermark: highWatermark, logEndOffset: log.logEndOffset)
    }

    /// Replicas the leader counts as in sync: itself, and every voter whose durable match reached the
    /// commit offset within the last `lagMaxMilliseconds` (Kafka's replica.lag.time.max.ms rule: a
    /// follower a few in-flight appends behind under load stays in; a dead or stuck one drops out).
    func inSyncReplicas(now: Int64) -> [NodeID] {
        guard role == .leader else { return [] }
        var result: [NodeID] = [node.id]
        for id in node.membership.voters where id != node.id {
            if let at = caughtUpAt[id], now - at <= Self.lagMaxMilliseconds { result.append(id) }
        }
        return result.sorted()
    }

    /// Leader only, after each round: followers whose match reached the commit are caught up now. A
    /// new leader starts by trusting every voter (it cannot know their match before they answer).
    mutating func noteCaughtUp(now: Int64, becameLeader: Bool) {
        guard role == .leader else {
            caughtUpAt.removeAll()
            return
        }
        if becameLeader { for id in node.membership.voters { caughtUpAt[id] = now } }
        // recentActive: heard from in this check-quorum window, so an idle partition (commit not
        // moving) does not keep a dead follower in sync.
        for (id, p) in node.progress where p.match >= node.commit && p.recentActive { caughtUpAt[id] = now }
    }

    /// Each replica's log end as the leader knows it (its match + 1); the leader's own is its log end.
    func replicaStates() -> [ReplicaLag] {
        guard role == .leader else { return [] }
        let end = log.logEndOffset
        var out: [ReplicaLag] = []
        for id in node.membership.members.sorted() {
            let replicaEnd = id == node.id ? end : (node.progress[id].map { $0.match + 1 } ?? Offset(0))
            out.append(ReplicaLag(broker: id, logEndOffset: replicaEnd, lag: max(0, end.rawValue - replicaEnd.rawValue)))
        }
        return out
    }
}

public struct ReplicaLag: Sendable, Equatable {
    public var broker: NodeID
    public var logEndOffset: Offset
    public var lag: Int64
}

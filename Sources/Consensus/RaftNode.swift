import BrokerModel

/// What the leader knows about one follower or learner.
public struct Progress: Hashable, Sendable {
    public enum State: Hashable, Sendable {
        /// One append at a time until the follower's log position is found.
        case probe
        /// Appends are pipelined, up to `inflightAppendsMax` at once.
        case replicate
        /// A snapshot is on its way; appends wait until the follower acknowledges `pending`.
        case snapshot(pending: Offset)
    }
    /// Highest offset known to be durable on the follower and to match the leader's log.
    public internal(set) var match: Offset
    /// Base offset of the next batch to send.
    public internal(set) var next: Offset
    public internal(set) var state: State
    var probeSent = false
    /// Last offsets of appends in flight (replicate state), oldest first; bounded by `inflightAppendsMax`.
    var inflight: [Offset] = []
    /// Heard from within the current check-quorum window.
    public internal(set) var recentActive = true
}

struct PendingRead {
    var context: UInt64
    var offset: Offset
    var sequence: UInt64
    var acknowledgers: Set<NodeID>
}

/// One member of one Raft group, as a deterministic state machine (etcd's `RawNode`).
///
/// Inputs: `tick()` (logical time), `step(_:)` (a received message), `propose(_:)`,
/// `proposeMembershipChange(_:)`, `transferLeadership(to:)`, `readIndex(context:)`.
/// Output: `ready()` — see ``Ready`` for what the caller must do with it, in which order — then
/// `advance(_:)`. The node does no I/O, reads no clock and starts no thread; its only randomness is
/// the seeded generator in its configuration, so the same inputs give the same outputs.
///
/// Log position = record offset: an entry is a ``RecordBatch``, its Raft index is its last offset
/// and its term is stamped into its `partitionLeaderEpoch`.
public struct RaftNode<Storage: RaftStorage> {
    public let configuration: RaftConfiguration
    public var id: NodeID { configuration.id }
    public let storage: Storage
    var random: SplitMix64

    public internal(set) var term: Term
    public internal(set) var vote: NodeID?
    /// Last committed offset (inclusive). High watermark = `commit + 1`.
    public internal(set) var commit: Offset
    /// Last offset handed to the caller in `committedEntries`.
    public internal(set) var applied: Offset

    var unstable: [RecordBatch] = []
    var pendingSnapshot: Snapshot?
    var baseMembership: Membership
    var membershipHistory: [(offset: Offset, membership: Membership)] = []

    public internal(set) var role: RaftRole = .follower
    public internal(set) var leader: NodeID?
    var electionElapsed = 0
    var heartbeatElapsed = 0
    var randomizedElectionTimeout = 0
    var votes: [NodeID: Bool] = [:]
    public internal(set) var progress: [NodeID: Progress] = [:]
    var selfMatch = Offset(-1)
    var leaderMarkerOffset = Offset(Int64.max)
    public internal(set) var transferee: NodeID?
    var uncommitted: [(offset: Offset, bytes: Int)] = []
    var uncommittedBytes = 0
    var readSequence: UInt64 = 0
    var pendingReads: [PendingRead] = []

    var messages: [RaftEnvelope] = []
    var events: [RaftEvent] = []
    var readStates: [ReadState] = []
    var lastSoftState: SoftState
    var lastHardState: HardState
    var readyOutstanding = false

    /// Starts (or restarts) a node from what `storage` holds durably.
    public init(configuration: RaftConfiguration, storage: Storage) {
        precondition(configuration.electionTicks > configuration.heartbeatTicks, "election timeout must exceed the heartbeat interval")
        precondition(configuration.inflightAppendsMax >= 1, "at least one append must be allowed in flight")
        self.configuration = configuration
        self.storage = storage
        self.random = SplitMix64(seed: configuration.randomSeed ^ (UInt64(UInt32(bitPattern: configuration.id.rawValue)) &* 0x9E37_79B9))
        let hard = storage.hardState
        self.term = hard.term
        self.vote = hard.vote
        precondition(hard.commit <= storage.lastOffset, "durable commit \(hard.commit) beyond the durable log end \(storage.lastOffset)")
        self.commit = max(hard.commit, storage.snapshotPoint.offset)
        self.applied = storage.snapshotPoint.offset
        self.baseMembership = storage.snapshotMembership
        for b in storage.membershipBatches() {
            if let m = ControlBatch.decodeMembership(b) { membershipHistory.append((b.lastOffset, m)) }
        }
        self.lastHardState = hard
        self.lastSoftState = SoftState(role: .follower, term: hard.term, leader: nil)
        resetTerm()
    }

    // MARK: status

    /// The membership in force: the latest one in the log, committed or not (single-server changes
    /// take effect when appended).
    public var membership: Membership { membershipHistory.last?.membership ?? baseMembership }
    var membershipOffset: Offset { membershipHistory.last?.offset ?? snapshotPoint.offset }
    public var hardState: HardState { HardState(term: term, vote: vote, commit: commit) }
    public var softState: SoftState { SoftState(role: role, term: term, leader: leader) }
    public var isLeader: Bool { role == .leader }
    var isPromotable: Bool { membership.voters.contains(id) }
    /// True while a follower has heard from its leader within an election timeout; it then ignores
    /// vote requests (check-quorum's other half: a leader's lease as seen by its followers).
    var isInLease: Bool { configuration.checkQuorum && leader != nil && electionElapsed < configuration.electionTicks }

    // MARK: inputs

    /// One logical tick of the monotonic clock.
    public mutating func tick() {
        precondition(!readyOutstanding, "tick between ready() and advance()")
        switch role {
        case .leader: tickLeader()
        case .follower, .preCandidate, .candidate:
            electionElapsed += 1
            if isPromotable && electionElapsed >= randomizedElectionTimeout {
                electionElapsed = 0
                campaign(preVote: configuration.preVote, transfer: false)
            }
        }
    }

    mutating func tickLeader() {
        electionElapsed += 1
        heartbeatElapsed += 1
        if electionElapsed >= configuration.electionTicks {
            electionElapsed = 0
            if configuration.checkQuorum {
                var active = membership.voters.contains(id) ? 1 : 0
                for v in membership.voters where v != id && progress[v]?.recentActive == true { active += 1 }
                if active < membership.quorum {
                    events.append(.steppedDownNoQuorum(term: term))
                    becomeFollower(term: term, leader: nil)
                    return
                }
                for p in progress.keys { progress[p]!.recentActive = false }
            }
            if let t = transferee {
                events.append(.transferAborted(to: t))
                transferee = nil
            }
        }
        if heartbeatElapsed >= configuration.heartbeatTicks {
            heartbeatElapsed = 0
            broadcastHeartbeat()
        }
    }

    /// Handles one received message.
    public mutating func step(_ envelope: RaftEnvelope) {
        precondition(!readyOutstanding, "step between ready() and advance()")
        precondition(envelope.to == id, "message for \(envelope.to) delivered to \(id)")
        let from = envelope.from
        if envelope.term > term {
            switch envelope.message {
            case .preVote, .vote(_, isLeadershipTransfer: false):
                if isInLease {
                    events.append(.voteIgnoredInLease(from: from, term: envelope.term))
                    return
                }
            default: break
            }
            switch envelope.message {
            case .preVote: break
            case .preVoteResponse(granted: true): break
            case .append, .heartbeat, .installSnapshot: becomeFollower(term: envelope.term, leader: from)
            default: becomeFollower(term: envelope.term, leader: nil)
            }
        } else if envelope.term < term {
            switch envelope.message {
            case .append, .heartbeat, .installSnapshot:
                // A deposed leader learns the newer term from this and steps down.
                send(to: from, .heartbeatResponse(readSequence: 0))
            case .preVote:
                send(to: from, .preVoteResponse(granted: false))
            default: break
            }
            return
        }

        switch envelope.message {
        case .preVote(let lastLog): handleVoteRequest(from: from, term: envelope.term, lastLog: lastLog, isPreVote: true)
        case .vote(let lastLog, _): handleVoteRequest(from: from, term: envelope.term, lastLog: lastLog, isPreVote: false)
        case .preVoteResponse(let granted):
            guard role == .preCandidate, envelope.term == term.next else { return }
            handleVoteResponse(from: from, granted: granted)
        case .voteResponse(let granted):
            guard role == .candidate, envelope.term == term else { return }
            handleVoteResponse(from: from, granted: granted)
        case .append(let previous, let entries, let leaderCommit):
            acceptLeader(from)
            handleAppend(from: from, previous: previous, entries: entries, leaderCommit: leaderCommit)
        case .heartbeat(let leaderCommit, let sequence):
            acceptLeader(from)
            commitTo(leaderCommit)
            send(to: from, .heartbeatResponse(readSequence: sequence))
        case .installSnapshot(let snapshot):
            acceptLeader(from)
            handleSnapshot(from: from, snapshot)
        case .appendResponse(let result):
            guard role == .leader else { return }
            handleAppendResponse(from: from, result)
        case .heartbeatResponse(let sequence):
            guard role == .leader else { return }
            handleHeartbeatResponse(from: from, sequence: sequence)
        case .timeoutNow:
            guard role != .leader, isPromotable else { return }
            campaign(preVote: false, transfer: true)
        }
    }

    /// Appends a client batch. Returns its position (offsets `baseOffset...position.offset`, term).
    /// The batch is committed when `commit` reaches `position.offset` with the same term there.
    public mutating func propose(_ batch: RecordBatch) throws(ProposalError) -> LogPosition {
        precondition(!readyOutstanding, "propose between ready() and advance()")
        precondition(!batch.isControl, "control batches are Raft's own")
        guard role == .leader else { throw .notLeader(leader: leader) }
        guard transferee == nil else { throw .leadershipTransferInProgress }
        guard uncommittedBytes == 0 || uncommittedBytes + batch.sizeBytes <= configuration.uncommittedBytesMax else {
            throw .uncommittedBytesLimit
        }
        return appendAsLeader(batch)
    }

    /// Proposes one single-server membership change.
    public mutating func proposeMembershipChange(_ change: MembershipChange) throws(ProposalError) -> LogPosition {
        precondition(!readyOutstanding, "propose between ready() and advance()")
        guard role == .leader else { throw .notLeader(leader: leader) }
        guard transferee == nil else { throw .leadershipTransferInProgress }
        // Only one change in flight, and only after this leader committed its own marker: without
        // the latter a leader could lose an uncommitted change of a previous term (Ongaro 2015).
        guard commit >= leaderMarkerOffset, membershipOffset <= commit else { throw .membershipChangePending }
        var m = membership
        switch change {
        case .addLearner(let n):
            guard !m.members.contains(n) else { throw .invalidMembershipChange("\(n) is already a member") }
            m.learners.insert(n)
        case .promote(let n):
            guard m.learners.contains(n) else { throw .invalidMembershipChange("\(n) is not a learner") }
            guard let p = progress[n], p.match >= commit else { throw .learnerNotCaughtUp }
            m.learners.remove(n)
            m.voters.insert(n)
        case .remove(let n):
            guard m.members.contains(n) else { throw .invalidMembershipChange("\(n) is not a member") }
            guard m.voters != [n] else { throw .invalidMembershipChange("cannot remove the last voter") }
            m.voters.remove(n)
            m.learners.remove(n)
        }
        return appendAsLeader(ControlBatch.membership(m))
    }

    /// Asks the leader to hand leadership to `target` once it has caught up. Proposals are refused
    /// meanwhile; the transfer is abandoned after an election timeout.
    public mutating func transferLeadership(to target: NodeID) throws(ProposalError) {
        precondition(!readyOutstanding, "transfer between ready() and advance()")
        guard role == .leader else { throw .notLeader(leader: leader) }
        guard target != id, membership.voters.contains(target) else {
            throw .invalidMembershipChange("\(target) is not another voter")
        }
        if transferee == target { return }
        transferee = target
        electionElapsed = 0
        events.append(.transferStarted(to: target))
        if progress[target]?.match == lastOffset {
            send(to: target, .timeoutNow)
        } else {
            sendAppend(to: target, allowEmpty: true)
        }
    }

    /// Read-index: a linearizable read. When a quorum has confirmed this node is still leader,
    /// `Ready.readStates` holds `(context, offset)`; serve the read once applied through `offset`.
    /// If leadership is lost first the read never completes: callers fail reads still pending when
    /// `softState` shows this node is no longer leader.
    public mutating func readIndex(context: UInt64) throws(ProposalError) {
        precondition(!readyOutstanding, "readIndex between ready() and advance()")
        guard role == .leader else { throw .notLeader(leader: leader) }
        guard commit >= leaderMarkerOffset else { throw .leaderNotReady }
        if membership.voters == [id] {
            readStates.append(ReadState(context: context, offset: commit))
            return
        }
        guard pendingReads.count < configuration.pendingReadsMax else { throw .pendingReadsLimit }
        readSequence += 1
        pendingReads.append(
            PendingRead(context: context, offset: commit, sequence: readSequence, acknowledgers: membership.voters.contains(id) ? [id] : []))
        broadcastHeartbeat()
    }

    // MARK: Ready

    public var hasReady: Bool {
        softState != lastSoftState || hardState != lastHardState || pendingSnapshot != nil || !unstable.isEmpty
            || !messages.isEmpty || commit > applied || !readStates.isEmpty || !events.isEmpty
    }

    /// Collects what the caller must persist, send and apply. See ``Ready`` for the contract.
    public mutating func ready() -> Ready {
        precondition(!readyOutstanding, "ready() twice without advance()")
        readyOutstanding = true
        let soft = softState
        let hard = hardState
        var committed: [RecordBatch] = []
        let appliedFrom = pendingSnapshot?.point.offset ?? applied
        if commit > appliedFrom && configuration.deliversCommittedEntries {
            committed = batches(from: appliedFrom + 1, bytesMax: configuration.applyBytesMax).filter { $0.lastOffset <= commit }
            precondition(!committed.isEmpty, "committed entries after \(appliedFrom) are missing")
        }
        let r = Ready(
            softState: soft != lastSoftState ? soft : nil,
            hardState: hard != lastHardState ? hard : nil,
            snapshot: pendingSnapshot,
            entries: unstable,
            messages: messages,
            committedEntries: committed,
            readStates: readStates,
            events: events,
            commit: hard.commit != lastHardState.commit ? hard.commit : nil)
        messages = []
        readStates = []
        events = []
        return r
    }

    /// Tells the node that `ready` was handled: persisted, sent and applied.
    public mutating func advance(_ ready: Ready) {
        precondition(readyOutstanding, "advance() without ready()")
        readyOutstanding = false
        if let s = ready.snapshot {
            precondition(pendingSnapshot == s, "advance with a different Ready")
            pendingSnapshot = nil
            applied = max(applied, s.point.offset)
        }
        precondition(unstable.count == ready.entries.count, "advance with a different Ready")
        unstable.removeAll()
        if let last = ready.committedEntries.last { applied = last.lastOffset }
        // Nothing can change `commit` between ready() and advance(), so this is what the Ready saw.
        if !configuration.deliversCommittedEntries { applied = max(applied, commit) }
        if let s = ready.softState { lastSoftState = s }
        if let h = ready.hardState { lastHardState = h }
        if role == .leader {
            selfMatch = lastOffset
            if maybeCommit() { broadcastAppend(allowEmpty: true) }
        }
    }

    // MARK: roles

    mutating func resetTerm() {
        electionElapsed = 0
        heartbeatElapsed = 0
        randomizedElectionTimeout = configuration.electionTicks + random.below(configuration.electionTicks)
        votes = [:]
        progress = [:]
        transferee = nil
        pendingReads = []
        uncommitted = []
        uncommittedBytes = 0
        leaderMarkerOffset = Offset(Int64.max)
        selfMatch = Offset(-1)
    }

    mutating func becomeFollower(term newTerm: Term, leader newLeader: NodeID?) {
        if newTerm != term {
            term = newTerm
            vote = nil
        }
        role = .follower
        leader = newLeader
        resetTerm()
        events.append(.becameFollower(term: term, leader: newLeader))
    }

    mutating func acceptLeader(_ from: NodeID) {
        precondition(!(role == .leader), "two leaders in term \(term): \(id) and \(from)")
        if role != .follower { becomeFollower(term: term, leader: from) }
        leader = from
        electionElapsed = 0
    }

    mutating func campaign(preVote: Bool, transfer: Bool) {
        guard isPromotable else { return }
        precondition(term.rawValue < Int64(Int32.max), "term overflows the 32-bit leader epoch")
        if preVote {
            role = .preCandidate
            leader = nil
            resetTerm()
            events.append(.becamePreCandidate(term: term))
        } else {
            term = term.next
            vote = id
            role = .candidate
            leader = nil
            resetTerm()
            events.append(.becameCandidate(term: term))
        }
        votes[id] = true
        if tally().granted >= membership.quorum {
            if preVote { campaign(preVote: false, transfer: false) } else { becomeLeader() }
            return
        }
        let last = lastPosition
        for v in membership.voters.sorted() where v != id {
            if preVote {
                messages.append(RaftEnvelope(from: id, to: v, term: term.next, message: .preVote(lastLog: last)))
            } else {
                send(to: v, .vote(lastLog: last, isLeadershipTransfer: transfer))
            }
        }
    }

    func tally() -> (granted: Int, rejected: Int) {
        var granted = 0
        var rejected = 0
        for (n, g) in votes where membership.voters.contains(n) {
            if g { granted += 1 } else { rejected += 1 }
        }
        return (granted, rejected)
    }

    mutating func becomeLeader() {
        role = .leader
        leader = id
        resetTerm()
        events.append(.becameLeader(term: term))
        for n in membership.members where n != id {
            progress[n] = Progress(match: Offset(-1), next: lastOffset + 1, state: .probe)
        }
        // The marker commits everything before it once a quorum has it (Raft §5.4.2).
        let marker = appendAsLeader(ControlBatch.leaderMarker(leader: id, term: term))
        leaderMarkerOffset = marker.offset
    }

    mutating func appendAsLeader(_ proposal: RecordBatch) -> LogPosition {
        var batch = proposal
        batch.setBaseOffset(lastOffset + 1)
        batch.setPartitionLeaderEpoch(Int32(term.rawValue))
        truncateAndAppend(CollectionOfOne(batch))
        uncommitted.append((batch.lastOffset, batch.sizeBytes))
        uncommittedBytes += batch.sizeBytes
        broadcastAppend(allowEmpty: false)
        return batch.position
    }

    // MARK: voting

    mutating func handleVoteRequest(from: NodeID, term requestTerm: Term, lastLog: LogPosition, isPreVote: Bool) {
        let canVote = vote == from || (vote == nil && leader == nil) || (isPreVote && requestTerm > term)
        if canVote && lastLog.isAtLeastAsUpToDate(as: lastPosition) {
            events.append(.voteGranted(to: from, term: requestTerm, preVote: isPreVote))
            messages.append(
                RaftEnvelope(from: id, to: from, term: requestTerm, message: isPreVote ? .preVoteResponse(granted: true) : .voteResponse(granted: true)))
            if !isPreVote {
                electionElapsed = 0
                vote = from
            }
        } else {
            events.append(.voteRejected(to: from, term: requestTerm, preVote: isPreVote))
            send(to: from, isPreVote ? .preVoteResponse(granted: false) : .voteResponse(granted: false))
        }
    }

    mutating func handleVoteResponse(from: NodeID, granted: Bool) {
        votes[from] = granted
        let (yes, no) = tally()
        if yes >= membership.quorum {
            if role == .preCandidate { campaign(preVote: false, transfer: false) } else { becomeLeader() }
        } else if no >= membership.quorum {
            becomeFollower(term: term, leader: nil)
        }
    }

    // MARK: follower side

    mutating func handleAppend(from: NodeID, previous: LogPosition, entries: [RecordBatch], leaderCommit: Offset) {
        if previous.offset < commit {
            // Everything through our commit matches any leader's log; let the leader move on from there.
            send(to: from, .appendResponse(.accepted(match: commit)))
            return
        }
        guard term(endingAt: previous.offset) == previous.term else {
            let hint = lastPosition(atOrBefore: previous.offset, termAtMost: previous.term)
            send(to: from, .appendResponse(.rejected(previousOffset: previous.offset, hint: hint)))
            return
        }
        precondition(entries.first.map { $0.baseOffset == previous.offset + 1 } ?? true, "append does not follow its previous position")
        if let conflict = entries.firstIndex(where: { term(endingAt: $0.lastOffset) != $0.term }) {
            truncateAndAppend(entries[conflict...])
        }
        let lastNew = entries.last?.lastOffset ?? previous.offset
        commitTo(min(leaderCommit, lastNew))
        send(to: from, .appendResponse(.accepted(match: lastNew)))
    }

    mutating func handleSnapshot(from: NodeID, _ snapshot: Snapshot) {
        if snapshot.point.offset <= commit {
            send(to: from, .appendResponse(.accepted(match: commit)))
            return
        }
        if term(endingAt: snapshot.point.offset) == snapshot.point.term {
            commitTo(snapshot.point.offset)
            send(to: from, .appendResponse(.accepted(match: snapshot.point.offset)))
            return
        }
        pendingSnapshot = snapshot
        unstable.removeAll()
        commit = snapshot.point.offset
        baseMembership = snapshot.membership
        membershipHistory = []
        events.append(.snapshotRestored(snapshot.point))
        membershipDidChange()
        send(to: from, .appendResponse(.accepted(match: snapshot.point.offset)))
    }

    mutating func commitTo(_ offset: Offset) {
        guard offset > commit else { return }
        precondition(offset <= lastOffset, "commit \(offset) beyond the log end \(lastOffset)")
        commit = offset
        // Configurations at or below the commit other than the newest of them can never come back.
        if let keepFrom = membershipHistory.lastIndex(where: { $0.offset <= commit }), keepFrom > 0 {
            baseMembership = membershipHistory[keepFrom - 1].membership
            membershipHistory.removeSubrange(..<keepFrom)
        }
        while let first = uncommitted.first, first.offset <= commit {
            uncommittedBytes -= first.bytes
            uncommitted.removeFirst()
        }
    }

    mutating func membershipDidChange() {
        let m = membership
        if role == .leader {
            for n in m.members.sorted() where n != id && progress[n] == nil {
                progress[n] = Progress(match: Offset(-1), next: lastOffset + 1, state: .probe)
            }
            for n in progress.keys.sorted() where !m.members.contains(n) {
                progress[n] = nil
                if transferee == n {
                    events.append(.transferAborted(to: n))
                    transferee = nil
                }
            }
        } else if role != .follower && !m.voters.contains(id) {
            becomeFollower(term: term, leader: nil)
        }
    }

    // MARK: leader side

    /// Advances the commit offset to the highest offset durable on a quorum of voters, but only
    /// through an entry of the current term (Raft §5.4.2). Returns whether it moved.
    mutating func maybeCommit() -> Bool {
        let voters = membership.voters
        guard !voters.isEmpty else { return false }
        let matches = voters.map { $0 == id ? selfMatch : (progress[$0]?.match ?? Offset(-1)) }.sorted(by: >)
        let candidate = matches[membership.quorum - 1]
        guard candidate > commit, term(endingAt: candidate) == term else { return false }
        commitTo(candidate)
        if !membership.voters.contains(id) && membershipOffset <= commit {
            // This leader committed its own removal: hand over to the most caught-up voter and stop.
            broadcastAppend(allowEmpty: true)
            if let best = membership.voters.sorted().max(by: { (progress[$0]?.match ?? Offset(-1)) < (progress[$1]?.match ?? Offset(-1)) }) {
                send(to: best, .timeoutNow)
            }
            events.append(.removedSelfSteppingDown(term: term))
            becomeFollower(term: term, leader: nil)
            return false
        }
        return true
    }

    mutating func send(to: NodeID, _ message: RaftMessage) {
        messages.append(RaftEnvelope(from: id, to: to, term: term, message: message))
    }

    mutating func broadcastAppend(allowEmpty: Bool) {
        for p in progress.keys.sorted() { sendAppend(to: p, allowEmpty: allowEmpty) }
    }

    mutating func broadcastHeartbeat() {
        for p in progress.keys.sorted() {
            send(to: p, .heartbeat(commit: min(progress[p]!.match, commit), readSequence: readSequence))
        }
    }

    mutating func sendAppend(to peer: NodeID, allowEmpty: Bool) {
        guard var pr = progress[peer] else { return }
        switch pr.state {
        case .snapshot: return
        case .probe: if pr.probeSent { return }
        case .replicate: if pr.inflight.count >= configuration.inflightAppendsMax { return }
        }
        let previousOffset = pr.next - 1
        guard let previousTerm = term(endingAt: previousOffset) else {
            // The follower needs entries retention already removed: hand over a snapshot (or, for
            // a data partition, tell it to restart its log at our log start).
            let snapshot = storage.snapshot()
            pr.state = .snapshot(pending: snapshot.point.offset)
            pr.inflight = []
            progress[peer] = pr
            send(to: peer, .installSnapshot(snapshot))
            return
        }
        let entries = batches(from: pr.next, bytesMax: configuration.appendBytesMax)
        if entries.isEmpty && !allowEmpty { return }
        send(to: peer, .append(previous: LogPosition(offset: previousOffset, term: previousTerm), entries: entries, commit: commit))
        switch pr.state {
        case .replicate:
            if let last = entries.last {
                pr.next = last.nextOffset
                pr.inflight.append(last.lastOffset)
            }
        case .probe: pr.probeSent = true
        case .snapshot: break
        }
        progress[peer] = pr
    }

    mutating func handleAppendResponse(from: NodeID, _ result: AppendResult) {
        guard var pr = progress[from] else { return }
        pr.recentActive = true
        switch result {
        case .accepted(let match):
            if match > pr.match {
                pr.match = match
                if pr.next <= match { pr.next = match + 1 }
                switch pr.state {
                case .probe:
                    pr.state = .replicate
                    pr.inflight = []
                    pr.next = match + 1
                case .snapshot(let pending):
                    if match >= pending {
                        pr.state = .replicate
                        pr.inflight = []
                        pr.next = match + 1
                    }
                case .replicate:
                    pr.inflight.removeAll { $0 <= match }
                }
                pr.probeSent = false
                progress[from] = pr
                if maybeCommit() { broadcastAppend(allowEmpty: true) }
                guard role == .leader else { return }
                sendAppend(to: from, allowEmpty: false)
                if transferee == from && progress[from]?.match == lastOffset { send(to: from, .timeoutNow) }
            } else {
                if pr.state == .probe { pr.probeSent = false }
                progress[from] = pr
                sendAppend(to: from, allowEmpty: false)
            }
        case .rejected(let previousOffset, let hint):
            switch pr.state {
            case .replicate: if previousOffset <= pr.match { progress[from] = pr; return }
            case .probe: if previousOffset != pr.next - 1 { progress[from] = pr; return }
            case .snapshot:
                progress[from] = pr
                return
            }
            // A hint below our log start means the follower needs entries we no longer have:
            // aiming `next` there makes the next send a snapshot.
            // Likewise when the search ends at our snapshot point with a newer term than the hint:
            // the last agreement lies inside what we compacted.
            let point = snapshotPoint
            var found = hint.offset
            if hint.offset >= point.offset {
                let p = lastPosition(atOrBefore: min(hint.offset, previousOffset), termAtMost: hint.term)
                found = p == point && p.term > hint.term ? point.offset - 1 : p.offset
            }
            pr.next = max(pr.match + 1, found + 1)
            pr.state = .probe
            pr.inflight = []
            pr.probeSent = false
            progress[from] = pr
            sendAppend(to: from, allowEmpty: true)
        }
    }

    mutating func handleHeartbeatResponse(from: NodeID, sequence: UInt64) {
        guard var pr = progress[from] else { return }
        pr.recentActive = true
        pr.probeSent = false
        if case .snapshot = pr.state { pr.state = .probe }
        if pr.state == .replicate && pr.inflight.count >= configuration.inflightAppendsMax { pr.inflight.removeFirst() }
        progress[from] = pr
        if pr.match < lastOffset { sendAppend(to: from, allowEmpty: true) }
        if membership.voters.contains(from) && !pendingReads.isEmpty {
            for i in pendingReads.indices where pendingReads[i].sequence <= sequence {
                pendingReads[i].acknowledgers.insert(from)
            }
            while let first = pendingReads.first, first.acknowledgers.intersection(membership.voters).count >= membership.quorum {
                readStates.append(ReadState(context: first.context, offset: first.offset))
                pendingReads.removeFirst()
            }
        }
    }
}

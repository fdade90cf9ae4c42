import BrokerModel
import Consensus
import LogStorage

/// The durable Raft storage of one partition replica: a `PartitionLog` (the batches; log position
/// = record offset, term = `partitionLeaderEpoch`) plus a small state file (`ReplicaStateFile`).
///
/// Layout of `directory`: `replica.state` (+ `replica.state.tmp` while it is being replaced) and
/// `log/`, the partition log's own directory (kept apart because the log removes files it does
/// not know on open).
///
/// ## Durability
/// - Batches: written by `write(_:)`, durable after `beginSync` / `PendingSync.perform()` /
///   `completeSync` (the log's group commit). Truncating a divergent suffix and restarting the log
///   after a snapshot are durable when `write(_:)` returns (`PartitionLog` makes them so).
/// - Term and vote: a change makes the next `beginSync` carry the state file, which `perform()`
///   replaces after the log's fsync and before returning, so it is durable before any message of
///   that `Ready` leaves.
/// - Commit alone is written lazily: with the next state write, or by the next sync once
///   `commitPersistMilliseconds` passed since the last state write, and at `close()`. That saves
///   two fsyncs (file and directory) per `Ready` on the hot path. A stale durable commit is safe:
///   `RaftNode.init` starts from `max(commit, snapshotPoint)` and relearns the commit from the
///   leader; like Kafka's high-watermark checkpoint, only the high watermark shown right after a
///   restart may lag (by at most that interval of commits).
/// - Log start: the state file is written (durably) *before* the log changes at its start, and
///   `open` brings the log in line with it: retention records the new snapshot point then deletes
///   segments (a crash in between leaves segments that `open` deletes); a snapshot install records
///   the point with `resetPending`, resets the log, then clears the flag (a crash in between makes
///   `open` redo the reset). So after a crash the log is the old one or the new empty one at
///   `point + 1`, and its start never goes back.
/// - On open the durable commit is clamped to the recovered log end (a state file may be durable
///   ahead of log bytes that a crash lost; those were never acknowledged).
/// - Membership batches: the state file lists those above the snapshot point through its
///   `scannedThrough` offset; `open` re-checks each against the log, drops those past the
///   recovered end, and scans only the log after `scannedThrough` (normally less than a second of
///   appends). Before batches are appended at or below a `scannedThrough` that may be durable
///   (after a truncation, or a crash that cut the tail), the state is rewritten first, so a
///   membership batch written there cannot be missed.
///
/// Measured (debug build, PosixFileSystem, 2-core VM; one 10-record batch per `Ready`): about
/// 0.5 ms per write + sync when only the commit moves, 2.5 ms when the term changes each time
/// (state file replaced: two more fsyncs) — hence the lazy commit.
///
/// Not thread-safe: the caller serialises every call with its own lock, except
/// `PendingSync.perform()`, which is meant to run outside it.
///
/// Read failures: the `RaftStorage` queries cannot throw; an I/O error or a corrupt batch while
/// reading the log makes them answer nil / empty and is recorded in `readFailure`, which the caller
/// should check after driving the node (and then close and reopen the replica).
final class ReplicaStorage: RaftStorage {
    let directory: String
    let fileSystem: any FileSystem
    /// The partition log; consumers read it (the caller holds its own lock around every use of this object).
    let log: PartitionLog
    let stateFile: ReplicaStateFile

    /// How long a commit-only change of the hard state may wait before a sync carries it.
    var commitPersistMilliseconds: Int64 = 1_000

    /// The first read error the queries swallowed (see the type's documentation), if any.
    private(set) var readFailure: StorageError?
    /// Queries answered from the log rather than the in-memory tail (a cache-miss counter).
    private(set) var logReads = 0

    private var state: ReplicaDurableState
    private var cache = ReplicaBatchCache()
    /// `state` differs from the last version handed to the state file.
    private var stateChanged = false
    /// ... and the difference must be durable before the next messages leave (term or vote).
    private var stateUrgent = false
    private var stateSequence: UInt64 = 0
    /// The highest `scannedThrough` among state versions handed out that may be durable: a
    /// truncation below it must rewrite the state before new batches can land there.
    private var scannedThroughMaybeDurable: Offset
    private var lastStateWriteMilliseconds: Int64
    private var nowMilliseconds: Int64
    private var isClosed = false

    static let logDirectoryName = "log"
    /// Bounds the decoded membership index (a membership change per batch would be absurd).
    static let membershipsMax = ReplicaDurableState.membershipsMax

    private init(
        directory: String, fileSystem: any FileSystem, log: PartitionLog, stateFile: ReplicaStateFile, state: ReplicaDurableState,
        nowMilliseconds: Int64
    ) {
        self.directory = directory
        self.fileSystem = fileSystem
        self.log = log
        self.stateFile = stateFile
        self.state = state
        self.scannedThroughMaybeDurable = state.scannedThrough
        self.lastStateWriteMilliseconds = nowMilliseconds
        self.nowMilliseconds = nowMilliseconds
    }

    /// Opens (recovering) or creates the replica in `directory`. `initialMembership` is used only when the
    /// directory holds no state yet (a new replica: the voters are the partition's replicas from metadata).
    static func open(
        directory: String, fileSystem: any FileSystem, logConfig: LogConfig, initialMembership: Membership, nowMilliseconds: Int64
    ) throws(StorageError) -> ReplicaStorage {
        try fileSystem.createDirectory(directory)
        let stateFile = ReplicaStateFile(directory: directory, fileSystem: fileSystem)
        let logDirectory = fileSystem.join(directory, logDirectoryName)
        try fileSystem.removeFile(stateFile.temporaryPath)
        var state: ReplicaDurableState
        var rewrite = false
        if let stored = try stateFile.load() {
            state = stored
        } else {
            // A new replica. The state file is made durable before the log is created, so a log
            // without a state file is a creation that crashed: nothing in it was ever acknowledged.
            try fileSystem.removeDirectory(logDirectory)
            state = ReplicaDurableState(
                hardState: HardState(), snapshotPoint: .beforeStart, snapshotMembership: initialMembership, resetPending: false,
                memberships: [], scannedThrough: LogPosition.beforeStart.offset)
            try stateFile.write(state.encode(), sequence: 1)
        }
        let log = try PartitionLog.open(directory: logDirectory, config: logConfig, fileSystem: fileSystem, nowMilliseconds: nowMilliseconds)
        let start = state.snapshotPoint.offset + 1
        if state.resetPending || (log.logEndOffset == log.logStartOffset && log.logStartOffset != start) {
            // An install that may not have finished, or an empty log at the wrong place (nothing
            // to keep either way).
            try log.reset(to: start)
            state.resetPending = false
            rewrite = true
        } else if log.logStartOffset < start {
            // Retention recorded the new start, then crashed before deleting every old segment.
            guard let index = log.segmentBaseOffsets.firstIndex(of: start) else {
                throw .corrupt("\(logDirectory): no segment starts at the recorded log start \(start)")
            }
            try log.deleteOldestSegments(index)
        } else if log.logStartOffset > start {
            throw .corrupt("\(logDirectory): the log starts at \(log.logStartOffset), after the recorded log start \(start)")
        }
        let storage = ReplicaStorage(
            directory: directory, fileSystem: fileSystem, log: log, stateFile: stateFile, state: state, nowMilliseconds: nowMilliseconds)
        try storage.recoverMemberships()
        // A state file may be durable ahead of log bytes the crash lost (never acknowledged); a
        // lazily written commit may lag the log start (RaftNode starts from the larger anyway).
        let clamped = min(max(storage.state.hardState.commit, storage.state.snapshotPoint.offset), storage.lastOffset)
        if storage.state.hardState.commit != clamped {
            storage.state.hardState.commit = clamped
            rewrite = true
        }
        // Sequence 1 is the creation write above; later writes must be numbered after it.
        storage.stateSequence = 1
        if rewrite { try storage.writeStateNow() }
        return storage
    }

    /// Drops recorded memberships beyond the recovered log end (torn tail) or that no longer match
    /// the log, then scans the log after `scannedThrough` for the rest.
    private func recoverMemberships() throws(StorageError) {
        let last = lastOffset
        var kept: [(offset: Offset, membership: Membership)] = []
        for entry in state.memberships where entry.offset > state.snapshotPoint.offset && entry.offset <= last {
            // Cheap (a handful of batches): guards against a state older than a truncation.
            guard let b = try readBatch(containing: entry.offset), b.lastOffset == entry.offset,
                ControlBatch.decodeMembership(b) == entry.membership
            else { continue }
            kept.append(entry)
        }
        state.memberships = kept
        var next = max(min(state.scannedThrough, last), state.snapshotPoint.offset) + 1
        while next <= last {
            let batches = try log.read(from: next, maxBytes: 1 << 20, upTo: log.logEndOffset)
            guard let tail = batches.last else { break }
            for b in batches where b.isControl {
                if let m = ControlBatch.decodeMembership(b) { state.memberships.append((b.lastOffset, m)) }
            }
            next = tail.nextOffset
        }
        state.memberships.sort { $0.offset < $1.offset }
        state.scannedThrough = last
    }

    // MARK: RaftStorage

    /// The hard state last written by `write(_:)` (durable as described on the type; `RaftNode`
    /// reads it only when it starts, right after `open`, when the two agree).
    var hardState: HardState { state.hardState }
    var snapshotPoint: LogPosition { state.snapshotPoint }
    var snapshotMembership: Membership { state.snapshotMembership }
    var lastOffset: Offset { log.logEndOffset - 1 }
    /// Every offset at or below it is fsynced (after `completeSync`).
    var durableOffset: Offset { log.flushedOffset - 1 }

    func term(endingAt offset: Offset) -> Term? {
        if offset == state.snapshotPoint.offset { return state.snapshotPoint.term }
        if offset <= state.snapshotPoint.offset || offset > lastOffset { return nil }
        if cache.coversBoundary(offset) { return cache.term(endingAt: offset) }
        guard let b = batch(containing: offset), b.lastOffset == offset else { return nil }
        return b.term
    }

    func batch(containing offset: Offset) -> RecordBatch? {
        if offset <= state.snapshotPoint.offset || offset > lastOffset { return nil }
        if let b = cache.batch(containing: offset) { return b }
        do {
            return try readBatch(containing: offset)
        } catch {
            noteReadFailure(error)
            return nil
        }
    }

    func batches(from offset: Offset, bytesMax: Int) -> [RecordBatch] {
        if offset <= state.snapshotPoint.offset || offset > lastOffset { return [] }
        if let cached = cache.batches(from: offset, bytesMax: bytesMax) { return cached }
        logReads += 1
        do {
            let result = try log.read(from: offset, maxBytes: bytesMax, upTo: log.logEndOffset)
            guard let first = result.first, first.baseOffset == offset else { return [] }
            return result
        } catch {
            noteReadFailure(error)
            return []
        }
    }

    func membershipBatches() -> [RecordBatch] {
        state.memberships.compactMap { batch(containing: $0.offset) }
    }

    func snapshot() -> Snapshot {
        Snapshot(point: state.snapshotPoint, membership: state.snapshotMembership)
    }

    /// The batch holding `offset` read from the log (nil in a gap or outside it).
    private func readBatch(containing offset: Offset) throws(StorageError) -> RecordBatch? {
        guard offset >= log.logStartOffset, offset < log.logEndOffset else { return nil }
        logReads += 1
        guard let b = try log.read(from: offset, maxBytes: 1, upTo: log.logEndOffset).first, b.baseOffset <= offset else {
            return nil
        }
        return b
    }

    private func noteReadFailure(_ error: StorageError) {
        if readFailure == nil { readFailure = error }
    }

    // MARK: writing (steps 1–3 of the Ready contract)

    /// Steps 1–3 of the Ready contract: install `ready.snapshot` (data partitions: discard the log and
    /// restart it after snapshot.point — the snapshot has no data), append `ready.entries` (first truncating
    /// a conflicting uncommitted suffix), store `ready.hardState`. Written, not yet durable.
    ///
    /// After an error the replica's state is unknown: close it and open it again.
    func write(_ ready: Ready, nowMilliseconds: Int64) throws(StorageError) {
        precondition(!isClosed, "write to a closed replica")
        self.nowMilliseconds = nowMilliseconds
        if let snapshot = ready.snapshot { try install(snapshot) }
        if !ready.entries.isEmpty { try append(ready.entries, nowMilliseconds: nowMilliseconds) }
        if let h = ready.hardState, h != state.hardState {
            precondition(h.term >= state.hardState.term, "term goes back from \(state.hardState.term) to \(h.term)")
            if h.term != state.hardState.term || h.vote != state.hardState.vote { stateUrgent = true }
            state.hardState = h
            stateChanged = true
        }
    }

    private func install(_ snapshot: Snapshot) throws(StorageError) {
        precondition(snapshot.data == nil, "a partition replica's snapshot carries no data")
        precondition(snapshot.point.offset > state.snapshotPoint.offset, "snapshot \(snapshot.point) is behind the log start")
        state.snapshotPoint = snapshot.point
        state.snapshotMembership = snapshot.membership
        state.memberships = []
        state.scannedThrough = snapshot.point.offset
        // Record the new start first: a crash from here on makes `open` redo the reset.
        state.resetPending = true
        try writeStateNow()
        cache.removeAll()
        try log.reset(to: snapshot.point.offset + 1)
        state.resetPending = false
        // Durable before new batches can be: a pending reset seen on open would wipe them.
        try writeStateNow()
    }

    private func append(_ entries: [RecordBatch], nowMilliseconds: Int64) throws(StorageError) {
        let from = entries[0].baseOffset
        if from <= lastOffset {
            precondition(from > state.snapshotPoint.offset, "append at \(from), below the log start")
            precondition(from > state.hardState.commit, "truncating committed batches at \(from)")
            try truncate(from: from)
        }
        precondition(from == lastOffset + 1, "gap in the log: \(from) after \(lastOffset)")
        if from <= scannedThroughMaybeDurable {
            // A state that may be durable claims to have scanned past here (the log was cut by a
            // truncation or lost its tail in a crash): new batches here, perhaps a membership,
            // would be missed on open. Lower the claim before they can be durable.
            try writeStateNow()
        }
        for b in entries {
            precondition(b.baseOffset == log.logEndOffset, "batches must be consecutive")
            try log.appendAtOwnOffset(b, nowMilliseconds: nowMilliseconds)
            cache.append(b)
            if b.isControl, let m = ControlBatch.decodeMembership(b) {
                precondition(state.memberships.count < Self.membershipsMax, "too many membership changes above the log start")
                state.memberships.append((b.lastOffset, m))
            }
        }
        // Rides along with the next state write; membership batches after a durable
        // `scannedThrough` are found again by scanning on open.
        state.scannedThrough = lastOffset
    }

    private func truncate(from offset: Offset) throws(StorageError) {
        try log.truncate(from: offset)
        precondition(log.logEndOffset == offset, "truncation inside a batch at \(offset)")
        cache.removeSuffix(from: offset)
        state.memberships.removeAll { $0.offset >= offset }
        state.scannedThrough = min(state.scannedThrough, offset - 1)
    }

    /// Replaces the state file now, durably (under the caller's lock: rare paths only).
    private func writeStateNow() throws(StorageError) {
        stateSequence += 1
        try stateFile.write(state.encode(), sequence: stateSequence)
        stateChanged = false
        stateUrgent = false
        lastStateWriteMilliseconds = nowMilliseconds
        scannedThroughMaybeDurable = state.scannedThrough
    }

    // MARK: group commit (step 4)

    /// Step 4 split for group commit without holding the caller's lock: begin under the lock, `perform()`
    /// (the fsyncs) outside it, complete under it. nil = nothing to make durable.
    func beginSync() -> PendingSync? {
        if isClosed { return nil }
        let flush = log.beginFlush()
        var stateWrite: PendingSync.StateWrite?
        if stateUrgent || (stateChanged && nowMilliseconds - lastStateWriteMilliseconds >= commitPersistMilliseconds) {
            stateSequence += 1
            stateWrite = PendingSync.StateWrite(file: stateFile, bytes: state.encode(), sequence: stateSequence)
            stateChanged = false
            stateUrgent = false
            lastStateWriteMilliseconds = nowMilliseconds
            scannedThroughMaybeDurable = max(scannedThroughMaybeDurable, state.scannedThrough)
        }
        if flush == nil && stateWrite == nil { return nil }
        return PendingSync(flush: flush, stateWrite: stateWrite)
    }

    func completeSync(_ sync: PendingSync) {
        if isClosed { return }
        if let flush = sync.flush { log.completeFlush(flush) }
    }

    // MARK: retention

    /// Retention (time/bytes per logConfig) but never past `commit`; moves the log start and snapshotPoint
    /// (its term = the term of the last removed batch). Returns segments removed.
    ///
    /// Pass `min(raft.commit, raft.applied)`, between `advance` and the next `ready()`: the node
    /// hands out committed batches after `applied` from storage, so they must still be there.
    /// Never call `log.enforceRetention` directly: the state file must move the log start first.
    func enforceRetention(nowMilliseconds: Int64, commit: Offset) throws(StorageError) -> Int {
        precondition(!isClosed, "retention on a closed replica")
        self.nowMilliseconds = nowMilliseconds
        let limit = min(commit, lastOffset)
        let count = log.retentionPlan(nowMilliseconds: nowMilliseconds, keepingFrom: limit + 1)
        guard count > 0 else { return 0 }
        let newStart = log.segmentBaseOffsets[count]
        let lastRemoved = newStart - 1
        guard let b = try readBatch(containing: lastRemoved), b.lastOffset == lastRemoved else {
            throw .corrupt("\(log.directory): no batch ends at \(lastRemoved), before segment \(newStart)")
        }
        var membership = state.snapshotMembership
        for entry in state.memberships where entry.offset <= lastRemoved { membership = entry.membership }
        state.snapshotPoint = b.position
        state.snapshotMembership = membership
        state.memberships.removeAll { $0.offset <= lastRemoved }
        state.scannedThrough = max(state.scannedThrough, lastRemoved)
        // Record the new start first; `open` deletes segments a crash left below it.
        try writeStateNow()
        try log.deleteOldestSegments(count)
        cache.removePrefix(through: lastRemoved)
        return count
    }

    /// Replaces the in-memory tail cache by an empty one with these limits (it refills from the
    /// next appends). The defaults (`ReplicaBatchCache.init`) hold at most about 1.2 MiB; tests use
    /// tiny limits to drive the disk path.
    func resetCache(batchBytesMax: Int, batchCountMax: Int, boundaryCountMax: Int) {
        cache = ReplicaBatchCache(batchBytesMax: batchBytesMax, batchCountMax: batchCountMax, boundaryCountMax: boundaryCountMax)
    }

    // MARK: lifecycle

    /// Syncs the log and writes the state file (with the latest commit); the replica cannot be used afterwards.
    func close() throws(StorageError) {
        if isClosed { return }
        try log.flush()
        try writeStateNow()
        try log.close()
        isClosed = true
    }

    /// Removes the replica's directory and everything in it; the replica cannot be used afterwards.
    func delete() throws(StorageError) {
        isClosed = true
        // The state file first: a crash part-way leaves a log without state, which `open` treats
        // as a creation that crashed (wiped, started afresh), not as a corrupt replica.
        try fileSystem.removeFile(stateFile.path)
        try fileSystem.syncDirectory(directory)
        try log.delete()
        try fileSystem.removeDirectory(directory)
    }
}

/// A group commit of one replica in progress (see `ReplicaStorage.beginSync`): the log's fsync,
/// then, when due, the replacement of the state file. Holds its own references, so it stays valid
/// whatever the replica does meanwhile.
struct PendingSync: Sendable {
    struct StateWrite: Sendable {
        let file: ReplicaStateFile
        let bytes: [UInt8]
        let sequence: UInt64
    }

    let flush: PendingFlush?
    let stateWrite: StateWrite?

    /// The fsyncs, outside the caller's lock; thread-safe. The log first, so a durable state never
    /// names a commit beyond durable batches. If it throws, do not call `completeSync`: close and
    /// reopen the replica (the page cache's state is unknown after a failed fsync).
    func perform() throws(StorageError) {
        try flush?.perform()
        if let w = stateWrite { try w.file.write(w.bytes, sequence: w.sequence) }
    }
}

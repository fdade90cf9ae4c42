import BrokerModel

/// The durable part of a node's log, read synchronously by the core (etcd's `Storage`).
///
/// The core never writes through this protocol: the caller writes what `Ready` asks for and the
/// core reads it back after `advance`. Recent entries not yet durable live inside the node.
/// An implementation may be backed by the on-disk partition log; reads must be cheap (an index
/// lookup), because the leader calls them on every append it sends.
///
/// Positions: the stored log holds batches with consecutive offsets starting at
/// `snapshotPoint.offset + 1` (the log start offset).
public protocol RaftStorage: AnyObject {
    /// The hard state as last made durable.
    var hardState: HardState { get }
    /// The position just before the first stored batch: what retention or a snapshot removed.
    var snapshotPoint: LogPosition { get }
    /// The membership in force at `snapshotPoint`.
    var snapshotMembership: Membership { get }
    /// The last offset of the last stored batch; `snapshotPoint.offset` when the log is empty.
    var lastOffset: Offset { get }
    /// The term of the stored batch whose last offset is `offset` (or of `snapshotPoint`), or nil
    /// when no stored batch ends exactly there.
    func term(endingAt offset: Offset) -> Term?
    /// The stored batch holding `offset`, or nil when it is outside the stored log.
    func batch(containing offset: Offset) -> RecordBatch?
    /// Stored batches starting with the one whose base offset is `offset`, in order, up to
    /// `bytesMax` bytes but always at least one when one starts there.
    func batches(from offset: Offset, bytesMax: Int) -> [RecordBatch]
    /// Membership batches above `snapshotPoint`, in log order (read once when the node starts).
    func membershipBatches() -> [RecordBatch]
    /// The snapshot to send a follower that is behind the log start. For a data partition: the
    /// snapshot point and its membership, with no data.
    func snapshot() -> Snapshot
}

/// An in-memory `RaftStorage` for tests and the simulator. It is also the reference for what a
/// disk-backed implementation must do with a `Ready` (`apply(_:)`).
public final class MemoryRaftStorage: RaftStorage {
    public private(set) var hardState: HardState
    public private(set) var snapshotPoint: LogPosition
    public private(set) var snapshotMembership: Membership
    public private(set) var snapshotData: [UInt8]?
    public private(set) var stored: [RecordBatch] = []

    public init(membership: Membership, hardState: HardState = HardState()) {
        self.hardState = hardState
        self.snapshotPoint = .beforeStart
        self.snapshotMembership = membership
    }

    /// A deep copy (the simulator keeps the durable image of a disk this way).
    public func copy() -> MemoryRaftStorage {
        let c = MemoryRaftStorage(membership: snapshotMembership, hardState: hardState)
        c.snapshotPoint = snapshotPoint
        c.snapshotData = snapshotData
        c.stored = stored
        return c
    }

    public var lastOffset: Offset { stored.last?.lastOffset ?? snapshotPoint.offset }
    public var logStartOffset: Offset { snapshotPoint.offset + 1 }

    /// Index of the stored batch containing `offset`, by binary search.
    func index(containing offset: Offset) -> Int? {
        guard let first = stored.first, offset >= first.baseOffset, offset <= lastOffset else { return nil }
        var low = 0
        var high = stored.count - 1
        while low < high {
            let mid = (low + high + 1) / 2
            if stored[mid].baseOffset <= offset { low = mid } else { high = mid - 1 }
        }
        return low
    }

    public func term(endingAt offset: Offset) -> Term? {
        if offset == snapshotPoint.offset { return snapshotPoint.term }
        guard let i = index(containing: offset), stored[i].lastOffset == offset else { return nil }
        return stored[i].term
    }

    public func batch(containing offset: Offset) -> RecordBatch? {
        index(containing: offset).map { stored[$0] }
    }

    public func batches(from offset: Offset, bytesMax: Int) -> [RecordBatch] {
        guard let i = index(containing: offset), stored[i].baseOffset == offset else { return [] }
        var result: [RecordBatch] = []
        var bytes = 0
        for b in stored[i...] {
            if !result.isEmpty && bytes + b.sizeBytes > bytesMax { break }
            bytes += b.sizeBytes
            result.append(b)
        }
        return result
    }

    public func membershipBatches() -> [RecordBatch] { stored.filter { $0.isControl && ControlBatch.isMembership($0) } }

    public func snapshot() -> Snapshot {
        Snapshot(point: snapshotPoint, membership: snapshotMembership, data: snapshotData)
    }

    // MARK: writing (the caller's side of the Ready contract)

    /// Installs a snapshot: the whole log is replaced by "everything through `point`".
    public func install(_ snapshot: Snapshot) {
        stored.removeAll()
        snapshotPoint = snapshot.point
        snapshotMembership = snapshot.membership
        snapshotData = snapshot.data
    }

    /// Appends batches, first discarding a conflicting suffix (step 2 of the `Ready` contract).
    public func append(_ batches: [RecordBatch]) {
        guard let first = batches.first else { return }
        if first.baseOffset <= lastOffset {
            precondition(first.baseOffset > snapshotPoint.offset, "append below the log start")
            let keep = index(containing: first.baseOffset)!
            precondition(stored[keep].baseOffset == first.baseOffset, "truncation inside a batch")
            stored.removeSubrange(keep...)
        }
        precondition(first.baseOffset == lastOffset + 1, "gap in the log: \(first.baseOffset) after \(lastOffset)")
        for b in batches {
            precondition(b.baseOffset == lastOffset + 1, "batches must be consecutive")
            stored.append(b)
        }
    }

    public func setHardState(_ state: HardState) { hardState = state }

    /// Applies a whole `Ready` (steps 1–3). The simulator applies only a prefix to model a crash
    /// before fsync.
    public func apply(_ ready: Ready) {
        if let s = ready.snapshot { install(s) }
        append(ready.entries)
        if let h = ready.hardState { hardState = h }
    }

    /// Moves the log start forward (retention, or after the state machine took a snapshot): every
    /// batch through `offset` is dropped. `offset` must be a batch's last offset and committed.
    public func compact(through offset: Offset, data: [UInt8]? = nil) {
        guard offset > snapshotPoint.offset else { return }
        guard let i = index(containing: offset) else { preconditionFailure("compact past the log end") }
        precondition(stored[i].lastOffset == offset, "compaction point must end a batch")
        precondition(offset <= hardState.commit, "only committed entries may be compacted")
        var membership = snapshotMembership
        for b in stored[...i] where b.isControl {
            if let m = ControlBatch.decodeMembership(b) { membership = m }
        }
        snapshotPoint = stored[i].position
        snapshotMembership = membership
        snapshotData = data
        stored.removeSubrange(...i)
    }
}

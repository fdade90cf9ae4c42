import BrokerModel

/// The log as the node sees it: the durable part in `storage`, then a possibly pending snapshot,
/// then the unstable batches not yet handed to the caller as durable.
extension RaftNode {
    /// Everything at or before this position is compacted (or about to be, if a snapshot is pending).
    public var snapshotPoint: LogPosition { pendingSnapshot?.point ?? storage.snapshotPoint }
    /// First offset still in the log (Kafka's log start offset).
    public var logStartOffset: Offset { snapshotPoint.offset + 1 }
    /// Last offset in the log, durable or not.
    public var lastOffset: Offset {
        if let last = unstable.last { return last.lastOffset }
        return pendingSnapshot?.point.offset ?? storage.lastOffset
    }
    public var lastPosition: LogPosition {
        guard let t = term(endingAt: lastOffset) else { preconditionFailure("the last offset has no term") }
        return LogPosition(offset: lastOffset, term: t)
    }

    func unstableIndex(containing offset: Offset) -> Int? {
        guard let first = unstable.first, offset >= first.baseOffset, offset <= unstable.last!.lastOffset else { return nil }
        var low = 0
        var high = unstable.count - 1
        while low < high {
            let mid = (low + high + 1) / 2
            if unstable[mid].baseOffset <= offset { low = mid } else { high = mid - 1 }
        }
        return low
    }

    /// The term of the entry whose last offset is `offset`, or nil when none ends there (or it is compacted).
    public func term(endingAt offset: Offset) -> Term? {
        let point = snapshotPoint
        if offset == point.offset { return point.term }
        if offset < point.offset || offset > lastOffset { return nil }
        if let first = unstable.first, offset >= first.baseOffset {
            guard let i = unstableIndex(containing: offset), unstable[i].lastOffset == offset else { return nil }
            return unstable[i].term
        }
        if pendingSnapshot != nil { return nil }
        return storage.term(endingAt: offset)
    }

    /// The batch holding `offset`, if it is in the log.
    public func batch(containing offset: Offset) -> RecordBatch? {
        if offset <= snapshotPoint.offset || offset > lastOffset { return nil }
        if let first = unstable.first, offset >= first.baseOffset {
            return unstableIndex(containing: offset).map { unstable[$0] }
        }
        if pendingSnapshot != nil { return nil }
        return storage.batch(containing: offset)
    }

    /// Batches starting at `offset` (a batch's base offset), up to `bytesMax` (at least one).
    func batches(from offset: Offset, bytesMax: Int) -> [RecordBatch] {
        if offset <= snapshotPoint.offset || offset > lastOffset { return [] }
        var result: [RecordBatch] = []
        var bytes = 0
        var next = offset
        let unstableStart = unstable.first?.baseOffset
        if pendingSnapshot == nil, unstableStart == nil || offset < unstableStart! {
            for b in storage.batches(from: offset, bytesMax: bytesMax) {
                if let s = unstableStart, b.baseOffset >= s { break }
                result.append(b)
                bytes += b.sizeBytes
            }
            guard let last = result.last else { return [] }
            next = last.nextOffset
            guard let s = unstableStart, next == s, bytes < bytesMax else { return result }
        }
        guard let start = unstableIndex(containing: next), unstable[start].baseOffset == next else { return result }
        for b in unstable[start...] {
            if !result.isEmpty && bytes + b.sizeBytes > bytesMax { break }
            result.append(b)
            bytes += b.sizeBytes
        }
        return result
    }

    /// The last position at or before `offset` whose term is at most `termMax`; the snapshot point
    /// when there is none. Used on both sides of fast conflict resolution.
    func lastPosition(atOrBefore offset: Offset, termAtMost termMax: Term) -> LogPosition {
        var o = min(offset, lastOffset)
        let point = snapshotPoint
        while o > point.offset {
            guard let b = batch(containing: o) else { preconditionFailure("hole in the log at \(o)") }
            if b.lastOffset == o && b.term <= termMax { return b.position }
            o = b.baseOffset - 1
        }
        return point
    }

    /// Appends batches after truncating a conflicting, uncommitted suffix.
    mutating func truncateAndAppend(_ batches: some Collection<RecordBatch>) {
        guard let first = batches.first else { return }
        let from = first.baseOffset
        precondition(from > commit, "truncating committed entries at \(from), commit \(commit)")
        precondition(from <= lastOffset + 1, "gap: appending \(from) after \(lastOffset)")
        precondition(term(endingAt: from - 1) != nil, "appending \(from) after a position that ends no batch")
        if from <= lastOffset {
            events.append(.truncated(from: from))
            if let s = unstable.first?.baseOffset, from >= s {
                unstable.removeSubrange(unstableIndex(containing: from)!...)
            } else {
                // The conflict is in durable storage: the unstable part starts over at `from` and
                // the caller discards the stored suffix when it persists (Ready contract step 2).
                unstable.removeAll()
            }
            let before = membershipHistory.count
            membershipHistory.removeAll { $0.offset >= from }
            if membershipHistory.count != before { membershipDidChange() }
        }
        var changed = false
        var expected = from
        for b in batches {
            precondition(b.baseOffset == expected, "batches must be consecutive")
            expected = b.nextOffset
            unstable.append(b)
            if b.isControl, let m = ControlBatch.decodeMembership(b) {
                membershipHistory.append((b.lastOffset, m))
                events.append(.membershipChanged(m, at: b.lastOffset))
                changed = true
            }
        }
        if changed { membershipDidChange() }
    }
}

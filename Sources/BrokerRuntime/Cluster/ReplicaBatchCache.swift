import BrokerModel

/// The tail of a replica's log in memory, so the Raft leader's reads on every append it sends
/// (`term(endingAt:)`, `batches(from:bytesMax:)`, `batch(containing:)`) do not touch the disk.
///
/// Two windows, both a contiguous suffix of the stored log: whole batches (bounded by bytes and
/// count) and, reaching further back, batch boundaries with their terms (bounded by count), which
/// is all `term(endingAt:)` needs. Anything older is read from the log.
struct ReplicaBatchCache {
    struct Boundary {
        var base: Offset
        var last: Offset
        var term: Term
    }

    let batchBytesMax: Int
    let batchCountMax: Int
    let boundaryCountMax: Int

    /// `batches[batchHead...]` are live; the dead prefix is dropped in bulk (amortised O(1)).
    private var batches: [RecordBatch] = []
    private var batchHead = 0
    private var batchBytes = 0
    private var boundaries: [Boundary] = []
    private var boundaryHead = 0

    /// Defaults sized for many replicas per broker (about 1.2 MiB each at most): the batch window
    /// matches `RaftConfiguration.appendBytesMax`, so a follower within one append of the end is
    /// served from memory; 8192 boundaries (24 bytes each) cover the conflict search of a
    /// follower far further back.
    init(batchBytesMax: Int = 1 << 20, batchCountMax: Int = 1024, boundaryCountMax: Int = 8192) {
        precondition(batchBytesMax > 0 && batchCountMax > 0 && boundaryCountMax >= batchCountMax)
        self.batchBytesMax = batchBytesMax
        self.batchCountMax = batchCountMax
        self.boundaryCountMax = boundaryCountMax
    }

    var batchCount: Int { batches.count - batchHead }
    var boundaryCount: Int { boundaries.count - boundaryHead }
    var cachedBytes: Int { batchBytes }

    /// Adds the batch that now ends the log (it must follow the cached tail).
    mutating func append(_ batch: RecordBatch) {
        if let last = boundaries.last, boundaryCount > 0 {
            precondition(batch.baseOffset == last.last + 1, "cache out of step with the log")
        }
        boundaries.append(Boundary(base: batch.baseOffset, last: batch.lastOffset, term: batch.term))
        batches.append(batch)
        batchBytes += batch.sizeBytes
        while batchCount > 1 && (batchBytes > batchBytesMax || batchCount > batchCountMax) {
            batchBytes -= batches[batchHead].sizeBytes
            batchHead += 1
        }
        if boundaryCount > boundaryCountMax { boundaryHead += 1 }
        compact()
    }

    private mutating func compact() {
        if batchHead > 64 && batchHead * 2 > batches.count {
            batches.removeFirst(batchHead)
            batchHead = 0
        }
        if boundaryHead > 64 && boundaryHead * 2 > boundaries.count {
            boundaries.removeFirst(boundaryHead)
            boundaryHead = 0
        }
    }

    mutating func removeAll() {
        batches = []
        batchHead = 0
        batchBytes = 0
        boundaries = []
        boundaryHead = 0
    }

    /// Drops every batch whose last offset is `>= offset` (truncation).
    mutating func removeSuffix(from offset: Offset) {
        while batchCount > 0, batches[batches.count - 1].lastOffset >= offset {
            batchBytes -= batches.removeLast().sizeBytes
        }
        while boundaryCount > 0, boundaries[boundaries.count - 1].last >= offset { boundaries.removeLast() }
        if batchCount == 0 { batches = []; batchHead = 0 }
        if boundaryCount == 0 { boundaries = []; boundaryHead = 0 }
    }

    /// Drops every batch whose last offset is `<= offset` (retention).
    mutating func removePrefix(through offset: Offset) {
        while batchCount > 0, batches[batchHead].lastOffset <= offset {
            batchBytes -= batches[batchHead].sizeBytes
            batchHead += 1
        }
        while boundaryCount > 0, boundaries[boundaryHead].last <= offset { boundaryHead += 1 }
        compact()
    }

    /// Index in `array[head...]` of the element containing `offset`, by binary search.
    private static func find<T>(_ array: [T], head: Int, _ offset: Offset, base: (T) -> Offset, last: (T) -> Offset) -> Int? {
        guard head < array.count, offset >= base(array[head]), offset <= last(array[array.count - 1]) else { return nil }
        var low = head
        var high = array.count - 1
        while low < high {
            let mid = (low + high + 1) / 2
            if base(array[mid]) <= offset { low = mid } else { high = mid - 1 }
        }
        return low
    }

    /// Whether `offset` lies in the window of known boundaries (then `term(endingAt:)` is exact).
    func coversBoundary(_ offset: Offset) -> Bool {
        boundaryCount > 0 && offset >= boundaries[boundaryHead].base && offset <= boundaries[boundaries.count - 1].last
    }

    /// The term of the batch ending exactly at `offset`; nil when no batch in the window ends there.
    func term(endingAt offset: Offset) -> Term? {
        guard let i = Self.find(boundaries, head: boundaryHead, offset, base: \.base, last: \.last), boundaries[i].last == offset
        else { return nil }
        return boundaries[i].term
    }

    func batch(containing offset: Offset) -> RecordBatch? {
        Self.find(batches, head: batchHead, offset, base: \.baseOffset, last: \.lastOffset).map { batches[$0] }
    }

    /// Cached batches starting with the one whose base offset is `offset`, up to `bytesMax` (at
    /// least one); nil when no cached batch starts there.
    func batches(from offset: Offset, bytesMax: Int) -> [RecordBatch]? {
        guard let i = Self.find(batches, head: batchHead, offset, base: \.baseOffset, last: \.lastOffset),
            batches[i].baseOffset == offset
        else { return nil }
        var result: [RecordBatch] = []
        var bytes = 0
        for b in batches[i...] {
            if !result.isEmpty && bytes + b.sizeBytes > bytesMax { break }
            bytes += b.sizeBytes
            result.append(b)
        }
        return result
    }
}

import BrokerModel

/// One entry of a segment's sparse offset index.
struct OffsetIndexEntry: Equatable {
    /// Base offset of the indexed batch minus the segment's base offset.
    var relativeOffset: Int32
    /// Byte position of that batch in the `.log` file.
    var position: Int32
}

/// One entry of a segment's time index, written together with the offset index entry of the same
/// `relativeOffset` (the two files are parallel: entry *i* of one pairs with entry *i* of the other).
struct TimeIndexEntry: Equatable {
    /// The largest `maxTimestamp` of all batches *before* the batch at `relativeOffset` in this
    /// segment (-1 when there are none). Never decreases from one entry to the next, so a reader
    /// looking for the first batch with `maxTimestamp >= t` may start at the last entry with
    /// `timestamp < t`: every batch before it is older than `t`.
    var timestamp: Int64
    var relativeOffset: Int32
}

/// One segment of a partition log: three files named by the 20-digit zero-padded base offset.
///
/// - `<base>.log`: record batches (RecordBatch v2, see `BrokerModel.RecordBatch`) back to back,
///   base offsets increasing (gaps allowed). The only source of truth.
/// - `<base>.index`: sparse offset index, 8-byte entries, big-endian
///   `relativeOffset: Int32, position: Int32`, one for the first batch appended after at least
///   `indexIntervalBytes` of log since the previous entry. Both columns strictly increase.
/// - `<base>.timeindex`: 12-byte entries, big-endian `timestamp: Int64, relativeOffset: Int32`,
///   parallel to `.index` (see `TimeIndexEntry`).
///
/// Both index files are derived data: they are written lazily (`pendingEntriesMax` at a time, at
/// seal and at close), held entirely in memory, and on open every entry after the last one that
/// agrees with the log is rebuilt by scanning. So an index may lag or be torn after a crash
/// without losing anything.
///
/// Not thread-safe: owned by `PartitionLog`, which its caller serialises. The file handles are
/// shared with `PendingFlush`, which only calls `sync()` on them.
final class Segment {
    static let offsetIndexEntryBytes = 8
    static let timeIndexEntryBytes = 12
    /// Index entries held in memory before they are written out (one write per this many entries).
    static let pendingEntriesMax = 256

    let baseOffset: Offset
    let logPath: String
    let offsetIndexPath: String
    let timeIndexPath: String
    let logFile: any FileHandle
    let offsetIndexFile: any FileHandle
    let timeIndexFile: any FileHandle

    /// Bytes of valid batches in the `.log` file (the file is cut to this on recovery).
    var sizeBytes: Int64 = 0
    /// The offset after the last batch (the base offset when empty).
    var nextOffset: Offset
    var offsetIndex: [OffsetIndexEntry] = []
    var timeIndex: [TimeIndexEntry] = []
    /// Entries of each index already written to its file.
    var indexEntriesWritten = 0
    var bytesSinceIndexEntry = 0
    /// Largest batch `maxTimestamp` in the segment, -1 when empty.
    var maxTimestamp: Int64 = -1
    /// `maxTimestamp` of the first batch: the segment's age for time-based rolling (Kafka's rule).
    var firstBatchTimestamp: Int64?
    /// Writes to the `.log` since its last sync.
    var logIsDirty = false
    /// Writes to an index file since its last sync.
    var indexIsDirty = false

    var isEmpty: Bool { sizeBytes == 0 }

    static func fileStem(_ base: Offset) -> String {
        let digits = String(base.rawValue)
        return String(repeating: "0", count: max(0, 20 - digits.count)) + digits
    }

    /// Parses `00000000000000000042` into 42; nil for anything else.
    static func parseStem(_ stem: Substring) -> Offset? {
        guard stem.count == 20, stem.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let v = Int64(stem) else { return nil }
        return Offset(v)
    }

    private init(directory: String, baseOffset: Offset, fileSystem: any FileSystem, create: Bool) throws(StorageError) {
        self.baseOffset = baseOffset
        self.nextOffset = baseOffset
        let stem = fileSystem.join(directory, Segment.fileStem(baseOffset))
        logPath = stem + ".log"
        offsetIndexPath = stem + ".index"
        timeIndexPath = stem + ".timeindex"
        logFile = try fileSystem.openFile(logPath, create: create)
        offsetIndexFile = try fileSystem.openFile(offsetIndexPath, create: true)
        timeIndexFile = try fileSystem.openFile(timeIndexPath, create: true)
    }

    /// Creates a new empty segment and makes its directory entries durable.
    static func create(directory: String, baseOffset: Offset, fileSystem: any FileSystem) throws(StorageError) -> Segment {
        let segment = try Segment(directory: directory, baseOffset: baseOffset, fileSystem: fileSystem, create: true)
        // Truncate in case an older incarnation's files were left behind at this name.
        try segment.logFile.truncate(to: 0)
        try segment.offsetIndexFile.truncate(to: 0)
        try segment.timeIndexFile.truncate(to: 0)
        try segment.logFile.sync()
        try segment.offsetIndexFile.sync()
        try segment.timeIndexFile.sync()
        try fileSystem.syncDirectory(directory)
        return segment
    }

    /// Opens an existing segment and recovers it (see `recover`).
    static func open(
        directory: String, baseOffset: Offset, fileSystem: any FileSystem, isLast: Bool, fullScan: Bool,
        indexIntervalBytes: Int
    ) throws(StorageError) -> Segment {
        let segment = try Segment(directory: directory, baseOffset: baseOffset, fileSystem: fileSystem, create: false)
        try segment.recover(isLast: isLast, fullScan: fullScan, indexIntervalBytes: indexIntervalBytes)
        return segment
    }

    // MARK: recovery

    /// Loads the indexes, keeps the longest prefix of entry pairs that is well-formed and agrees
    /// with the log, and scans the log from the last kept entry to its end, validating length,
    /// magic and CRC of every batch. Everything from the first invalid batch on is cut from the
    /// last segment (a torn or corrupt tail: never fsynced, or never acknowledged); in an older
    /// segment, which was fsynced when it was sealed, the bytes are left alone and reads of them
    /// fail with `.corrupt`.
    ///
    /// With `fullScan` (the last segment after an unclean shutdown) the scan starts at position 0,
    /// so corruption anywhere in the segment is found; the loaded index entries are kept on disk
    /// only as far as they equal the rebuilt ones.
    func recover(isLast: Bool, fullScan: Bool, indexIntervalBytes: Int) throws(StorageError) {
        let fileBytes = try logFile.size()
        let offsetIndexFileBytes = try offsetIndexFile.size()
        let timeIndexFileBytes = try timeIndexFile.size()
        let offsets = try loadOffsetIndex(fileBytes: fileBytes)
        let times = try loadTimeIndex()
        var pairs = min(offsets.count, times.count)
        for i in 0..<pairs where offsets[i].relativeOffset != times[i].relativeOffset {
            pairs = i
            break
        }
        offsetIndex = fullScan ? [] : Array(offsets[0..<pairs])
        timeIndex = fullScan ? [] : Array(times[0..<pairs])

        var start: Int64 = 0
        if let last = offsetIndex.last {
            // Trust the last entry only if a valid batch with the expected offset sits where it points.
            if let header = try? readValidBatchHeader(at: Int64(last.position), fileBytes: fileBytes),
                header.baseOffset == baseOffset + Int64(last.relativeOffset)
            {
                start = Int64(last.position)
                maxTimestamp = timeIndex.last!.timestamp
            } else {
                offsetIndex = []
                timeIndex = []
            }
        }
        if start == 0 { maxTimestamp = -1 }
        nextOffset = baseOffset
        bytesSinceIndexEntry = 0
        var scanner = BatchScanner(file: logFile, position: start, end: fileBytes, chunkBytes: 1 << 20)
        var validEnd = start
        var first = true
        scanLoop: while true {
            switch try scanner.next() {
            case .end:
                break scanLoop
            case .invalid:
                break scanLoop
            case .batch(let position, let range):
                let ok = scanner.buffer.withUnsafeBytes { raw in
                    (try? RecordBatch.validate(UnsafeRawBufferPointer(rebasing: raw[range]))) != nil
                }
                let header = BatchHeader(scanner.buffer, at: range.lowerBound)
                // Offsets must increase and stay relative-addressable; anything else is garbage.
                guard ok, header.baseOffset >= nextOffset, header.lastOffset - baseOffset <= Int64(Int32.max) else {
                    break scanLoop
                }
                if !(first && start > 0) {
                    noteIndexEntry(for: header, at: position, indexIntervalBytes: indexIntervalBytes)
                }
                first = false
                bytesSinceIndexEntry += range.count
                maxTimestamp = max(maxTimestamp, header.maxTimestamp)
                nextOffset = header.lastOffset + 1
                validEnd = position + Int64(range.count)
            }
        }
        sizeBytes = validEnd
        if isLast && validEnd < fileBytes {
            try logFile.truncate(to: validEnd)
            try logFile.sync()
        }
        // Keep on disk the entries that agree with the rebuilt index; cut the rest (rewritten lazily).
        var common = 0
        while common < min(offsetIndex.count, pairs) && offsetIndex[common] == offsets[common] && timeIndex[common] == times[common] {
            common += 1
        }
        indexEntriesWritten = common
        if offsetIndexFileBytes != Int64(common * Segment.offsetIndexEntryBytes)
            || timeIndexFileBytes != Int64(common * Segment.timeIndexEntryBytes)
        {
            try offsetIndexFile.truncate(to: Int64(indexEntriesWritten * Segment.offsetIndexEntryBytes))
            try timeIndexFile.truncate(to: Int64(indexEntriesWritten * Segment.timeIndexEntryBytes))
            try offsetIndexFile.sync()
            try timeIndexFile.sync()
        }
        if !isEmpty {
            firstBatchTimestamp = try readValidBatchHeader(at: 0, fileBytes: validEnd)?.maxTimestamp
        }
    }

    private func loadOffsetIndex(fileBytes: Int64) throws(StorageError) -> [OffsetIndexEntry] {
        let count = Int(try offsetIndexFile.size()) / Segment.offsetIndexEntryBytes
        let bytes = try offsetIndexFile.read(at: 0, count: count * Segment.offsetIndexEntryBytes)
        var entries: [OffsetIndexEntry] = []
        entries.reserveCapacity(count)
        for i in 0..<(bytes.count / Segment.offsetIndexEntryBytes) {
            let at = i * Segment.offsetIndexEntryBytes
            let entry = OffsetIndexEntry(relativeOffset: bytes.readBigEndian(Int32.self, at: at), position: bytes.readBigEndian(Int32.self, at: at + 4))
            // Keep the strictly increasing prefix that points inside the log.
            if let previous = entries.last, entry.relativeOffset <= previous.relativeOffset || entry.position <= previous.position { break }
            if entry.relativeOffset < 0 || entry.position < 0 || Int64(entry.position) >= fileBytes { break }
            entries.append(entry)
        }
        return entries
    }

    private func loadTimeIndex() throws(StorageError) -> [TimeIndexEntry] {
        let count = Int(try timeIndexFile.size()) / Segment.timeIndexEntryBytes
        let bytes = try timeIndexFile.read(at: 0, count: count * Segment.timeIndexEntryBytes)
        var entries: [TimeIndexEntry] = []
        entries.reserveCapacity(count)
        for i in 0..<(bytes.count / Segment.timeIndexEntryBytes) {
            let at = i * Segment.timeIndexEntryBytes
            let entry = TimeIndexEntry(timestamp: bytes.readBigEndian(Int64.self, at: at), relativeOffset: bytes.readBigEndian(Int32.self, at: at + 8))
            if let previous = entries.last, entry.relativeOffset <= previous.relativeOffset || entry.timestamp < previous.timestamp { break }
            entries.append(entry)
        }
        return entries
    }

    /// The header of the batch at `position` if the whole batch is valid there (CRC included).
    func readValidBatchHeader(at position: Int64, fileBytes: Int64) throws(StorageError) -> BatchHeader? {
        var scanner = BatchScanner(file: logFile, position: position, end: fileBytes, chunkBytes: 0)
        guard case .batch(_, let range) = try scanner.next() else { return nil }
        let ok = scanner.buffer.withUnsafeBytes { raw in
            (try? RecordBatch.validate(UnsafeRawBufferPointer(rebasing: raw[range]))) != nil
        }
        return ok ? BatchHeader(scanner.buffer, at: range.lowerBound) : nil
    }

    // MARK: appending

    /// Adds an index entry pair for a batch about to sit at `position`, when enough bytes passed.
    func noteIndexEntry(for header: BatchHeader, at position: Int64, indexIntervalBytes: Int) {
        guard bytesSinceIndexEntry >= indexIntervalBytes else { return }
        let relative = Int32(header.baseOffset - baseOffset)
        offsetIndex.append(OffsetIndexEntry(relativeOffset: relative, position: Int32(position)))
        timeIndex.append(TimeIndexEntry(timestamp: maxTimestamp, relativeOffset: relative))
        bytesSinceIndexEntry = 0
    }

    /// Writes `bytes` (one validated batch) at the end of the log. One write system call.
    func append(_ bytes: [UInt8], header: BatchHeader, indexIntervalBytes: Int) throws(StorageError) {
        precondition(header.baseOffset >= nextOffset, "batch offsets go backwards in segment \(baseOffset)")
        precondition(sizeBytes + Int64(bytes.count) <= Int64(Int32.max), "segment position overflows Int32")
        do {
            try logFile.write(bytes, at: sizeBytes)
        } catch {
            // A partial write (disk full) may have left bytes past the end: cut them, best effort,
            // so the next append does not leave a garbage tail behind a shorter batch.
            try? logFile.truncate(to: sizeBytes)
            throw error
        }
        logIsDirty = true
        noteIndexEntry(for: header, at: sizeBytes, indexIntervalBytes: indexIntervalBytes)
        if firstBatchTimestamp == nil { firstBatchTimestamp = header.maxTimestamp }
        sizeBytes += Int64(bytes.count)
        bytesSinceIndexEntry += bytes.count
        maxTimestamp = max(maxTimestamp, header.maxTimestamp)
        nextOffset = header.lastOffset + 1
        if offsetIndex.count - indexEntriesWritten >= Segment.pendingEntriesMax {
            try writePendingIndexEntries()
        }
    }

    /// Writes index entries held only in memory to the index files (not synced).
    func writePendingIndexEntries() throws(StorageError) {
        guard indexEntriesWritten < offsetIndex.count else { return }
        var offsets = ByteWriter(capacity: (offsetIndex.count - indexEntriesWritten) * Segment.offsetIndexEntryBytes)
        var times = ByteWriter(capacity: (offsetIndex.count - indexEntriesWritten) * Segment.timeIndexEntryBytes)
        for i in indexEntriesWritten..<offsetIndex.count {
            offsets.int32(offsetIndex[i].relativeOffset)
            offsets.int32(offsetIndex[i].position)
            times.int64(timeIndex[i].timestamp)
            times.int32(timeIndex[i].relativeOffset)
        }
        try offsetIndexFile.write(offsets.bytes, at: Int64(indexEntriesWritten * Segment.offsetIndexEntryBytes))
        try timeIndexFile.write(times.bytes, at: Int64(indexEntriesWritten * Segment.timeIndexEntryBytes))
        indexEntriesWritten = offsetIndex.count
        indexIsDirty = true
    }

    /// Writes pending index entries and fsyncs all three files (when sealing or closing).
    func syncAll() throws(StorageError) {
        try writePendingIndexEntries()
        try logFile.sync()
        if indexIsDirty {
            try offsetIndexFile.sync()
            try timeIndexFile.sync()
        }
        logIsDirty = false
        indexIsDirty = false
    }

    /// Cuts the segment right before the batch at `position`, whose base offset is `offset`
    /// (`position == sizeBytes` cuts nothing), and makes the cut durable: a truncated Raft suffix
    /// must never reappear after a crash.
    func truncate(toPosition position: Int64, nextOffset newNext: Offset) throws(StorageError) {
        let relative = newNext - baseOffset
        let keep = offsetIndex.firstIndex { Int64($0.position) >= position || Int64($0.relativeOffset) >= relative } ?? offsetIndex.count
        offsetIndex.removeSubrange(keep...)
        timeIndex.removeSubrange(keep...)
        if indexEntriesWritten > keep {
            indexEntriesWritten = keep
            try offsetIndexFile.truncate(to: Int64(keep * Segment.offsetIndexEntryBytes))
            try timeIndexFile.truncate(to: Int64(keep * Segment.timeIndexEntryBytes))
            try offsetIndexFile.sync()
            try timeIndexFile.sync()
        }
        try logFile.truncate(to: position)
        try logFile.sync()
        logIsDirty = false
        sizeBytes = position
        nextOffset = newNext
        // Recompute the running state past the last kept entry by scanning at most one interval.
        let from = Int64(offsetIndex.last?.position ?? 0)
        maxTimestamp = timeIndex.last?.timestamp ?? -1
        bytesSinceIndexEntry = 0
        var scanner = BatchScanner(file: logFile, position: from, end: sizeBytes, chunkBytes: 1 << 20)
        while case .batch(_, let range) = try scanner.next() {
            maxTimestamp = max(maxTimestamp, BatchHeader(scanner.buffer, at: range.lowerBound).maxTimestamp)
            bytesSinceIndexEntry += range.count
        }
        if isEmpty { firstBatchTimestamp = nil }
    }

    // MARK: lookups

    /// Position of the last indexed batch at or before `offset` (0 when none): where a scan for
    /// `offset` starts.
    func startPosition(for offset: Offset) -> Int64 {
        let relative = offset - baseOffset
        var low = 0
        var high = offsetIndex.count
        while low < high {
            let mid = (low + high) / 2
            if Int64(offsetIndex[mid].relativeOffset) <= relative { low = mid + 1 } else { high = mid }
        }
        return low == 0 ? 0 : Int64(offsetIndex[low - 1].position)
    }

    /// Position where a scan for the first batch with `maxTimestamp >= timestamp` may start.
    func startPosition(forTimestamp timestamp: Int64) -> Int64 {
        var low = 0
        var high = timeIndex.count
        while low < high {
            let mid = (low + high) / 2
            if timeIndex[mid].timestamp < timestamp { low = mid + 1 } else { high = mid }
        }
        // Entries 0..<low all have timestamp < t: start at the last of them.
        return low == 0 ? 0 : Int64(offsetIndex[low - 1].position)
    }
}

/// The fixed header fields the log needs, read from a batch's first 61 bytes.
struct BatchHeader {
    var baseOffset: Offset
    var lastOffset: Offset
    var maxTimestamp: Int64

    init(_ bytes: [UInt8], at start: Int) {
        baseOffset = Offset(bytes.readBigEndian(Int64.self, at: start))
        lastOffset = baseOffset + Int64(bytes.readBigEndian(Int32.self, at: start + 23))
        maxTimestamp = bytes.readBigEndian(Int64.self, at: start + 35)
    }

    init(_ batch: RecordBatch) {
        baseOffset = batch.baseOffset
        lastOffset = batch.lastOffset
        maxTimestamp = batch.maxTimestamp
    }
}

/// Walks the batches of a log file from `position` to `end` with large sequential reads. Checks
/// only that each declared length fits; callers validate CRCs of what they use.
struct BatchScanner {
    enum Step {
        /// A batch at `position`, occupying `range` of `buffer`.
        case batch(position: Int64, range: Range<Int>)
        case end
        /// The bytes at `position` cannot be a batch (torn header, impossible length).
        case invalid(position: Int64)
    }

    let file: any FileHandle
    var position: Int64
    let end: Int64
    let chunkBytes: Int
    var buffer: [UInt8] = []
    var bufferStart: Int64 = 0

    init(file: any FileHandle, position: Int64, end: Int64, chunkBytes: Int) {
        self.file = file
        self.position = position
        self.end = end
        self.chunkBytes = chunkBytes
    }

    private mutating func ensure(_ count: Int) throws(StorageError) -> Bool {
        let have = bufferStart + Int64(buffer.count) - position
        if position >= bufferStart && have >= Int64(count) { return true }
        let want = Int(min(end - position, Int64(max(count, chunkBytes))))
        buffer = try file.read(at: position, count: want)
        bufferStart = position
        return buffer.count >= count
    }

    mutating func next() throws(StorageError) -> Step {
        if position >= end { return .end }
        if end - position < Int64(RecordBatch.headerBytes) { return .invalid(position: position) }
        guard try ensure(RecordBatch.headerBytes) else { return .invalid(position: position) }
        let start = Int(position - bufferStart)
        let size = 12 + Int(buffer.readBigEndian(Int32.self, at: start + 8))
        if size < RecordBatch.headerBytes || Int64(size) > end - position || buffer[start + 16] != UInt8(RecordBatch.magic) {
            return .invalid(position: position)
        }
        guard try ensure(size) else { return .invalid(position: position) }
        let from = Int(position - bufferStart)
        let batchPosition = position
        position += Int64(size)
        return .batch(position: batchPosition, range: from..<(from + size))
    }
}

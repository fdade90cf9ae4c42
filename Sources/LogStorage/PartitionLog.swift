import BrokerModel

/// Tunables of one partition log. Changes apply from the next append or retention pass.
public struct LogConfig: Sendable, Equatable {
    /// Roll to a new segment before an append that would make the active one larger than this.
    public var segmentBytes: Int = 1 << 30
    /// Roll when the active segment's first batch is older than this (by its `maxTimestamp`).
    public var segmentMilliseconds: Int64 = 7 * 24 * 3600 * 1000
    /// Delete sealed segments whose newest batch is older than this; -1 = unlimited.
    public var retentionMilliseconds: Int64 = 7 * 24 * 3600 * 1000
    /// Delete the oldest sealed segments while the log stays at least this large without them;
    /// -1 = unlimited.
    public var retentionBytes: Int64 = -1
    /// Bytes of log between two sparse index entries.
    public var indexIntervalBytes: Int = 4096
    public init() {}
}

/// A group commit in progress: made under the caller's lock by `PartitionLog.beginFlush()`,
/// performed outside it (`perform()` may block in fdatasync for milliseconds while appends go on),
/// then completed under the lock by `PartitionLog.completeFlush(_:)`.
///
/// Holds its own references to the file handles, so it stays valid if retention or truncation
/// removes the segment meanwhile (a handle is closed when its last reference goes).
public final class PendingFlush: Sendable {
    /// Every offset below this is durable once `perform()` returns without throwing.
    public let targetOffset: Offset
    let files: [any FileHandle]
    /// The log's truncation generation when the flush began; a flush that straddles a
    /// truncation or reset proves nothing about the new suffix and is ignored on completion.
    let generation: UInt64

    init(targetOffset: Offset, files: [any FileHandle], generation: UInt64) {
        self.targetOffset = targetOffset
        self.files = files
        self.generation = generation
    }

    /// fdatasyncs every file that had unsynced writes when the flush began. Thread-safe.
    /// If it throws, do not call `completeFlush`: the state of the page cache is unknown after a
    /// failed fsync, and the safe recovery is to close and reopen the log (which re-validates it).
    public func perform() throws(StorageError) {
        for file in files { try file.sync() }
    }
}

/// The durable log of one partition: a directory of segments (see `Segment` for the file formats),
/// Kafka-style.
///
/// Guarantees: offsets strictly increase (gaps allowed); every batch is CRC-checked when read, and
/// a corrupt one is reported as `.corrupt`, never served; after a crash, reopening keeps every
/// batch below the `flushedOffset` the log had reached, and cuts any torn or corrupt tail.
///
/// Not thread-safe: the caller serialises every call with its own lock. The exception is
/// `PendingFlush.perform()`, which is meant to run outside that lock.
///
/// `logStartOffset` is the base offset of the oldest segment; it is not checkpointed separately.
/// `reset(to:)` is crash-safe: a crash leaves either the old log or the new empty one.
public final class PartitionLog {
    public let directory: String
    public var config: LogConfig
    public private(set) var logStartOffset: Offset
    /// The next offset to assign.
    public private(set) var logEndOffset: Offset
    /// Every offset below it is fsynced.
    public private(set) var flushedOffset: Offset

    let fileSystem: any FileSystem
    /// Oldest first; never empty while open. The last one is the active segment.
    var segments: [Segment]
    var isClosed = false
    /// Bumped by `truncate` and `reset`, see `PendingFlush.generation`.
    var generation: UInt64 = 0

    private init(directory: String, config: LogConfig, fileSystem: any FileSystem, segments: [Segment]) {
        self.directory = directory
        self.config = config
        self.fileSystem = fileSystem
        self.segments = segments
        logStartOffset = segments.first!.baseOffset
        logEndOffset = segments.last!.nextOffset
        flushedOffset = logEndOffset
    }

    /// Opens the log in `directory` (created if missing) and recovers it: removes stray files,
    /// validates the tail of every segment, cuts a torn or corrupt tail off the last one, and
    /// rebuilds index entries that are missing, torn or disagree with the log.
    public static func open(
        directory: String, config: LogConfig, fileSystem: any FileSystem, nowMilliseconds: Int64
    ) throws(StorageError) -> PartitionLog {
        precondition(config.segmentBytes > RecordBatch.headerBytes && config.indexIntervalBytes >= 0)
        try fileSystem.createDirectory(directory)
        try finishInterruptedReset(directory: directory, fileSystem: fileSystem)
        let markerPath = fileSystem.join(directory, Self.cleanShutdownMarker)
        let wasCleanShutdown = fileSystem.fileExists(markerPath)
        var bases: [Offset] = []
        var names = Set<String>()
        for name in try fileSystem.listDirectory(directory) { names.insert(name) }
        var removed = false
        for name in names {
            if name.hasSuffix(".log"), let base = Segment.parseStem(name.dropLast(4)) {
                bases.append(base)
                continue
            }
            // Index files of a segment whose log is gone, temporary and unknown files: a crash
            // in the middle of creating or deleting a segment leaves these behind.
            let stem: Substring? =
                name.hasSuffix(".index") ? name.dropLast(6) : name.hasSuffix(".timeindex") ? name.dropLast(10) : nil
            if let stem, Segment.parseStem(stem) != nil, names.contains(stem + ".log") { continue }
            if name == Self.cleanShutdownMarker || name == Self.resetMarker { continue }
            if fileSystem.directoryExists(fileSystem.join(directory, name)) { continue }
            try fileSystem.removeFile(fileSystem.join(directory, name))
            removed = true
        }
        if removed { try fileSystem.syncDirectory(directory) }
        bases.sort()
        var segments: [Segment] = []
        for (i, base) in bases.enumerated() {
            let segment = try Segment.open(
                directory: directory, baseOffset: base, fileSystem: fileSystem, isLast: i == bases.count - 1,
                fullScan: i == bases.count - 1 && !wasCleanShutdown, indexIntervalBytes: config.indexIntervalBytes)
            segments.append(segment)
        }
        if wasCleanShutdown {
            // From here on the files change again: the next open must not skip the full scan.
            try fileSystem.removeFile(markerPath)
            try fileSystem.syncDirectory(directory)
        }
        // An empty last segment says nothing about where the log ends except its base offset,
        // which is right: it was created at the previous segment's end (or by reset).
        if segments.isEmpty {
            segments.append(try Segment.create(directory: directory, baseOffset: .zero, fileSystem: fileSystem))
        }
        return PartitionLog(directory: directory, config: config, fileSystem: fileSystem, segments: segments)
    }

    var activeSegment: Segment { segments[segments.count - 1] }

    /// Written (durably) by `close()` after everything is synced. When present on open, the last
    /// segment is trusted up to its last index entry instead of being scanned in full.
    static let cleanShutdownMarker = "clean-shutdown"

    public var sizeBytes: Int64 { segments.reduce(0) { $0 + $1.sizeBytes } }
    public var segmentCount: Int { segments.count }

    private func checkOpen() throws(StorageError) {
        if isClosed { throw .closed }
    }

    // MARK: appending

    /// Assigns offsets (patches the batch's base offset to `logEndOffset`), writes, does not fsync.
    /// Returns the first and last offset of the batch.
    @discardableResult
    public func append(_ batch: RecordBatch, nowMilliseconds: Int64) throws(StorageError) -> (first: Offset, last: Offset) {
        try checkOpen()
        var batch = batch
        batch.setBaseOffset(logEndOffset)
        try write(batch, nowMilliseconds: nowMilliseconds)
        return (batch.baseOffset, batch.lastOffset)
    }

    /// Appends a batch at its own base offset, which must be `>= logEndOffset` (a gap is allowed,
    /// e.g. a follower starting at the leader's log start). When the log is empty, the active
    /// segment is re-created at the batch's base offset, so `logStartOffset` follows it.
    public func appendAtOwnOffset(_ batch: RecordBatch, nowMilliseconds: Int64) throws(StorageError) {
        try checkOpen()
        guard batch.baseOffset >= logEndOffset else {
            throw .invalidBatch("batch base offset \(batch.baseOffset) is below the log end offset \(logEndOffset)")
        }
        try write(batch, nowMilliseconds: nowMilliseconds)
    }

    private func write(_ batch: RecordBatch, nowMilliseconds: Int64) throws(StorageError) {
        let header = BatchHeader(batch)
        guard batch.sizeBytes <= Int(Int32.max) - RecordBatch.headerBytes, header.lastOffset >= header.baseOffset else {
            throw .invalidBatch("batch of \(batch.sizeBytes) bytes cannot be stored")
        }
        var active = activeSegment
        if active.isEmpty && header.baseOffset != active.baseOffset && segments.count == 1 {
            // Nothing to keep: start the log where the batch starts.
            try replaceAllSegments(baseOffset: header.baseOffset)
            active = activeSegment
        } else if !active.isEmpty && shouldRoll(active, header: header, batchBytes: batch.sizeBytes, nowMilliseconds: nowMilliseconds) {
            try roll(at: header.baseOffset)
            active = activeSegment
        } else if active.isEmpty && header.lastOffset - active.baseOffset > Int64(Int32.max) {
            try roll(at: header.baseOffset)
            active = activeSegment
        }
        try active.append(batch.bytes, header: header, indexIntervalBytes: config.indexIntervalBytes)
        logEndOffset = header.lastOffset + 1
    }

    private func shouldRoll(_ active: Segment, header: BatchHeader, batchBytes: Int, nowMilliseconds: Int64) -> Bool {
        let limit = min(Int64(config.segmentBytes), Int64(Int32.max))
        if active.sizeBytes + Int64(batchBytes) > limit { return true }
        if let first = active.firstBatchTimestamp, nowMilliseconds - first > config.segmentMilliseconds { return true }
        // Relative offsets in the indexes are Int32.
        if header.lastOffset - active.baseOffset > Int64(Int32.max) { return true }
        return false
    }

    /// Seals the active segment (fsynced, so only the last segment can ever have a torn tail) and
    /// starts a new one at `base`.
    private func roll(at base: Offset) throws(StorageError) {
        try activeSegment.syncAll()
        segments.append(try Segment.create(directory: directory, baseOffset: base, fileSystem: fileSystem))
    }

    /// Replaces the whole log by one empty segment at `baseOffset`, crash-safely: the intended
    /// start is made durable first (`resetMarker`), so a crash in the middle cannot leave an empty
    /// log at offset 0 (which `open` would create when no segment is left) or a stray prefix of the
    /// old log; `open` finishes the reset instead. Afterwards the log is either the old one (crash
    /// before the marker is durable) or the new empty one.
    private func replaceAllSegments(baseOffset: Offset) throws(StorageError) {
        generation += 1
        try Self.writeResetMarker(directory: directory, fileSystem: fileSystem, baseOffset: baseOffset)
        // Newest first: a crash in the middle leaves a shorter log that is still a prefix.
        for segment in segments.reversed() { try removeFiles(of: segment) }
        try fileSystem.syncDirectory(directory)
        segments = [try Segment.create(directory: directory, baseOffset: baseOffset, fileSystem: fileSystem)]
        logStartOffset = baseOffset
        logEndOffset = baseOffset
        flushedOffset = baseOffset
        try fileSystem.removeFile(fileSystem.join(directory, Self.resetMarker))
        try fileSystem.syncDirectory(directory)
    }

    /// Names the base offset of an interrupted reset: 8 bytes big-endian offset, 4 bytes CRC32C of them.
    static let resetMarker = "reset-to"

    static func writeResetMarker(directory: String, fileSystem: any FileSystem, baseOffset: Offset) throws(StorageError) {
        let path = fileSystem.join(directory, resetMarker)
        var w = ByteWriter(capacity: 12)
        w.int64(baseOffset.rawValue)
        w.uint32(CRC32C.checksum(w.bytes))
        let file = try fileSystem.openFile(path, create: true)
        try file.truncate(to: 0)
        try file.write(w.bytes, at: 0)
        // Content durable before the name: a marker that exists after a crash is whole.
        try file.sync()
        try fileSystem.syncDirectory(directory)
    }

    /// Completes a reset that a crash interrupted: everything but the marker goes, and the log
    /// restarts empty at the marker's offset. A marker that does not validate was never made
    /// durable as a whole, so no segment had been touched yet: it is just removed.
    static func finishInterruptedReset(directory: String, fileSystem: any FileSystem) throws(StorageError) {
        let path = fileSystem.join(directory, resetMarker)
        guard fileSystem.fileExists(path) else { return }
        let file = try fileSystem.openFile(path, create: false)
        let bytes = try file.read(at: 0, count: 12)
        var target: Offset?
        if bytes.count == 12, CRC32C.checksum(Array(bytes[0..<8])) == bytes.readBigEndian(UInt32.self, at: 8) {
            target = Offset(bytes.readBigEndian(Int64.self, at: 0))
        }
        if let target {
            for name in try fileSystem.listDirectory(directory) where name != resetMarker {
                let child = fileSystem.join(directory, name)
                if !fileSystem.directoryExists(child) { try fileSystem.removeFile(child) }
            }
            try fileSystem.syncDirectory(directory)
            _ = try Segment.create(directory: directory, baseOffset: target, fileSystem: fileSystem)
        }
        try fileSystem.removeFile(path)
        try fileSystem.syncDirectory(directory)
    }

    private func removeFiles(of segment: Segment) throws(StorageError) {
        // The log first: index files without their log are removed as strays on open.
        try fileSystem.removeFile(segment.logPath)
        try fileSystem.removeFile(segment.offsetIndexPath)
        try fileSystem.removeFile(segment.timeIndexPath)
    }

    // MARK: flushing

    /// Under the caller's lock: snapshots what must be synced, or nil when everything is flushed.
    public func beginFlush() -> PendingFlush? {
        if isClosed || flushedOffset >= logEndOffset { return nil }
        var files: [any FileHandle] = []
        for segment in segments {
            // Every segment holding unflushed offsets (normally only the active one: sealed ones
            // were synced when sealed). Not a dirty flag, so a failed `perform()` that is never
            // completed leaves nothing behind: the next flush syncs the same files again.
            if segment.nextOffset > flushedOffset { files.append(segment.logFile) }
            // Index files are rebuilt on recovery, so they ride along but are not required.
            if segment.indexIsDirty {
                files.append(segment.offsetIndexFile)
                files.append(segment.timeIndexFile)
                segment.indexIsDirty = false
            }
        }
        return PendingFlush(targetOffset: logEndOffset, files: files, generation: generation)
    }

    /// Under the caller's lock, after `flush.perform()` succeeded: advances `flushedOffset`.
    public func completeFlush(_ flush: PendingFlush) {
        guard flush.generation == generation else { return }
        precondition(flush.targetOffset <= logEndOffset, "flush target past the log end")
        if flush.targetOffset > flushedOffset { flushedOffset = flush.targetOffset }
    }

    /// `beginFlush`, `perform` and `completeFlush` in one call.
    public func flush() throws(StorageError) {
        try checkOpen()
        guard let pending = beginFlush() else { return }
        try pending.perform()
        completeFlush(pending)
    }

    // MARK: reading

    /// Index of the segment holding `offset`: the last one whose base offset is `<= offset`.
    private func segmentIndex(for offset: Offset) -> Int {
        var low = 0
        var high = segments.count
        while low < high {
            let mid = (low + high) / 2
            if segments[mid].baseOffset <= offset { low = mid + 1 } else { high = mid }
        }
        return max(0, low - 1)
    }

    /// Batches overlapping `[offset, upTo)`, starting with the batch that contains `offset`.
    /// Returns at least one batch (even one larger than `maxBytes`) when any ends below `upTo`,
    /// then stops before exceeding `maxBytes`; never returns a batch whose last offset is
    /// `>= upTo`. Each batch is CRC-verified; a corrupt one throws `.corrupt`.
    /// `offset` must be in `[logStartOffset, logEndOffset]`.
    public func read(from offset: Offset, maxBytes: Int, upTo: Offset) throws(StorageError) -> [RecordBatch] {
        try checkOpen()
        guard offset >= logStartOffset && offset <= logEndOffset else {
            throw .offsetOutOfRange(requested: offset.rawValue, logStart: logStartOffset.rawValue, logEnd: logEndOffset.rawValue)
        }
        let limit = min(upTo, logEndOffset)
        if offset >= limit { return [] }
        var result: [RecordBatch] = []
        var total = 0
        var index = segmentIndex(for: offset)
        while index < segments.count {
            let segment = segments[index]
            let start = segment.startPosition(for: offset)
            // Read in chunks of at most 1 MiB (the scanner refills): a large maxBytes must not
            // allocate and fault in megabytes that the answer's record limit never uses.
            let chunk = Int64(min(max(maxBytes, 64 << 10), 1 << 20))
            var scanner = BatchScanner(file: segment.logFile, position: start, end: segment.sizeBytes, chunkBytes: Int(chunk))
            while true {
                switch try scanner.next() {
                case .end:
                    break
                case .invalid(let position):
                    throw .corrupt("\(segment.logPath): no valid batch at position \(position)")
                case .batch(let position, let range):
                    let header = BatchHeader(scanner.buffer, at: range.lowerBound)
                    if header.lastOffset < offset { continue }
                    if header.lastOffset >= limit { return result }
                    if !result.isEmpty && total + range.count > maxBytes { return result }
                    do throws(DecodeError) {
                        result.append(try RecordBatch(validating: Array(scanner.buffer[range])))
                    } catch {
                        throw .corrupt("\(segment.logPath): batch at position \(position): \(error.message)")
                    }
                    total += range.count
                    continue
                }
                break
            }
            index += 1
        }
        return result
    }

    /// Kafka ListOffsets semantics: the base offset of the first batch whose `maxTimestamp` is
    /// `>= timestamp`, or nil when there is none.
    public func offset(forTimestamp timestamp: Int64) throws(StorageError) -> Offset? {
        try checkOpen()
        for segment in segments where segment.maxTimestamp >= timestamp {
            var scanner = BatchScanner(
                file: segment.logFile, position: segment.startPosition(forTimestamp: timestamp), end: segment.sizeBytes,
                chunkBytes: 64 << 10)
            while true {
                switch try scanner.next() {
                case .end: break
                case .invalid(let position):
                    throw .corrupt("\(segment.logPath): no valid batch at position \(position)")
                case .batch(let position, let range):
                    let header = BatchHeader(scanner.buffer, at: range.lowerBound)
                    if header.maxTimestamp < timestamp { continue }
                    let valid = scanner.buffer.withUnsafeBytes { raw in
                        (try? RecordBatch.validate(UnsafeRawBufferPointer(rebasing: raw[range]))) != nil
                    }
                    guard valid else { throw .corrupt("\(segment.logPath): batch at position \(position) fails validation") }
                    return max(header.baseOffset, logStartOffset)
                }
                break
            }
        }
        return nil
    }

    // MARK: retention, truncation, reset

    /// Deletes whole sealed segments, oldest first: while the oldest one's newest batch is older
    /// than `nowMilliseconds - retentionMilliseconds`, or while the log without it is still at
    /// least `retentionBytes` large. Never deletes the active segment. Returns how many it deleted.
    @discardableResult
    public func enforceRetention(nowMilliseconds: Int64) throws(StorageError) -> Int {
        try checkOpen()
        let count = retentionPlan(nowMilliseconds: nowMilliseconds)
        try deleteOldestSegments(count)
        return count
    }

    /// How many of the oldest segments `enforceRetention` would delete now, without deleting:
    /// a Raft replica must first record the new log start (and the term before it) durably.
    /// With `keepingFrom`, no segment holding an offset `>= keepingFrom` counts (Raft: only
    /// committed batches may go).
    public func retentionPlan(nowMilliseconds: Int64, keepingFrom: Offset = Offset(Int64.max)) -> Int {
        if isClosed { return 0 }
        var count = 0
        var total = sizeBytes
        while count < segments.count - 1 {
            let oldest = segments[count]
            // Every offset of `oldest` lies below the next segment's base.
            guard segments[count + 1].baseOffset <= keepingFrom else { break }
            let expired = config.retentionMilliseconds >= 0 && nowMilliseconds - oldest.maxTimestamp > config.retentionMilliseconds
            let oversized = config.retentionBytes >= 0 && total - oldest.sizeBytes >= config.retentionBytes
            guard expired || oversized else { break }
            total -= oldest.sizeBytes
            count += 1
        }
        return count
    }

    /// Base offsets of the segments, oldest first (the first is `logStartOffset`).
    public var segmentBaseOffsets: [Offset] { segments.map(\.baseOffset) }

    /// Deletes the `count` oldest segments (never the active one), durably, oldest first: a crash
    /// in the middle leaves a log that starts at one of the old segment bases.
    public func deleteOldestSegments(_ count: Int) throws(StorageError) {
        try checkOpen()
        precondition(count >= 0 && count < segments.count, "cannot delete \(count) of \(segments.count) segments")
        guard count > 0 else { return }
        for segment in segments[0..<count] { try removeFiles(of: segment) }
        try fileSystem.syncDirectory(directory)
        segments.removeFirst(count)
        logStartOffset = segments[0].baseOffset
    }

    /// Raft: removes every record at or after `offset` (a divergent, uncommitted suffix), durably.
    /// A batch that straddles `offset` is removed whole, so `logEndOffset` may end below `offset`,
    /// never above it. No-op when `offset >= logEndOffset`.
    public func truncate(from offset: Offset) throws(StorageError) {
        try checkOpen()
        if offset >= logEndOffset { return }
        if offset <= logStartOffset {
            try reset(to: logStartOffset)
            return
        }
        generation += 1
        // Drop whole segments at or after `offset`, newest first.
        var removedAny = false
        while segments.count > 1 && activeSegment.baseOffset >= offset {
            try removeFiles(of: activeSegment)
            segments.removeLast()
            removedAny = true
        }
        if removedAny { try fileSystem.syncDirectory(directory) }
        let segment = activeSegment
        // Find the first batch whose last offset is >= offset: it and everything after go.
        var scanner = BatchScanner(
            file: segment.logFile, position: segment.startPosition(for: offset), end: segment.sizeBytes, chunkBytes: 1 << 20)
        var cut = segment.sizeBytes
        var newNext = segment.nextOffset
        scan: while true {
            switch try scanner.next() {
            case .end, .invalid: break scan
            case .batch(let position, let range):
                let header = BatchHeader(scanner.buffer, at: range.lowerBound)
                if header.lastOffset >= offset {
                    cut = position
                    // Everything kept ends below both; when `offset` falls in a gap, end the log
                    // at `offset` so the caller can append there next.
                    newNext = min(offset, header.baseOffset)
                    break scan
                }
            }
        }
        if cut < segment.sizeBytes {
            try segment.truncate(toPosition: cut, nextOffset: newNext)
        } else {
            try segment.syncAll()
        }
        logEndOffset = segment.nextOffset
        // Everything kept is durable: older segments were synced when sealed, this one just now.
        flushedOffset = logEndOffset
    }

    /// Raft: drops everything and restarts the log, empty, at `offset` (a follower whose log is
    /// behind the leader's log start).
    public func reset(to offset: Offset) throws(StorageError) {
        try checkOpen()
        try replaceAllSegments(baseOffset: offset)
    }

    // MARK: lifecycle

    /// Writes pending index entries and fsyncs everything; the log cannot be used afterwards.
    public func close() throws(StorageError) {
        if isClosed { return }
        for segment in segments where segment.logIsDirty || segment.indexIsDirty || segment.indexEntriesWritten < segment.offsetIndex.count {
            try segment.syncAll()
        }
        let marker = try fileSystem.openFile(fileSystem.join(directory, Self.cleanShutdownMarker), create: true)
        try marker.sync()
        try fileSystem.syncDirectory(directory)
        flushedOffset = logEndOffset
        isClosed = true
        segments = []
    }

    /// Removes the log's directory and everything in it; the log cannot be used afterwards.
    public func delete() throws(StorageError) {
        isClosed = true
        segments = []
        try fileSystem.removeDirectory(directory)
    }
}

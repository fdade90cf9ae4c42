// TEMPORARY stand-in until the `replica` branch lands (deleted at merge). Not crash-safe.
import BrokerModel
import Consensus
import LogStorage

final class ReplicaStorage: RaftStorage {
    let log: PartitionLog
    private(set) var hardState = HardState()
    private(set) var snapshotPoint = LogPosition.beforeStart
    private(set) var snapshotMembership: Membership
    private(set) var durableOffset = Offset(-1)

    private init(log: PartitionLog, membership: Membership) {
        self.log = log
        self.snapshotMembership = membership
        durableOffset = log.flushedOffset - 1
    }

    static func open(directory: String, fileSystem: any FileSystem, logConfig: LogConfig,
                     initialMembership: Membership, nowMilliseconds: Int64) throws(StorageError) -> ReplicaStorage {
        let log = try PartitionLog.open(directory: directory, config: logConfig, fileSystem: fileSystem, nowMilliseconds: nowMilliseconds)
        return ReplicaStorage(log: log, membership: initialMembership)
    }

    var lastOffset: Offset { log.logEndOffset - 1 }

    func term(endingAt offset: Offset) -> Term? {
        if offset == snapshotPoint.offset { return snapshotPoint.term }
        guard let b = batch(containing: offset), b.lastOffset == offset else { return nil }
        return b.term
    }

    func batch(containing offset: Offset) -> RecordBatch? {
        guard offset >= log.logStartOffset, offset < log.logEndOffset else { return nil }
        return (try? log.read(from: offset, maxBytes: 1, upTo: log.logEndOffset))?.first
    }

    func batches(from offset: Offset, bytesMax: Int) -> [RecordBatch] {
        guard offset >= log.logStartOffset, offset < log.logEndOffset else { return [] }
        guard let all = try? log.read(from: offset, maxBytes: bytesMax, upTo: log.logEndOffset), let first = all.first, first.baseOffset == offset else { return [] }
        return all
    }

    func membershipBatches() -> [RecordBatch] {
        var out: [RecordBatch] = []
        var o = log.logStartOffset
        while o < log.logEndOffset {
            guard let chunk = try? log.read(from: o, maxBytes: 1 << 20, upTo: log.logEndOffset), let last = chunk.last else { break }
            out += chunk.filter { $0.isControl && ControlBatch.isMembership($0) }
            o = last.nextOffset
        }
        return out
    }

    func snapshot() -> Snapshot { Snapshot(point: snapshotPoint, membership: snapshotMembership) }

    func write(_ ready: Ready, nowMilliseconds: Int64) throws(StorageError) {
        if let s = ready.snapshot {
            try log.reset(to: s.point.offset + 1)
            snapshotPoint = s.point
            snapshotMembership = s.membership
        }
        if let first = ready.entries.first, first.baseOffset <= lastOffset {
            try log.truncate(from: first.baseOffset)
        }
        for e in ready.entries { try log.appendAtOwnOffset(e, nowMilliseconds: nowMilliseconds) }
        if let h = ready.hardState { hardState = h }
    }

    func beginSync() -> PendingSync? { log.beginFlush().map { PendingSync(flush: $0) } }
    func completeSync(_ sync: PendingSync) {
        log.completeFlush(sync.flush)
        durableOffset = log.flushedOffset - 1
    }
    func enforceRetention(nowMilliseconds: Int64, commit: Offset) throws(StorageError) -> Int { 0 }
    func close() throws(StorageError) { try log.close() }
    func delete() throws(StorageError) { try log.delete() }
}

struct PendingSync: Sendable {
    let flush: PendingFlush
    func perform() throws(StorageError) { try flush.perform() }
}

import BrokerModel
import BrokerTesting
import LogStorage
import Synchronization
import Testing
@testable import BrokerRuntime
@testable import Consensus

/// A `FileSystem` over a `SimulatedFileSystem` that "loses power" after a budget of mutating
/// operations: from then on every call throws, as if the process died there. The test then
/// crashes the simulated disk and reopens on it, which models a crash at any point *inside* an
/// operation (between two of its system calls).
final class CrashingFileSystem: FileSystem {
    let disk: SimulatedFileSystem
    /// Mutating operations left before the crash; nil = unlimited.
    private let budget = Mutex<Int?>(nil)

    init(disk: SimulatedFileSystem) { self.disk = disk }

    func crash(afterOperations count: Int?) { budget.withLock { $0 = count } }
    var hasCrashed: Bool { budget.withLock { $0 == 0 } }

    func spend(_ call: String) throws(StorageError) {
        try budget.withLock { (b) throws(StorageError) in
            guard let left = b else { return }
            if left == 0 { throw .io("\(call): injected power cut") }
            b = left - 1
        }
    }

    func createDirectory(_ path: String) throws(StorageError) {
        try spend("mkdir")
        try disk.createDirectory(path)
    }
    func listDirectory(_ path: String) throws(StorageError) -> [String] {
        if hasCrashed { throw .io("opendir: injected power cut") }
        return try disk.listDirectory(path)
    }
    func removeDirectory(_ path: String) throws(StorageError) {
        try spend("rm -r")
        try disk.removeDirectory(path)
    }
    func directoryExists(_ path: String) -> Bool { disk.directoryExists(path) }
    func openFile(_ path: String, create: Bool) throws(StorageError) -> any FileHandle {
        try spend("open")
        return CrashingFileHandle(fileSystem: self, inner: try disk.openFile(path, create: create))
    }
    func fileExists(_ path: String) -> Bool { disk.fileExists(path) }
    func rename(from: String, to: String) throws(StorageError) {
        try spend("rename")
        try disk.rename(from: from, to: to)
    }
    func removeFile(_ path: String) throws(StorageError) {
        try spend("unlink")
        try disk.removeFile(path)
    }
    func syncDirectory(_ path: String) throws(StorageError) {
        try spend("fsync dir")
        try disk.syncDirectory(path)
    }
}

final class CrashingFileHandle: FileHandle {
    let fileSystem: CrashingFileSystem
    let inner: any FileHandle
    init(fileSystem: CrashingFileSystem, inner: any FileHandle) {
        self.fileSystem = fileSystem
        self.inner = inner
    }
    func read(at offset: Int64, count: Int) throws(StorageError) -> [UInt8] {
        if fileSystem.hasCrashed { throw .io("pread: injected power cut") }
        return try inner.read(at: offset, count: count)
    }
    func write(_ bytes: [UInt8], at offset: Int64) throws(StorageError) {
        try fileSystem.spend("pwrite")
        try inner.write(bytes, at: offset)
    }
    func sync() throws(StorageError) {
        try fileSystem.spend("fdatasync")
        try inner.sync()
    }
    func truncate(to size: Int64) throws(StorageError) {
        try fileSystem.spend("ftruncate")
        try inner.truncate(to: size)
    }
    func size() throws(StorageError) -> Int64 {
        if fileSystem.hasCrashed { throw .io("fstat: injected power cut") }
        return try inner.size()
    }
}

/// A data batch of `count` records at `base`, written in `term`; `tag` makes its bytes unique.
func replicaBatch(base: Offset, count: Int, term: Term, tag: Int, valueBytes: Int = 40) -> RecordBatch {
    let records = (0..<count).map { i in
        Record(key: Array("k\(i)".utf8), value: Array("\(tag)-\(i)-".utf8) + [UInt8](repeating: 0x62, count: valueBytes), timestamp: 1_000)
    }
    var b = RecordBatch.encode(records: records, baseOffset: base, partitionLeaderEpoch: Int32(term.rawValue))
    b.setBaseOffset(base)
    return b
}

func membershipBatch(base: Offset, term: Term, _ m: Membership) -> RecordBatch {
    var b = ControlBatch.membership(m)
    b.setBaseOffset(base)
    b.setPartitionLeaderEpoch(Int32(term.rawValue))
    return b
}

func makeReady(entries: [RecordBatch] = [], hardState: HardState? = nil, snapshot: Snapshot? = nil) -> Ready {
    Ready(
        softState: nil, hardState: hardState, snapshot: snapshot, entries: entries, messages: [], committedEntries: [],
        readStates: [], events: [], commit: nil)
}

/// Small segments so retention, rolling and reads across segments all happen in short tests.
func smallLogConfig() -> LogConfig {
    var c = LogConfig()
    c.segmentBytes = 1_500
    c.indexIntervalBytes = 256
    c.retentionMilliseconds = -1
    c.retentionBytes = 3_000
    return c
}

/// Compares every `RaftStorage` query of `actual` with `expected`. `checkCommit: false` for a
/// reopened replica whose commit may lawfully lag.
func expectSameQueries(
    _ actual: ReplicaStorage, _ expected: MemoryRaftStorage, checkCommit: Bool = true, _ context: String,
    sourceLocation: SourceLocation = #_sourceLocation
) {
    var problems: [String] = []
    if checkCommit {
        if actual.hardState != expected.hardState { problems.append("hardState \(actual.hardState) != \(expected.hardState)") }
    } else if actual.hardState.term != expected.hardState.term || actual.hardState.vote != expected.hardState.vote {
        problems.append("term/vote \(actual.hardState) != \(expected.hardState)")
    }
    if actual.snapshotPoint != expected.snapshotPoint { problems.append("snapshotPoint \(actual.snapshotPoint) != \(expected.snapshotPoint)") }
    if actual.snapshotMembership != expected.snapshotMembership {
        problems.append("snapshotMembership \(actual.snapshotMembership) != \(expected.snapshotMembership)")
    }
    if actual.lastOffset != expected.lastOffset { problems.append("lastOffset \(actual.lastOffset) != \(expected.lastOffset)") }
    if actual.snapshot() != expected.snapshot() { problems.append("snapshot \(actual.snapshot()) != \(expected.snapshot())") }
    // Every offset where an answer can change: around the log start, around each batch's ends
    // and inside it, and past the log end.
    var offsets: Set<Offset> = [expected.snapshotPoint.offset - 1, expected.snapshotPoint.offset, expected.snapshotPoint.offset + 1]
    for last in [actual.lastOffset, expected.lastOffset] { offsets.formUnion([last, last + 1, last + 2]) }
    for b in expected.stored { offsets.formUnion([b.baseOffset, b.lastOffset, b.baseOffset + (b.lastOffset - b.baseOffset) / 2]) }
    for o in offsets.sorted() {
        if actual.term(endingAt: o) != expected.term(endingAt: o) {
            problems.append("term(endingAt: \(o)) \(String(describing: actual.term(endingAt: o))) != \(String(describing: expected.term(endingAt: o)))")
        }
        if actual.batch(containing: o) != expected.batch(containing: o) { problems.append("batch(containing: \(o)) differs") }
    }
    for b in expected.stored {
        for bytesMax in [1, 300, 1 << 20] {
            let a = actual.batches(from: b.baseOffset, bytesMax: bytesMax)
            if a != expected.batches(from: b.baseOffset, bytesMax: bytesMax) {
                problems.append("batches(from: \(b.baseOffset), bytesMax: \(bytesMax)) differ")
            }
        }
    }
    if actual.membershipBatches() != expected.membershipBatches() {
        problems.append("membershipBatches \(actual.membershipBatches().map(\.lastOffset)) != \(expected.membershipBatches().map(\.lastOffset))")
    }
    if let failure = actual.readFailure { problems.append("read failure: \(failure)") }
    #expect(problems.isEmpty, "\(context): \(problems.prefix(5).joined(separator: "; "))", sourceLocation: sourceLocation)
}

/// Generates random Readys that respect what a Raft node may hand its caller, against a model.
struct ReadyGenerator {
    var random: SplitMix64
    var tag = 0
    let nodes: [NodeID] = [NodeID(1), NodeID(2), NodeID(3), NodeID(4)]

    init(seed: UInt64) { random = SplitMix64(seed: seed) }

    mutating func int(_ range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &random) }
    mutating func chance(_ percent: Int) -> Bool { int(0...99) < percent }

    mutating func batches(from base: Offset, term: Term, count: Int) -> [RecordBatch] {
        var result: [RecordBatch] = []
        var next = base
        for _ in 0..<count {
            tag += 1
            let b: RecordBatch
            if chance(8) {
                var voters = Set(nodes.filter { _ in chance(60) })
                if voters.isEmpty { voters = [nodes[0]] }
                b = membershipBatch(base: next, term: term, Membership(voters: voters))
            } else {
                b = replicaBatch(base: next, count: int(1...4), term: term, tag: tag, valueBytes: int(0...300))
            }
            result.append(b)
            next = b.nextOffset
        }
        return result
    }

    /// The next Ready for a node whose durable image is `m` (not modified here).
    mutating func next(_ m: MemoryRaftStorage) -> Ready {
        var hard = m.hardState
        let roll = int(0...99)
        if roll < 50 {
            // Appends in the current term, often with the commit moving.
            if hard.term == .zero { hard.term = Term(1) }
            let entries = batches(from: m.lastOffset + 1, term: max(hard.term, m.stored.last?.term ?? .zero), count: int(1...4))
            if chance(50) {
                let last = entries.last!.lastOffset
                hard.commit = max(hard.commit, Offset(Int64(int(Int(hard.commit.rawValue)...Int(last.rawValue)))))
            }
            return makeReady(entries: entries, hardState: hard == m.hardState ? nil : hard)
        } else if roll < 62 {
            // A new term with a vote, no entries.
            hard.term = hard.term.next
            hard.vote = chance(70) ? nodes[int(0...3)] : nil
            return makeReady(hardState: hard)
        } else if roll < 77 {
            // A divergent uncommitted suffix replaced by a newer term's batches.
            let candidates = m.stored.filter { $0.baseOffset > hard.commit }
            guard !candidates.isEmpty else { return makeReady() }
            let from = candidates[int(0...(candidates.count - 1))].baseOffset
            hard.term = hard.term.next
            hard.vote = nil
            return makeReady(entries: batches(from: from, term: hard.term, count: int(1...3)), hardState: hard)
        } else if roll < 87 {
            // Commit moves alone (lazily persisted).
            guard hard.commit < m.lastOffset else { return makeReady() }
            let ends = m.stored.map(\.lastOffset).filter { $0 > hard.commit }
            hard.commit = ends[int(0...(ends.count - 1))]
            return makeReady(hardState: hard)
        } else if roll < 92 {
            // A snapshot from a leader far ahead, sometimes with entries after it.
            let point = LogPosition(offset: max(m.lastOffset, hard.commit) + Int64(int(1...50)), term: hard.term.next)
            hard.term = point.term
            hard.vote = nil
            hard.commit = point.offset
            let membership = Membership(voters: Set(nodes.prefix(int(1...4))))
            let entries = chance(50) ? batches(from: point.offset + 1, term: point.term, count: int(1...3)) : []
            return makeReady(entries: entries, hardState: hard, snapshot: Snapshot(point: point, membership: membership))
        } else {
            // Big appends so segments roll and retention has work.
            if hard.term == .zero { hard.term = Term(1) }
            let entries = batches(from: m.lastOffset + 1, term: max(hard.term, m.stored.last?.term ?? .zero), count: int(4...10))
            hard.commit = entries.last!.lastOffset - Int64(int(0...3))
            hard.commit = max(hard.commit, m.hardState.commit)
            return makeReady(entries: entries, hardState: hard)
        }
    }
}

/// A model holding exactly `storage`'s stored batches and state (after a reopen).
func model(of storage: ReplicaStorage) -> MemoryRaftStorage {
    let m = MemoryRaftStorage(membership: storage.snapshotMembership, hardState: storage.hardState)
    m.install(storage.snapshot())
    var batches: [RecordBatch] = []
    var next = storage.snapshotPoint.offset + 1
    while next <= storage.lastOffset {
        let chunk = storage.batches(from: next, bytesMax: 1 << 20)
        guard let last = chunk.last else { break }
        batches += chunk
        next = last.nextOffset
    }
    m.append(batches)
    return m
}

import BrokerModel
import BrokerTesting
import Foundation
import LogStorage
import Synchronization
import Testing
@testable import BrokerRuntime
@testable import Consensus

@Suite struct ReplicaStorageTests {
    let directory = "/data/t-0"
    let initial = Membership(voters: [NodeID(1), NodeID(2), NodeID(3)])

    func open(_ fs: any FileSystem, tinyCache: Bool = false, now: Int64 = 1_000) throws -> ReplicaStorage {
        let s = try ReplicaStorage.open(
            directory: directory, fileSystem: fs, logConfig: smallLogConfig(), initialMembership: initial, nowMilliseconds: now)
        if tinyCache { s.resetCache(batchBytesMax: 200, batchCountMax: 2, boundaryCountMax: 3) }
        return s
    }

    func sync(_ s: ReplicaStorage) throws {
        guard let pending = s.beginSync() else { return }
        try pending.perform()
        s.completeSync(pending)
    }

    // MARK: (a) contract: the same Readys to ReplicaStorage and MemoryRaftStorage

    /// Seeds 0–7 on the simulated disk, 8 on the real one (a seam gets its contract test on both).
    @Test(arguments: 0..<9)
    func answersLikeMemoryStorage(seed: Int) throws {
        let fs: any FileSystem
        let directory: String
        if seed >= 8 {
            fs = PosixFileSystem()
            directory = NSTemporaryDirectory() + "petrel-replica-" + UUID().uuidString
        } else {
            fs = SimulatedFileSystem()
            directory = self.directory
        }
        defer { try? fs.removeDirectory(directory) }
        func open(_ fs: any FileSystem, tinyCache: Bool, now: Int64 = 1_000) throws -> ReplicaStorage {
            let s = try ReplicaStorage.open(
                directory: directory, fileSystem: fs, logConfig: smallLogConfig(), initialMembership: initial, nowMilliseconds: now)
            if tinyCache { s.resetCache(batchBytesMax: 200, batchCountMax: 2, boundaryCountMax: 3) }
            return s
        }
        let tiny = seed % 2 == 1
        var storage = try open(fs, tinyCache: tiny)
        let memory = MemoryRaftStorage(membership: initial)
        var generator = ReadyGenerator(seed: UInt64(seed) &* 0x9E37_79B9_7F4A_7C15 &+ 3)
        var removed = 0
        var installs = 0
        var truncations = 0
        var now: Int64 = 1_000
        expectSameQueries(storage, memory, "seed \(seed) fresh")
        // Fewer steps on the real disk: every state write there costs real fsyncs.
        for step in 0..<(seed >= 8 ? 100 : 250) {
            now += 10
            let ready = generator.next(memory)
            if ready.snapshot != nil { installs += 1 }
            if let first = ready.entries.first, first.baseOffset <= memory.lastOffset { truncations += 1 }
            try storage.write(ready, nowMilliseconds: now)
            memory.apply(ready)
            if generator.chance(70) { try sync(storage) }
            if generator.chance(15) {
                removed += try storage.enforceRetention(nowMilliseconds: now, commit: memory.hardState.commit)
                if storage.snapshotPoint.offset > memory.snapshotPoint.offset { memory.compact(through: storage.snapshotPoint.offset) }
            }
            expectSameQueries(storage, memory, "seed \(seed) step \(step)")
            #expect(storage.hardState.commit <= storage.lastOffset)
            if generator.chance(6) {
                try storage.close()
                storage = try open(fs, tinyCache: tiny, now: now)
                expectSameQueries(storage, memory, "seed \(seed) step \(step) reopened")
            }
        }
        try sync(storage)
        #expect(storage.durableOffset == storage.lastOffset)
        #expect(removed > 0 && installs > 0 && truncations > 0, "seed \(seed): removed \(removed) installs \(installs) truncations \(truncations)")
        try storage.delete()
        #expect(!fs.directoryExists(directory))
    }

    @Test func newReplicaStartsEmptyWithItsMembership() throws {
        let fs = SimulatedFileSystem()
        let s = try open(fs)
        #expect(s.hardState == HardState())
        #expect(s.snapshotPoint == .beforeStart)
        #expect(s.snapshotMembership == initial)
        #expect(s.lastOffset == Offset(-1))
        #expect(s.term(endingAt: Offset(-1)) == .zero)
        #expect(s.beginSync() == nil)
        // The membership given to open is for a new replica only.
        try s.close()
        let again = try ReplicaStorage.open(
            directory: directory, fileSystem: fs, logConfig: smallLogConfig(), initialMembership: Membership(voters: [NodeID(9)]),
            nowMilliseconds: 1)
        #expect(again.snapshotMembership == initial)
    }

    @Test func termAndVoteAreDurableAfterSyncButCommitIsLazy() throws {
        let disk = SimulatedFileSystem()
        let s = try open(disk)
        let b = replicaBatch(base: .zero, count: 2, term: Term(1), tag: 1)
        try s.write(makeReady(entries: [b], hardState: HardState(term: Term(1), vote: NodeID(2))), nowMilliseconds: 1_000)
        try sync(s)
        // Commit only, within the lazy interval: only the log would be synced, and it is already.
        try s.write(makeReady(hardState: HardState(term: Term(1), vote: NodeID(2), commit: b.lastOffset)), nowMilliseconds: 1_001)
        #expect(s.beginSync() == nil)
        disk.crash(seed: 1, mode: .drop)
        let reopened = try open(disk)
        #expect(reopened.hardState == HardState(term: Term(1), vote: NodeID(2)))
        #expect(reopened.lastOffset == b.lastOffset)
        // After the interval the commit rides along with the next sync.
        try reopened.write(makeReady(hardState: HardState(term: Term(1), vote: NodeID(2), commit: b.lastOffset)), nowMilliseconds: 5_000)
        try sync(reopened)
        disk.crash(seed: 2, mode: .drop)
        #expect(try open(disk).hardState.commit == b.lastOffset)
    }

    @Test func recentBatchesAreServedFromMemory() throws {
        let s = try open(SimulatedFileSystem())
        var batches: [RecordBatch] = []
        var next = Offset.zero
        for i in 0..<200 {
            let b = replicaBatch(base: next, count: 3, term: Term(1 + Int64(i / 50)), tag: i, valueBytes: 100)
            batches.append(b)
            next = b.nextOffset
        }
        try s.write(makeReady(entries: batches, hardState: HardState(term: Term(4))), nowMilliseconds: 1_000)
        try sync(s)
        // What the leader asks on every append to an up-to-date follower.
        for b in batches.suffix(100) {
            #expect(s.term(endingAt: b.lastOffset) == b.term)
            #expect(s.term(endingAt: b.baseOffset) == nil)
            #expect(s.batch(containing: b.baseOffset + 1) == b)
            #expect(s.batches(from: b.baseOffset, bytesMax: 1 << 20).first == b)
        }
        #expect(s.logReads == 0)
        // Beyond the windows, the log answers the same.
        s.resetCache(batchBytesMax: 1, batchCountMax: 1, boundaryCountMax: 1)
        #expect(s.term(endingAt: batches[3].lastOffset) == batches[3].term)
        #expect(s.batches(from: batches[3].baseOffset, bytesMax: 1) == [batches[3]])
        #expect(s.logReads == 2)
    }

    @Test func newestStateWinsWhenSyncsCompleteOutOfOrder() throws {
        // Group commit runs `perform()` outside the caller's lock: two may overlap or finish in
        // either order; an older state must never overwrite a newer one.
        let disk = SimulatedFileSystem()
        let s = try open(disk)
        let b = replicaBatch(base: .zero, count: 1, term: Term(1), tag: 1)
        try s.write(makeReady(entries: [b], hardState: HardState(term: Term(1), vote: NodeID(1))), nowMilliseconds: 1_000)
        let older = try #require(s.beginSync())
        try s.write(makeReady(hardState: HardState(term: Term(2), vote: NodeID(3))), nowMilliseconds: 1_001)
        let newer = try #require(s.beginSync())
        try newer.perform()
        try older.perform()
        s.completeSync(newer)
        s.completeSync(older)
        #expect(s.durableOffset == b.lastOffset)
        disk.crash(seed: 4, mode: .drop)
        #expect(try open(disk).hardState == HardState(term: Term(2), vote: NodeID(3)))
    }

    /// The runtime's shape: write and `beginSync` under a lock, `perform()` on other threads (several
    /// at once, finishing in any order), `completeSync` under the lock again.
    @Test func groupCommitOutsideTheLock() throws {
        final class Shared: Sendable {
            let storage: Mutex<ReplicaStorage>
            init(_ s: sending ReplicaStorage) { storage = Mutex(s) }
        }
        let disk = SimulatedFileSystem()
        let shared = Shared(try open(disk))
        let group = DispatchGroup()
        let failures = Mutex(0)
        var next = Offset.zero
        var hard = HardState(term: Term(1))
        for i in 0..<300 {
            if i % 7 == 0 { hard = HardState(term: hard.term.next, vote: NodeID(Int32(i % 3 + 1)), commit: hard.commit) }
            let b = replicaBatch(base: next, count: 2, term: hard.term, tag: i)
            next = b.nextOffset
            hard.commit = b.baseOffset
            let ready = makeReady(entries: [b], hardState: hard)
            let pending = try shared.storage.withLock { (s) throws(StorageError) -> PendingSync? in
                try s.write(ready, nowMilliseconds: Int64(i))
                return s.beginSync()
            }
            guard let pending else { continue }
            group.enter()
            DispatchQueue.global().async {
                do {
                    try pending.perform()
                    shared.storage.withLock { $0.completeSync(pending) }
                } catch {
                    failures.withLock { $0 += 1 }
                }
                group.leave()
            }
        }
        group.wait()
        #expect(failures.withLock { $0 } == 0)
        let last = next - 1
        let finalHard = hard
        shared.storage.withLock { s in
            #expect(s.durableOffset == last)
        }
        disk.crash(seed: 9, mode: .tear(garbage: true))
        let reopened = try open(disk)
        #expect(reopened.lastOffset == last)
        #expect(reopened.hardState.term == finalHard.term && reopened.hardState.vote == finalHard.vote)
    }

    @Test func membershipIndexSurvivesTruncationAndCrash() throws {
        let disk = SimulatedFileSystem()
        let s = try open(disk)
        let m1 = Membership(voters: [NodeID(1), NodeID(2)])
        let m2 = Membership(voters: [NodeID(1)])
        let a = replicaBatch(base: .zero, count: 1, term: Term(1), tag: 1)
        let c1 = membershipBatch(base: a.nextOffset, term: Term(1), m1)
        let d = replicaBatch(base: c1.nextOffset, count: 1, term: Term(1), tag: 2)
        try s.write(makeReady(entries: [a, c1, d], hardState: HardState(term: Term(1))), nowMilliseconds: 1_000)
        try sync(s)
        #expect(s.membershipBatches() == [c1])
        // A new term replaces the membership batch by a data batch, and appends another membership.
        let e = replicaBatch(base: c1.baseOffset, count: 1, term: Term(2), tag: 3)
        let c2 = membershipBatch(base: e.nextOffset, term: Term(2), m2)
        try s.write(makeReady(entries: [e, c2], hardState: HardState(term: Term(2))), nowMilliseconds: 1_001)
        try sync(s)
        #expect(s.membershipBatches() == [c2])
        disk.crash(seed: 3, mode: .tear(garbage: true))
        let reopened = try open(disk)
        #expect(reopened.membershipBatches() == [c2])
        let node = RaftNode(configuration: RaftConfiguration(id: NodeID(1), randomSeed: 1), storage: reopened)
        #expect(node.membership == m2)
    }

    @Test func snapshotInstallIsCrashSafeAtEveryStep() throws {
        // Crash after each possible number of file operations of the install; the log must come
        // back either as before or empty after the snapshot point, never empty at 0.
        var outcomes = Set<String>()
        for budget in 0..<60 {
            let disk = SimulatedFileSystem()
            let fs = CrashingFileSystem(disk: disk)
            let s = try open(fs)
            var batches: [RecordBatch] = []
            var next = Offset.zero
            for i in 0..<12 {
                let b = replicaBatch(base: next, count: 3, term: Term(1), tag: i, valueBytes: 200)
                batches.append(b)
                next = b.nextOffset
            }
            try s.write(makeReady(entries: batches, hardState: HardState(term: Term(1), commit: Offset(5))), nowMilliseconds: 1_000)
            try sync(s)
            let point = LogPosition(offset: Offset(100), term: Term(3))
            fs.crash(afterOperations: budget)
            var finished = true
            do {
                try s.write(
                    makeReady(hardState: HardState(term: Term(3), commit: point.offset), snapshot: Snapshot(point: point, membership: initial)),
                    nowMilliseconds: 2_000)
                try sync(s)
            } catch {
                finished = false
            }
            fs.crash(afterOperations: nil)
            disk.crash(seed: UInt64(budget), mode: .tear(garbage: true))
            let reopened = try open(fs)
            if reopened.snapshotPoint == point {
                #expect(reopened.lastOffset == point.offset, "budget \(budget)")
                #expect(reopened.log.logStartOffset == point.offset + 1, "budget \(budget)")
                outcomes.insert("new")
            } else {
                #expect(!finished, "budget \(budget): a finished install was lost")
                #expect(reopened.snapshotPoint == .beforeStart, "budget \(budget)")
                #expect(reopened.batches(from: .zero, bytesMax: 1 << 20) == batches, "budget \(budget)")
                outcomes.insert("old")
            }
        }
        #expect(outcomes == ["old", "new"])
    }

    @Test func aCrashDuringDeleteLeavesTheOldReplicaOrAFreshOne() throws {
        var outcomes = Set<String>()
        for budget in 0..<12 {
            let disk = SimulatedFileSystem()
            let fs = CrashingFileSystem(disk: disk)
            let s = try open(fs)
            let b = replicaBatch(base: .zero, count: 2, term: Term(4), tag: 1)
            try s.write(makeReady(entries: [b], hardState: HardState(term: Term(4), vote: NodeID(2))), nowMilliseconds: 1_000)
            try sync(s)
            fs.crash(afterOperations: budget)
            let finished = (try? s.delete()) != nil
            fs.crash(afterOperations: nil)
            disk.crash(seed: UInt64(budget), mode: .drop)
            let reopened = try open(fs)
            if reopened.hardState.term == Term(4) {
                #expect(!finished && reopened.lastOffset == b.lastOffset, "budget \(budget)")
                outcomes.insert("old")
            } else {
                #expect(reopened.hardState == HardState() && reopened.lastOffset == Offset(-1), "budget \(budget)")
                outcomes.insert("fresh")
            }
        }
        #expect(outcomes == ["old", "fresh"])
    }

    @Test func partitionLogResetIsCrashSafe() throws {
        for budget in 0..<30 {
            let disk = SimulatedFileSystem()
            let fs = CrashingFileSystem(disk: disk)
            let log = try PartitionLog.open(directory: "/l", config: smallLogConfig(), fileSystem: fs, nowMilliseconds: 0)
            for i in 0..<10 { try log.append(replicaBatch(base: .zero, count: 2, term: Term(1), tag: i, valueBytes: 300), nowMilliseconds: 0) }
            try log.flush()
            #expect(log.segmentCount > 1)
            fs.crash(afterOperations: budget)
            let finished = (try? log.reset(to: Offset(500))) != nil
            fs.crash(afterOperations: nil)
            disk.crash(seed: UInt64(budget), mode: .drop)
            let reopened = try PartitionLog.open(directory: "/l", config: smallLogConfig(), fileSystem: disk, nowMilliseconds: 0)
            if reopened.logStartOffset == Offset(500) {
                #expect(reopened.logEndOffset == Offset(500), "budget \(budget)")
            } else {
                #expect(!finished, "budget \(budget)")
                #expect(reopened.logStartOffset == .zero && reopened.logEndOffset == Offset(20), "budget \(budget): \(reopened.logStartOffset)..<\(reopened.logEndOffset)")
            }
        }
    }

    // MARK: (b) crashes at random points

    @Test(arguments: 0..<48)
    func survivesCrashesAtRandomPoints(seed: Int) throws {
        let disk = SimulatedFileSystem()
        let fs = CrashingFileSystem(disk: disk)
        var generator = ReadyGenerator(seed: UInt64(seed) &* 0xD1B5_4A32_D192_ED03 &+ 11)
        var storage = try open(fs, tinyCache: seed % 3 == 0)
        var memory = MemoryRaftStorage(membership: initial)
        var synced = memory.copy()
        var candidates = [memory.copy()]
        var trace: [String] = []
        /// Candidate index → the offset a crash during the truncating Ready after it may cut it back to.
        var truncationFloors: [Int: Offset] = [:]
        var crashes = 0
        var injected = 0
        var now: Int64 = 1_000
        for step in 0..<220 {
            now += 50
            let inject = generator.chance(12)
            if inject { fs.crash(afterOperations: generator.int(0...14)) }
            var failed = false
            do {
                if generator.chance(10) {
                    let limit = min(memory.hardState.commit, memory.lastOffset)
                    let count = storage.log.retentionPlan(nowMilliseconds: now, keepingFrom: limit + 1)
                    let after = memory.copy()
                    if count > 0 { after.compact(through: storage.log.segmentBaseOffsets[count] - 1) }
                    candidates.append(after)
                    trace.append("retention \(count)")
                    _ = try storage.enforceRetention(nowMilliseconds: now, commit: memory.hardState.commit)
                    memory = after
                    #expect(storage.snapshotPoint == memory.snapshotPoint, "seed \(seed) step \(step)")
                } else {
                    let ready = generator.next(memory)
                    let after = memory.copy()
                    after.apply(ready)
                    if let first = ready.entries.first, first.baseOffset <= memory.lastOffset {
                        // Truncation removes newer segments before cutting the active one: a
                        // crash in between leaves the old log cut anywhere at or after the cut.
                        truncationFloors[candidates.count - 1] = first.baseOffset - 1
                    }
                    candidates.append(after)
                    trace.append("ready snap=\(ready.snapshot.map(\.description) ?? "-") entries=\(ready.entries.map { "\($0.baseOffset)-\($0.lastOffset)" }) hard=\(ready.hardState.map(\.description) ?? "-")")
                    try storage.write(ready, nowMilliseconds: now)
                    memory = after
                    if generator.chance(60) {
                        try sync(storage)
                        synced = memory.copy()
                        candidates = [memory.copy()]
                        truncationFloors = [:]
                        trace = []
                    }
                }
            } catch {
                failed = true
            }
            fs.crash(afterOperations: nil)
            guard failed || generator.chance(5) else { continue }
            if failed { injected += 1 }
            crashes += 1
            let modes: [SimulatedFileSystem.CrashMode] = [.drop, .tear(garbage: false), .tear(garbage: true)]
            disk.crash(seed: UInt64(seed * 1_000 + step), mode: modes[generator.int(0...2)])
            storage = try open(fs, tinyCache: seed % 3 == 0, now: now)
            check(storage, synced: synced, candidates: candidates, truncationFloors: truncationFloors, "seed \(seed) step \(step) failed=\(failed) after \(trace)")
            memory = model(of: storage)
            synced = memory.copy()
            candidates = [memory.copy()]
            truncationFloors = [:]
            trace = []
        }
        #expect(crashes > 0 && injected > 0, "seed \(seed): \(crashes) crashes, \(injected) injected")
    }

    /// What a reopened replica may hold: the log (and start) of one of the states written since
    /// the last completed sync, cut anywhere after what that sync made durable and the state
    /// does not discard; term never below the synced one, the vote of a synced term kept.
    func check(
        _ storage: ReplicaStorage, synced: MemoryRaftStorage, candidates: [MemoryRaftStorage], truncationFloors: [Int: Offset],
        _ context: String
    ) {
        let actual = model(of: storage)
        expectSameQueries(storage, actual, context)
        #expect(storage.hardState.commit <= storage.lastOffset, "\(context): commit beyond the log end")
        let h = storage.hardState
        #expect(h.term >= synced.hardState.term, "\(context): term went back from \(synced.hardState.term) to \(h.term)")
        if h.term == synced.hardState.term && synced.hardState.vote != nil {
            #expect(h.vote == synced.hardState.vote, "\(context): vote changed within term \(h.term)")
        }
        #expect(h.term <= candidates.map(\.hardState.term).max()!, "\(context): term from nowhere")
        #expect(storage.snapshotPoint.offset >= synced.snapshotPoint.offset, "\(context): log start went back")
        let matches = candidates.indices.contains { i in
            let c = candidates[i]
            guard c.snapshotPoint == actual.snapshotPoint, c.snapshotMembership == actual.snapshotMembership,
                actual.stored.count <= c.stored.count, Array(c.stored.prefix(actual.stored.count)) == actual.stored
            else { return false }
            var required = c.snapshotPoint.offset
            for b in c.stored {
                guard synced.batch(containing: b.baseOffset) == b else { break }
                required = b.lastOffset
            }
            if let floor = truncationFloors[i] { required = min(required, floor) }
            return actual.lastOffset >= required
        }
        #expect(
            matches,
            "\(context): reopened \(actual.snapshotPoint) ..\(actual.lastOffset) matches no state since the last sync (synced \(synced.snapshotPoint)..\(synced.lastOffset))"
        )
    }

    // MARK: (c) real Raft nodes over ReplicaStorage

    @Test(arguments: 0..<8)
    func raftGroupKeepsCommittedBatchesAcrossCrashes(seed: Int) throws {
        struct Member {
            var disk: SimulatedFileSystem
            var storage: ReplicaStorage
            var raft: RaftNode<ReplicaStorage>
        }
        let ids = [NodeID(1), NodeID(2), NodeID(3)]
        var random = SplitMix64(seed: UInt64(seed) &+ 77)
        func config(_ id: NodeID) -> RaftConfiguration {
            var c = RaftConfiguration(id: id, randomSeed: random.next())
            c.appendBytesMax = 4_000
            return c
        }
        var members: [NodeID: Member] = [:]
        for id in ids {
            let disk = SimulatedFileSystem()
            let s = try open(disk)
            members[id] = Member(disk: disk, storage: s, raft: RaftNode(configuration: config(id), storage: s))
        }
        var network: [RaftEnvelope] = []
        var committed: [Offset: RecordBatch] = [:]
        var restarts = 0
        var installs = 0
        var proposals = 0
        var isolated: (NodeID, Int)?
        var now: Int64 = 1_000
        for step in 0..<800 {
            now += 100
            for id in ids {
                var m = members[id]!
                m.raft.tick()
                if m.raft.isLeader && Int.random(in: 0..<3, using: &random) == 0 {
                    proposals += 1
                    _ = try? m.raft.propose(replicaBatch(base: .zero, count: 2, term: .zero, tag: step * 10 + Int(id.rawValue), valueBytes: 150))
                }
                members[id] = m
            }
            // Deliver in random order, dropping a few.
            network.shuffle(using: &random)
            let delivering = network
            network = []
            // Now and then one node is cut off for a while: the others' retention moves past it,
            // so it comes back to a snapshot install.
            if isolated == nil, step % 150 == 40 { isolated = (ids[Int.random(in: 0..<3, using: &random)], step + 60) }
            if let (_, until) = isolated, step >= until { isolated = nil }
            for envelope in delivering where Int.random(in: 0..<100, using: &random) >= 3 {
                if let (cut, _) = isolated, envelope.to == cut || envelope.from == cut { continue }
                members[envelope.to]!.raft.step(envelope)
            }
            for id in ids {
                var m = members[id]!
                while m.raft.hasReady {
                    let ready = m.raft.ready()
                    try m.storage.write(ready, nowMilliseconds: now)
                    if let pending = m.storage.beginSync() {
                        try pending.perform()
                        m.storage.completeSync(pending)
                    }
                    network += ready.messages
                    if ready.snapshot != nil { installs += 1 }
                    for b in ready.committedEntries {
                        if let seen = committed[b.baseOffset] {
                            #expect(seen == b, "seed \(seed): two batches committed at \(b.baseOffset)")
                        } else {
                            committed[b.baseOffset] = b
                        }
                    }
                    m.raft.advance(ready)
                }
                if step % 15 == 0 { _ = try m.storage.enforceRetention(nowMilliseconds: now, commit: m.raft.commit) }
                #expect(m.storage.readFailure == nil)
                members[id] = m
            }
            if Int.random(in: 0..<100, using: &random) < 2 {
                let id = ids[Int.random(in: 0..<3, using: &random)]
                var m = members[id]!
                let modes: [SimulatedFileSystem.CrashMode] = [.drop, .tear(garbage: true)]
                m.disk.crash(seed: random.next(), mode: modes[Int.random(in: 0...1, using: &random)])
                m.storage = try open(m.disk, now: now)
                m.raft = RaftNode(configuration: config(id), storage: m.storage)
                members[id] = m
                restarts += 1
            }
        }
        #expect(
            committed.count > 50 && restarts > 0 && installs > 0,
            "seed \(seed): \(committed.count) committed, \(restarts) restarts, \(installs) snapshot installs")
        var holders = 0
        for id in ids {
            let m = members[id]!
            try m.storage.close()
            let s = try open(m.disk, now: now)
            var holdsAll = true
            for (base, batch) in committed where batch.lastOffset > s.snapshotPoint.offset {
                let stored = s.batch(containing: base)
                if base <= s.hardState.commit {
                    #expect(stored == batch, "seed \(seed): node \(id) lost or changed committed batch \(base)")
                }
                if stored != batch { holdsAll = false }
            }
            if holdsAll { holders += 1 }
            // The restarted node starts from what it recovered.
            _ = RaftNode(configuration: config(id), storage: s)
        }
        #expect(holders >= 2, "seed \(seed): committed batches held by only \(holders) nodes")
    }
}

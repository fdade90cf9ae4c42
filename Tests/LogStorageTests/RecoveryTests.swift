import BrokerModel
import BrokerTesting
import LogStorage
import Testing

@Suite struct CrashRecoveryTests {
    static let seeds = Array(UInt64(1)...200)

    /// Random appends, flushes (some through the three-step group commit with appends in the
    /// middle), truncations and crashes (drop, tear, tear with garbage). After each crash and
    /// reopen: every flushed batch is there, byte for byte, at its offset; nothing else is served
    /// except batches that were really appended, in order; appends continue at the log end.
    @Test(arguments: seeds)
    func flushedBatchesSurviveCrashes(seed: UInt64) throws {
        var random = SimulatedFileSystemRandom(seed: seed)
        let fs = SimulatedFileSystem()
        var config = smallConfig(
            segmentBytes: Int.random(in: 300...3_000, using: &random), indexIntervalBytes: Int.random(in: 0...500, using: &random))
        config.segmentMilliseconds = 50
        var log = try openLog(fs, "/p", config)
        /// What the log should hold: every batch appended and not truncated, in order.
        var model: [RecordBatch] = []
        var tagCounter = 0
        var now: Int64 = 0
        for round in 0..<6 {
            for _ in 0..<Int.random(in: 1...40, using: &random) {
                now += Int64.random(in: 0...20, using: &random)
                switch Int.random(in: 0..<21, using: &random) {
                case 0..<13:
                    let count = Int.random(in: 1...8, using: &random)
                    let batch = makeBatch(count, tag: tagCounter, timestamp: now, valueBytes: Int.random(in: 0...60, using: &random))
                    tagCounter += 1
                    let (first, _) = try log.append(batch, nowMilliseconds: now)
                    var stored = batch
                    stored.setBaseOffset(first)
                    model.append(stored)
                case 13..<16:
                    try log.flush()
                case 16..<18:
                    if let pending = log.beginFlush() {
                        let batch = makeBatch(2, tag: tagCounter, timestamp: now)
                        tagCounter += 1
                        let (first, _) = try log.append(batch, nowMilliseconds: now)
                        var stored = batch
                        stored.setBaseOffset(first)
                        model.append(stored)
                        try pending.perform()
                        log.completeFlush(pending)
                    }
                case 18:
                    if Int.random(in: 0..<4, using: &random) == 0 {
                        let base = log.logEndOffset + Int64.random(in: 0...50, using: &random)
                        try log.reset(to: base)
                        model = []
                        #expect(log.logStartOffset == base && log.logEndOffset == base, "seed \(seed)")
                    } else {
                        log.config.retentionBytes = Int64.random(in: 0...3_000, using: &random)
                        try log.enforceRetention(nowMilliseconds: now)
                        model.removeAll { $0.baseOffset < log.logStartOffset }
                        #expect(model.first.map { $0.baseOffset == log.logStartOffset } ?? true, "seed \(seed)")
                    }
                default:
                    guard !model.isEmpty else { continue }
                    let victim = model[Int.random(in: 0..<model.count, using: &random)]
                    let cut = Offset(Int64.random(in: victim.baseOffset.rawValue...victim.lastOffset.rawValue, using: &random))
                    try log.truncate(from: cut)
                    model.removeAll { $0.lastOffset >= cut }
                    #expect(log.logEndOffset == (model.last?.nextOffset ?? log.logStartOffset), "seed \(seed)")
                }
            }
            let flushed = log.flushedOffset
            let mode: SimulatedFileSystem.CrashMode = [.drop, .tear(garbage: false), .tear(garbage: true)][Int.random(in: 0..<3, using: &random)]
            fs.crash(using: &random, mode: mode)
            log = try openLog(fs, "/p", config, now: now)
            let recovered = try readAll(log)
            #expect(recovered.count <= model.count, "seed \(seed) round \(round)")
            #expect(Array(model.prefix(recovered.count)) == recovered, "seed \(seed) round \(round): recovered batches differ from appended ones")
            let lastFlushedIndex = model.lastIndex { $0.lastOffset < flushed }
            #expect(recovered.count >= (lastFlushedIndex.map { $0 + 1 } ?? 0), "seed \(seed) round \(round): lost flushed data (\(mode))")
            #expect(log.logEndOffset == (recovered.last?.nextOffset ?? log.logStartOffset), "seed \(seed) round \(round)")
            #expect(log.logEndOffset >= flushed, "seed \(seed) round \(round)")
            #expect(log.flushedOffset == log.logEndOffset)
            model = recovered
        }
        // Appends continue at the right offset after the last crash.
        let end = log.logEndOffset
        #expect(try log.append(makeBatch(1, tag: -1), nowMilliseconds: now).first == end, "seed \(seed)")
    }

    @Test func corruptByteInTheActiveTailTruncatesFromThere() throws {
        let fs = SimulatedFileSystem()
        let config = smallConfig(indexIntervalBytes: 200)
        let log = try openLog(fs, "/p", config)
        var positions: [Int] = []
        var position = 0
        for i in 0..<10 {
            positions.append(position)
            let batch = makeBatch(3, tag: i)
            position += batch.sizeBytes
            try log.append(batch, nowMilliseconds: 0)
        }
        try log.flush()
        fs.crash(seed: 5, mode: .drop)  // unclean: the whole active segment is scanned on open
        let path = "/p/00000000000000000000.log"
        var bytes = try #require(fs.contents(of: path))
        bytes[positions[6] + 70] ^= 0x40  // inside batch 6's records: only the CRC notices
        fs.setContents(of: path, to: bytes)
        let reopened = try openLog(fs, "/p", config)
        #expect(reopened.logEndOffset == Offset(18))
        #expect(try readAll(reopened).map { try tag(of: $0) } == Array(0..<6))
        #expect(fs.contents(of: path)?.count == positions[6])  // the file was cut
        #expect(try reopened.append(makeBatch(1, tag: 6), nowMilliseconds: 0).first == Offset(18))
    }

    @Test func corruptBatchInASealedSegmentIsNeverServed() throws {
        let fs = SimulatedFileSystem()
        let config = smallConfig(segmentBytes: 5 * makeBatch(3, tag: 0).sizeBytes)
        let log = try openLog(fs, "/p", config)
        for i in 0..<12 { try log.append(makeBatch(3, tag: i), nowMilliseconds: 0) }
        #expect(log.segmentCount == 3)
        let path = "/p/00000000000000000000.log"
        var bytes = try #require(fs.contents(of: path))
        bytes[makeBatch(3, tag: 0).sizeBytes + 65] ^= 0xFF  // batch 1 (offsets 3...5)
        fs.setContents(of: path, to: bytes)
        #expect(throws: StorageError.self) { _ = try log.read(from: Offset(4), maxBytes: 1 << 20, upTo: log.logEndOffset) }
        // Batch 0 alone is fine; batches in later segments are fine.
        #expect(try log.read(from: Offset(0), maxBytes: 1, upTo: log.logEndOffset).map { try tag(of: $0) } == [0])
        #expect(try log.read(from: Offset(15), maxBytes: 1 << 20, upTo: log.logEndOffset).map { try tag(of: $0) } == Array(5..<12))
    }

    @Test func missingOrGarbledIndexFilesAreRebuilt() throws {
        let fs = SimulatedFileSystem()
        let config = smallConfig(segmentBytes: 4_000, indexIntervalBytes: 150)
        let log = try openLog(fs, "/p", config)
        for i in 0..<60 { try log.append(makeBatch(2, tag: i, timestamp: Int64(i) * 10), nowMilliseconds: 0) }
        try log.close()
        let names = try fs.listDirectory("/p").sorted()
        let indexNames = names.filter { $0.hasSuffix(".index") || $0.hasSuffix(".timeindex") }
        #expect(indexNames.count >= 4)
        var originals: [String: [UInt8]] = [:]
        for name in indexNames { originals[name] = fs.contents(of: "/p/" + name)! }
        #expect(originals.values.allSatisfy { !$0.isEmpty })
        // Damage: one index removed, one garbled, one torn, one pointing at wrong positions.
        try fs.removeFile("/p/" + indexNames[0])
        fs.setContents(of: "/p/" + indexNames[1], to: (0..<originals[indexNames[1]]!.count).map { UInt8(truncatingIfNeeded: $0 &* 37) })
        fs.setContents(of: "/p/" + indexNames[2], to: Array(originals[indexNames[2]]!.dropLast(5)))
        var shifted = originals[indexNames[3]]!
        for i in stride(from: 7, to: shifted.count, by: 8) where indexNames[3].hasSuffix(".index") { shifted[i] &+= 3 }
        fs.setContents(of: "/p/" + indexNames[3], to: shifted)
        // Stray files a crash can leave behind.
        fs.setContents(of: "/p/00000000000000000999.index", to: [1, 2, 3])
        fs.setContents(of: "/p/00000000000000000000.log.tmp", to: [4])

        let reopened = try openLog(fs, "/p", config)
        #expect(try readAll(reopened).map { try tag(of: $0) } == Array(0..<60))
        for i in 0..<60 {
            #expect(try reopened.read(from: Offset(Int64(2 * i + 1)), maxBytes: 1, upTo: Offset(200)).first?.baseOffset == Offset(Int64(2 * i)))
            #expect(try reopened.offset(forTimestamp: Int64(i) * 10 - 5) == Offset(Int64(2 * i)))
        }
        try reopened.close()
        #expect(try fs.listDirectory("/p").sorted() == names)
        for name in indexNames {
            #expect(fs.contents(of: "/p/" + name) == originals[name], "\(name) rebuilt identically")
        }
    }

    @Test func emptyTrailingSegmentAfterCrashDuringRoll() throws {
        let fs = SimulatedFileSystem()
        let config = smallConfig(segmentBytes: 2 * makeBatch(2, tag: 0).sizeBytes)
        let log = try openLog(fs, "/p", config)
        for i in 0..<4 { try log.append(makeBatch(2, tag: i), nowMilliseconds: 0) }
        // The third append rolled (synced the first segment); the new one's data is not synced.
        fs.crash(seed: 9, mode: .drop)
        let reopened = try openLog(fs, "/p", config)
        #expect(try readAll(reopened).map { try tag(of: $0) } == [0, 1])
        #expect(reopened.logEndOffset == Offset(4))
    }
}

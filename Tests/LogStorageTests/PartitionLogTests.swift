import BrokerModel
import BrokerTesting
import LogStorage
import Testing

@Suite struct PartitionLogTests {
    @Test(arguments: FileSystemKind.allCases)
    func roundTripAndReopenAfterCleanClose(kind: FileSystemKind) throws {
        try withFileSystem(kind) { fs, dir in
            let log = try openLog(fs, dir, smallConfig(segmentBytes: 2_000))
            #expect(log.logStartOffset == .zero && log.logEndOffset == .zero && log.segmentCount == 1)
            var expected: [(Offset, Offset)] = []
            for i in 0..<50 {
                let (first, last) = try log.append(makeBatch(1 + i % 4, tag: i), nowMilliseconds: 1_000)
                expected.append((first, last))
            }
            #expect(expected[0] == (Offset(0), Offset(0)))
            #expect(expected[1] == (Offset(1), Offset(2)))
            #expect(log.segmentCount > 1)
            #expect(log.flushedOffset == .zero)
            try log.flush()
            #expect(log.flushedOffset == log.logEndOffset)
            let end = log.logEndOffset
            let size = log.sizeBytes
            let segments = log.segmentCount
            let before = try readAll(log)
            #expect(before.count == 50)
            for (i, batch) in before.enumerated() {
                #expect(try tag(of: batch) == i)
                #expect(batch.baseOffset == expected[i].0 && batch.lastOffset == expected[i].1)
            }
            try log.close()
            #expect(throws: StorageError.closed) { _ = try log.append(makeBatch(1, tag: 0), nowMilliseconds: 0) }

            let reopened = try openLog(fs, dir, smallConfig(segmentBytes: 2_000))
            #expect(reopened.logEndOffset == end && reopened.flushedOffset == end)
            #expect(reopened.sizeBytes == size && reopened.segmentCount == segments)
            #expect(try readAll(reopened) == before)
            #expect(try reopened.append(makeBatch(1, tag: 50), nowMilliseconds: 1_000).first == end)
            try reopened.delete()
            #expect(!fs.directoryExists(dir))
        }
    }

    /// An unclean shutdown (no `close()`) on either file system: the last segment is scanned in
    /// full and a garbage tail (a torn write) is cut off.
    @Test(arguments: FileSystemKind.allCases)
    func reopenWithoutCloseCutsAGarbageTail(kind: FileSystemKind) throws {
        try withFileSystem(kind) { fs, dir in
            let config = smallConfig(segmentBytes: 3_000, indexIntervalBytes: 100)
            var log: PartitionLog? = try openLog(fs, dir, config)
            for i in 0..<40 { try log!.append(makeBatch(3, tag: i), nowMilliseconds: 0) }
            try log!.flush()
            let activeName = try fs.listDirectory(dir).filter { $0.hasSuffix(".log") }.sorted().last!
            let size = log!.sizeBytes
            log = nil  // abandoned, as by a crash: no clean-shutdown marker
            let file = try fs.openFile(fs.join(dir, activeName), create: false)
            let validBytes = try file.size()
            try file.write([0, 0, 0, 0, 0, 0, 0, 120, 0, 0, 0, 200, 1, 2, 3, 2, 9, 9], at: validBytes)
            let reopened = try openLog(fs, dir, config)
            #expect(reopened.logEndOffset == Offset(120) && reopened.sizeBytes == size)
            #expect(try file.size() == validBytes)
            #expect(try readAll(reopened).map { try tag(of: $0) } == Array(0..<40))
            #expect(try reopened.append(makeBatch(1, tag: 40), nowMilliseconds: 0).first == Offset(120))
            try reopened.delete()
        }
    }

    @Test func appendAtOwnOffsetKeepsOffsetsAndAllowsGaps() throws {
        let fs = SimulatedFileSystem()
        let log = try openLog(fs, "/p")
        var batch = makeBatch(3, tag: 1)
        batch.setBaseOffset(Offset(100))
        // Empty log: it restarts where the batch starts (a follower starting at the leader's log start).
        try log.appendAtOwnOffset(batch, nowMilliseconds: 0)
        #expect(log.logStartOffset == Offset(100) && log.logEndOffset == Offset(103))
        batch = makeBatch(2, tag: 2)
        batch.setBaseOffset(Offset(110))  // a gap inside the segment
        try log.appendAtOwnOffset(batch, nowMilliseconds: 0)
        #expect(log.logEndOffset == Offset(112))
        batch.setBaseOffset(Offset(111))
        #expect(throws: StorageError.self) { try log.appendAtOwnOffset(batch, nowMilliseconds: 0) }
        // Reading inside the gap starts at the next batch.
        let read = try log.read(from: Offset(105), maxBytes: 1 << 20, upTo: log.logEndOffset)
        #expect(read.map(\.baseOffset) == [Offset(110)])
        #expect(try log.read(from: Offset(101), maxBytes: 1 << 20, upTo: Offset(200)).map(\.baseOffset) == [Offset(100), Offset(110)])
        #expect(throws: StorageError.offsetOutOfRange(requested: 99, logStart: 100, logEnd: 112)) {
            _ = try log.read(from: Offset(99), maxBytes: 100, upTo: Offset(200))
        }
        try log.close()
        let reopened = try openLog(fs, "/p")
        #expect(reopened.logStartOffset == Offset(100) && reopened.logEndOffset == Offset(112))
    }

    @Test func readLimits() throws {
        let fs = SimulatedFileSystem()
        let log = try openLog(fs, "/p", smallConfig(indexIntervalBytes: 100))
        for i in 0..<10 { try log.append(makeBatch(10, tag: i), nowMilliseconds: 0) }  // offsets 10i..<10i+10
        let size = makeBatch(10, tag: 0).sizeBytes
        // Starts with the batch containing the offset (middle of a batch).
        #expect(try log.read(from: Offset(35), maxBytes: 1 << 20, upTo: Offset(100)).map(\.baseOffset).first == Offset(30))
        // maxBytes: stops before exceeding it, but returns one batch even when it alone exceeds it.
        #expect(try log.read(from: Offset(0), maxBytes: 2 * size + 1, upTo: Offset(100)).count == 2)
        #expect(try log.read(from: Offset(0), maxBytes: 1, upTo: Offset(100)).count == 1)
        // upTo: never a batch whose last offset is >= upTo.
        #expect(try log.read(from: Offset(0), maxBytes: 1 << 20, upTo: Offset(30)).map(\.lastOffset) == [Offset(9), Offset(19), Offset(29)])
        #expect(try log.read(from: Offset(0), maxBytes: 1 << 20, upTo: Offset(29)).count == 2)
        #expect(try log.read(from: Offset(25), maxBytes: 1 << 20, upTo: Offset(29)).isEmpty)
        #expect(try log.read(from: Offset(100), maxBytes: 1 << 20, upTo: Offset(200)).isEmpty)  // at the log end
    }

    @Test func rollsBySizeAndByTime() throws {
        let fs = SimulatedFileSystem()
        var config = smallConfig(segmentBytes: 3 * makeBatch(5, tag: 0).sizeBytes)
        config.segmentMilliseconds = 10_000
        let log = try openLog(fs, "/p", config)
        for i in 0..<3 { try log.append(makeBatch(5, tag: i), nowMilliseconds: 1_000) }
        #expect(log.segmentCount == 1)  // exactly full
        try log.append(makeBatch(5, tag: 3), nowMilliseconds: 1_000)
        #expect(log.segmentCount == 2)
        let names = try fs.listDirectory("/p").sorted()
        #expect(names == [
            "00000000000000000000.index", "00000000000000000000.log", "00000000000000000000.timeindex",
            "00000000000000000015.index", "00000000000000000015.log", "00000000000000000015.timeindex",
        ])
        // By time: the active segment's first batch (timestamp 1000) is 10 s old at 11_001.
        try log.append(makeBatch(1, tag: 4), nowMilliseconds: 11_000)
        #expect(log.segmentCount == 2)
        try log.append(makeBatch(1, tag: 5), nowMilliseconds: 11_001)
        #expect(log.segmentCount == 3)
        // A changed config applies from the next append.
        log.config.segmentBytes = 100
        try log.append(makeBatch(5, tag: 6, timestamp: 11_001), nowMilliseconds: 11_001)
        #expect(log.segmentCount == 4)
        #expect(try readAll(log).map { try tag(of: $0) } == Array(0...6))
    }

    @Test func offsetForTimestampAcrossSegments() throws {
        let fs = SimulatedFileSystem()
        let log = try openLog(fs, "/p", smallConfig(segmentBytes: 400, indexIntervalBytes: 0))
        // Timestamps 100, 200, ... one batch of 2 records each; several per segment.
        for i in 0..<30 { try log.append(makeBatch(2, tag: i, timestamp: Int64(i + 1) * 100), nowMilliseconds: 0) }
        #expect(log.segmentCount > 3)
        #expect(try log.offset(forTimestamp: 0) == Offset(0))
        #expect(try log.offset(forTimestamp: 100) == Offset(0))
        #expect(try log.offset(forTimestamp: 101) == Offset(2))
        #expect(try log.offset(forTimestamp: 1_550) == Offset(30))
        #expect(try log.offset(forTimestamp: 3_000) == Offset(58))
        #expect(try log.offset(forTimestamp: 3_001) == nil)
        try log.close()
        let reopened = try openLog(fs, "/p", smallConfig(segmentBytes: 400, indexIntervalBytes: 0))
        for i in 0..<30 {
            #expect(try reopened.offset(forTimestamp: Int64(i + 1) * 100 - 50) == Offset(Int64(2 * i)))
        }
    }

    @Test func retentionByTimeAdvancesLogStart() throws {
        let fs = SimulatedFileSystem()
        var config = smallConfig(segmentBytes: 2 * makeBatch(4, tag: 0).sizeBytes)
        config.retentionMilliseconds = 1_000
        let log = try openLog(fs, "/p", config)
        for i in 0..<10 { try log.append(makeBatch(4, tag: i, timestamp: Int64(i) * 1_000), nowMilliseconds: 0) }
        #expect(log.segmentCount == 5)  // [0,1] [2,3] ... timestamps in ms/1000
        #expect(try log.enforceRetention(nowMilliseconds: 2_000) == 0)  // segment 0's newest is 1000: not older than 1000 ms
        #expect(try log.enforceRetention(nowMilliseconds: 4_500) == 2)
        #expect(log.logStartOffset == Offset(16))
        #expect(try tag(of: try log.read(from: log.logStartOffset, maxBytes: 1, upTo: log.logEndOffset)[0]) == 4)
        #expect(throws: StorageError.self) { _ = try log.read(from: Offset(0), maxBytes: 1, upTo: log.logEndOffset) }
        // Never the active segment.
        #expect(try log.enforceRetention(nowMilliseconds: 1_000_000) == 2)
        #expect(log.segmentCount == 1 && log.logStartOffset == Offset(32))
        try log.close()
        let reopened = try openLog(fs, "/p", config)
        #expect(reopened.logStartOffset == Offset(32) && reopened.logEndOffset == Offset(40))
    }

    @Test func retentionByBytes() throws {
        let fs = SimulatedFileSystem()
        let batchBytes = Int64(makeBatch(4, tag: 0).sizeBytes)
        var config = smallConfig(segmentBytes: Int(2 * batchBytes))
        config.retentionBytes = 5 * batchBytes
        let log = try openLog(fs, "/p", config)
        for i in 0..<10 { try log.append(makeBatch(4, tag: i), nowMilliseconds: 0) }
        #expect(log.sizeBytes == 10 * batchBytes)
        // Kafka's rule: delete the oldest segment while the rest still holds >= retentionBytes.
        #expect(try log.enforceRetention(nowMilliseconds: 0) == 2)
        #expect(log.sizeBytes == 6 * batchBytes && log.logStartOffset == Offset(16))
        log.config.retentionBytes = -1
        #expect(try log.enforceRetention(nowMilliseconds: 0) == 0)
    }

    @Test func truncateRemovesTheSuffixDurably() throws {
        let fs = SimulatedFileSystem()
        let config = smallConfig(segmentBytes: 3 * makeBatch(2, tag: 0).sizeBytes, indexIntervalBytes: 0)
        let log = try openLog(fs, "/p", config)
        for i in 0..<10 { try log.append(makeBatch(2, tag: i), nowMilliseconds: 0) }  // batch i at 2i
        try log.flush()
        try log.truncate(from: Offset(13))  // inside batch 6 (12...13): it goes whole
        #expect(log.logEndOffset == Offset(12) && log.flushedOffset == Offset(12))
        #expect(try readAll(log).map { try tag(of: $0) } == Array(0..<6))
        try log.truncate(from: Offset(6))  // a segment boundary
        #expect(log.logEndOffset == Offset(6))
        #expect(try log.append(makeBatch(1, tag: 99), nowMilliseconds: 0).first == Offset(6))
        try log.truncate(from: Offset(100))  // past the end: nothing
        #expect(log.logEndOffset == Offset(7))
        try log.flush()
        // The truncation survives a crash (the removed suffix must not come back).
        fs.crash(seed: 3, mode: .tear(garbage: true))
        let reopened = try openLog(fs, "/p", config)
        #expect(try readAll(reopened).map { try tag(of: $0) } == [0, 1, 2, 99])
    }

    @Test func resetRestartsEmptyAtOffset() throws {
        let fs = SimulatedFileSystem()
        let log = try openLog(fs, "/p", smallConfig(segmentBytes: 300))
        for i in 0..<10 { try log.append(makeBatch(2, tag: i), nowMilliseconds: 0) }
        try log.reset(to: Offset(500))
        #expect(log.logStartOffset == Offset(500) && log.logEndOffset == Offset(500) && log.segmentCount == 1)
        #expect(try log.read(from: Offset(500), maxBytes: 100, upTo: Offset(600)).isEmpty)
        #expect(try log.append(makeBatch(1, tag: 1), nowMilliseconds: 0).first == Offset(500))
        fs.crash(seed: 1, mode: .drop)
        let reopened = try openLog(fs, "/p", smallConfig(segmentBytes: 300))
        #expect(reopened.logStartOffset == Offset(500) && reopened.logEndOffset == Offset(500))
    }

    @Test func groupCommitSurvivesSegmentDeletionMeanwhile() throws {
        let fs = SimulatedFileSystem()
        var config = smallConfig(segmentBytes: 300)
        config.retentionBytes = 0
        let log = try openLog(fs, "/p", config)
        #expect(log.beginFlush() == nil)
        for i in 0..<10 { try log.append(makeBatch(2, tag: i), nowMilliseconds: 0) }
        let pending = try #require(log.beginFlush())
        #expect(pending.targetOffset == log.logEndOffset)
        try log.append(makeBatch(2, tag: 10), nowMilliseconds: 0)  // appends go on meanwhile
        #expect(try log.enforceRetention(nowMilliseconds: 0) > 0)
        try pending.perform()
        log.completeFlush(pending)
        #expect(log.flushedOffset == pending.targetOffset)
        #expect(log.flushedOffset < log.logEndOffset)
    }

    @Test func flushAcrossTruncationDoesNotOverclaim() throws {
        let fs = SimulatedFileSystem()
        let log = try openLog(fs, "/p")
        for i in 0..<4 { try log.append(makeBatch(2, tag: i), nowMilliseconds: 0) }
        let pending = try #require(log.beginFlush())
        try log.truncate(from: Offset(2))
        for i in 0..<4 { try log.append(makeBatch(2, tag: 10 + i), nowMilliseconds: 0) }
        try pending.perform()
        log.completeFlush(pending)
        // The pending flush began before the truncation: it proves nothing about the new suffix.
        #expect(log.flushedOffset == Offset(2))
    }

    @Test func failedSyncLeavesFlushedOffsetAndRetrySucceeds() throws {
        let fs = SimulatedFileSystem()
        var log = try openLog(fs, "/p")
        try log.append(makeBatch(2, tag: 0), nowMilliseconds: 0)
        fs.failNextSyncs(1)
        #expect(throws: StorageError.self) { try log.flush() }
        #expect(log.flushedOffset == .zero)
        try log.flush()
        #expect(log.flushedOffset == Offset(2))
        // A failed three-step flush that is never completed: the next flush syncs the data again.
        try log.append(makeBatch(2, tag: 1), nowMilliseconds: 0)
        let failing = try #require(log.beginFlush())
        fs.failNextSyncs(1)
        #expect(throws: StorageError.self) { try failing.perform() }
        try log.flush()
        #expect(log.flushedOffset == Offset(4))
        fs.crash(seed: 2, mode: .drop)
        log = try openLog(fs, "/p")
        #expect(try readAll(log).map { try tag(of: $0) } == [0, 1])
        fs.diskFull = true
        #expect(throws: StorageError.self) { try log.append(makeBatch(2, tag: 2), nowMilliseconds: 0) }
        #expect(log.logEndOffset == Offset(4))
    }

    /// Not timed: catches accidental quadratic behaviour; prints a rough figure only.
    @Test(arguments: FileSystemKind.allCases)
    func appendsAndReadsTwoHundredThousandRecords(kind: FileSystemKind) throws {
        try withFileSystem(kind) { fs, dir in
            var config = LogConfig()
            config.segmentBytes = 8 << 20
            let log = try openLog(fs, dir, config)
            let records = (0..<1_000).map { Record(key: nil, value: [UInt8](repeating: UInt8($0 & 0xff), count: 100), timestamp: 5) }
            let batch = RecordBatch.encode(records: records)
            let clock = ContinuousClock()
            let start = clock.now
            for i in 0..<200 {
                try log.append(batch, nowMilliseconds: 0)
                if i % 10 == 9 { try log.flush() }
            }
            let appended = clock.now
            var next = Offset.zero
            var count = 0
            while next < log.logEndOffset {
                let batches = try log.read(from: next, maxBytes: 1 << 20, upTo: log.logEndOffset)
                for b in batches { count += Int(b.recordCount) }
                next = batches.last!.nextOffset
            }
            let read = clock.now
            #expect(count == 200_000 && log.logEndOffset == Offset(200_000))
            print("[\(kind)] append+flush: \(Int(200_000 / (appended - start).seconds)) records/s, read: \(Int(200_000 / (read - appended).seconds)) records/s (debug build)")
            try log.delete()
        }
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

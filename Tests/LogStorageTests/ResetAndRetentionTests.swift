import BrokerModel
import BrokerTesting
import LogStorage
import Testing

/// The crash-safe reset (a durable `reset-to` marker finished on open) and staged retention.
@Suite struct ResetAndRetentionTests {
    func fill(_ log: PartitionLog, batches: Int) throws {
        for i in 0..<batches { try log.append(makeBatch(2, tag: i, valueBytes: 300), nowMilliseconds: 1_000) }
        try log.flush()
    }

    @Test(arguments: FileSystemKind.allCases)
    func openFinishesAnInterruptedReset(kind: FileSystemKind) throws {
        try withFileSystem(kind) { fs, dir in
            let log = try openLog(fs, dir, smallConfig(segmentBytes: 1_500))
            try fill(log, batches: 10)
            #expect(log.segmentCount > 1)
            try log.close()
            // What a crash right after the marker became durable leaves behind (plus a
            // half-removed log: the newest segment already gone).
            var w = ByteWriter()
            w.int64(500)
            w.uint32(CRC32C.checksum(w.bytes))
            let marker = try fs.openFile(fs.join(dir, "reset-to"), create: true)
            try marker.write(w.bytes, at: 0)
            try marker.sync()
            try fs.syncDirectory(dir)
            let newest = try fs.listDirectory(dir).filter { $0.hasSuffix(".log") }.sorted().last!
            try fs.removeFile(fs.join(dir, newest))
            let reopened = try openLog(fs, dir, smallConfig(segmentBytes: 1_500))
            #expect(reopened.logStartOffset == Offset(500) && reopened.logEndOffset == Offset(500))
            #expect(!fs.fileExists(fs.join(dir, "reset-to")))
            try reopened.append(makeBatch(1, tag: 1), nowMilliseconds: 1_000)
            #expect(reopened.logEndOffset == Offset(501))
            try reopened.close()
        }
    }

    @Test func aTornMarkerIsIgnored() throws {
        let fs = SimulatedFileSystem()
        let log = try openLog(fs, "/p", smallConfig())
        try fill(log, batches: 3)
        try log.close()
        fs.setContents(of: "/p/reset-to", to: [0, 0, 0, 0, 0, 0, 1])
        let reopened = try openLog(fs, "/p", smallConfig())
        #expect(reopened.logStartOffset == .zero && reopened.logEndOffset == Offset(6))
        #expect(!fs.fileExists("/p/reset-to"))
    }

    @Test func resetSurvivesACrashRightAfterIt() throws {
        let fs = SimulatedFileSystem()
        let log = try openLog(fs, "/p", smallConfig(segmentBytes: 1_500))
        try fill(log, batches: 10)
        try log.reset(to: Offset(77))
        fs.crash(seed: 1, mode: .drop)
        let reopened = try openLog(fs, "/p", smallConfig(segmentBytes: 1_500))
        #expect(reopened.logStartOffset == Offset(77) && reopened.logEndOffset == Offset(77))
    }

    @Test func retentionPlanStopsAtKeepingFromAndDeletionIsStaged() throws {
        let fs = SimulatedFileSystem()
        var config = smallConfig(segmentBytes: 1_500)
        config.retentionBytes = 0
        let log = try openLog(fs, "/p", config)
        try fill(log, batches: 12)
        let bases = log.segmentBaseOffsets
        #expect(bases.count >= 4)
        // Everything but the active segment would go without a bound.
        #expect(log.retentionPlan(nowMilliseconds: 1_000) == bases.count - 1)
        // Only segments whose every offset is below `keepingFrom`.
        #expect(log.retentionPlan(nowMilliseconds: 1_000, keepingFrom: bases[2]) == 2)
        #expect(log.retentionPlan(nowMilliseconds: 1_000, keepingFrom: bases[2] - 1) == 1)
        try log.deleteOldestSegments(2)
        #expect(log.logStartOffset == bases[2])
        #expect(log.segmentBaseOffsets == Array(bases.dropFirst(2)))
        fs.crash(seed: 2, mode: .drop)
        #expect(try openLog(fs, "/p", config).logStartOffset == bases[2])
    }
}

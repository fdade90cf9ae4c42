import BrokerModel
import Dispatch
import LogStorage
import Synchronization
import Testing

/// Holds an error from another thread.
private final class ErrorBox: Sendable {
    let error = Mutex<StorageError?>(nil)
}

@Suite struct GroupCommitConcurrencyTests {
    /// `perform()` runs on another thread while the owner keeps appending (and rolling segments),
    /// as the broker's group commit does.
    @Test(arguments: FileSystemKind.allCases)
    func performRunsConcurrentlyWithAppends(kind: FileSystemKind) throws {
        try withFileSystem(kind) { fs, dir in
            let log = try openLog(fs, dir, smallConfig(segmentBytes: 3_000))
            for round in 0..<30 {
                try log.append(makeBatch(10, tag: round), nowMilliseconds: 0)
                let pending = try #require(log.beginFlush())
                let done = DispatchSemaphore(value: 0)
                let box = ErrorBox()
                DispatchQueue.global().async {
                    do throws(StorageError) {
                        try pending.perform()
                    } catch {
                        box.error.withLock { $0 = error }
                    }
                    done.signal()
                }
                for i in 0..<5 { try log.append(makeBatch(10, tag: 1_000 + i), nowMilliseconds: 0) }
                done.wait()
                #expect(box.error.withLock { $0 } == nil)
                log.completeFlush(pending)
                #expect(log.flushedOffset == pending.targetOffset)
                #expect(log.flushedOffset < log.logEndOffset)
            }
            #expect(log.segmentCount > 1)
            #expect(try readAll(log).count == 30 * 6)
            try log.delete()
        }
    }
}

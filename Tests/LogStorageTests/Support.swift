import BrokerModel
import BrokerTesting
import Foundation
import LogStorage
import Testing

/// The two `FileSystem` implementations every contract test runs against (STYLE.md #19).
enum FileSystemKind: String, CaseIterable, CustomStringConvertible, Sendable {
    case posix
    case simulated
    var description: String { rawValue }
}

/// Runs `body` with a fresh file system and an empty, unique directory path in it; removes the
/// directory afterwards (also on failure).
func withFileSystem<R>(
    _ kind: FileSystemKind, _ body: (any FileSystem, String) throws -> R
) throws -> R {
    switch kind {
    case .posix:
        let fs = PosixFileSystem()
        let root = NSTemporaryDirectory() + "petrel-logstorage-" + UUID().uuidString
        defer { try? fs.removeDirectory(root) }
        return try body(fs, root)
    case .simulated:
        return try body(SimulatedFileSystem(), "/data/partition-0")
    }
}

/// A batch of `count` records whose values say `tag-i`, all stamped `timestamp`.
func makeBatch(_ count: Int, tag: Int, timestamp: Int64 = 1_000, valueBytes: Int = 0) -> RecordBatch {
    let padding = [UInt8](repeating: 0x61, count: valueBytes)
    let records = (0..<count).map { i in
        Record(key: Array("k\(i)".utf8), value: Array("\(tag)-\(i)".utf8) + padding, timestamp: timestamp)
    }
    return RecordBatch.encode(records: records)
}

/// The `tag` that `makeBatch` wrote into a batch's first record.
func tag(of batch: RecordBatch) throws -> Int {
    let value = try batch.records()[0].record.value!
    let text = String(decoding: value, as: UTF8.self)
    return Int(text.split(separator: "-")[0])!
}

func openLog(_ fs: any FileSystem, _ dir: String, _ config: LogConfig = LogConfig(), now: Int64 = 1_000) throws -> PartitionLog {
    try PartitionLog.open(directory: dir, config: config, fileSystem: fs, nowMilliseconds: now)
}

/// Every batch in the log, in order.
func readAll(_ log: PartitionLog) throws -> [RecordBatch] {
    var result: [RecordBatch] = []
    var next = log.logStartOffset
    while next < log.logEndOffset {
        let batches = try log.read(from: next, maxBytes: 1 << 20, upTo: log.logEndOffset)
        if batches.isEmpty { break }
        result += batches
        next = batches.last!.nextOffset
    }
    return result
}

func smallConfig(segmentBytes: Int = 1 << 20, indexIntervalBytes: Int = 256) -> LogConfig {
    var config = LogConfig()
    config.segmentBytes = segmentBytes
    config.indexIntervalBytes = indexIntervalBytes
    config.retentionMilliseconds = -1
    return config
}

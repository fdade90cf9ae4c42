import BrokerModel
import LogStorage
import Synchronization

/// One partition on this broker: its log, its high watermark, and the requests waiting on it.
///
/// Thread-safety: everything mutable sits in `state` behind a `Mutex`. HTTP threads append and
/// read under it; the flusher fsyncs *outside* it (see `Flusher`) so appends continue during an
/// fsync. Completions (answering HTTP requests) always run after the lock is released
/// (STYLE.md #4: mutate under the lock, act outside it).
final class Partition: Sendable {
    let topic: TopicName
    let id: PartitionID
    let state: Mutex<PartitionState>

    init(topic: TopicName, id: PartitionID, log: sending PartitionLog) {
        self.topic = topic
        self.id = id
        let highWatermark = log.flushedOffset
        state = Mutex(PartitionState(log: log, highWatermark: highWatermark))
    }

    var topicPartition: TopicPartition { TopicPartition(topic, id) }
}

struct PartitionState: ~Copyable {
    var log: PartitionLog
    /// Offsets below it are durable and visible to readers (single node: the fsynced offset;
    /// in a cluster: the Raft commit offset).
    var highWatermark: Offset
    /// acks=all producers waiting for the high watermark to pass their last offset, in offset order.
    var ackWaiters: [AckWaiter] = []
    /// Long-poll readers waiting for the high watermark to pass their offset.
    var readWaiters: [ReadWaiter] = []
    /// True while the partition sits in the flusher's queue (so it is queued once, not per append).
    var isQueuedForFlush = false
    /// True while a flush round runs (on the flusher thread or inline on a producer's thread). One
    /// round at a time: appends that arrive meanwhile are covered by the next round, which the
    /// running round hands to the flusher when it ends (group commit).
    var isFlushing = false
    /// Set when the partition is closed (topic deleted, broker stopping, or a failed fsync):
    /// every later request gets this error.
    var closedReason: BrokerError?

    init(log: PartitionLog, highWatermark: Offset) {
        self.log = log
        self.highWatermark = highWatermark
    }

    var offsets: PartitionOffsets {
        PartitionOffsets(logStartOffset: log.logStartOffset, highWatermark: highWatermark, logEndOffset: log.logEndOffset)
    }

    /// Reads up to the high watermark. `from` must already be validated against the log range.
    func read(from: Offset, maxRecords: Int, maxBytes: Int, topic: TopicName, partition: PartitionID) throws(BrokerError) -> ReadResult {
        try log.readCommitted(from: from, maxRecords: maxRecords, maxBytes: maxBytes, highWatermark: highWatermark, topic: topic, partition: partition)
    }
}

extension PartitionLog {
    /// Reads records below `highWatermark` (single node and cluster replicas alike). `from` must
    /// already be validated against the log range.
    func readCommitted(from: Offset, maxRecords: Int, maxBytes: Int, highWatermark: Offset, topic: TopicName, partition: PartitionID) throws(BrokerError) -> ReadResult {
        let log = self
        var batches: [RecordBatch] = []
        if from < highWatermark {
            do {
                batches = try log.read(from: from, maxBytes: maxBytes, upTo: highWatermark)
            } catch {
                throw .storage("reading \(topic)-\(partition) at offset \(from): \(error)")
            }
        }
        // Walk the batches to find where the answer ends: after maxRecords data records, or at the
        // end of the last batch. Offsets inside a batch are contiguous (no compaction yet), so this
        // needs no decoding.
        var next = from
        var remaining = maxRecords
        var kept: [RecordBatch] = []
        for batch in batches {
            if remaining == 0 { break }
            if batch.lastOffset < from { continue }
            kept.append(batch)
            if batch.isControl {
                next = batch.nextOffset
                continue
            }
            let start = max(from, batch.baseOffset)
            let available = batch.lastOffset - start + 1
            let taken = min(Int64(remaining), available)
            remaining -= Int(taken)
            next = start + taken
        }
        return ReadResult(
            topic: topic, partition: partition, batches: kept, fromOffset: from, nextOffset: max(next, from),
            highWatermark: highWatermark, logStartOffset: log.logStartOffset, logEndOffset: log.logEndOffset)
    }
}

extension PartitionLog {
    /// The earliest committed offset whose record timestamp is at or after `timestamp` (Kafka's
    /// ListOffsets), or nil. The log finds the first batch whose max timestamp reaches it; the answer
    /// is the first record in it (or after it) whose own timestamp does.
    func firstOffset(atOrAfter timestamp: Int64, below highWatermark: Offset) throws -> Offset? {
        guard let batchStart = try offset(forTimestamp: timestamp) else { return nil }
        var from = max(batchStart, logStartOffset)
        while from < highWatermark {
            let batches = try read(from: from, maxBytes: 1 << 20, upTo: highWatermark)
            guard !batches.isEmpty else { break }
            var found: Offset?
            for batch in batches where !batch.isControl && batch.maxTimestamp >= timestamp {
                try batch.forEachRecord { (r: StoredRecord) throws(DecodeError) -> Bool in
                    if r.offset >= from && r.record.timestamp >= timestamp {
                        found = r.offset
                        return false
                    }
                    return true
                }
                if found != nil { break }
            }
            if let found { return found }
            from = batches.last!.nextOffset
        }
        // Not yet committed records are not visible.
        return nil
    }
}

/// The completion of one produce request that spans one or more partitions. It answers once every
/// partition it wrote to has made its records durable, or once any of them failed.
final class ProduceTracker: Sendable {
    private struct State {
        var remaining: Int
        var completion: (@Sendable (Result<[RecordPlacement], BrokerError>) -> Void)?
    }
    private let state: Mutex<State>
    let placements: [RecordPlacement]
    let onFinish: @Sendable () -> Void

    init(partitions: Int, placements: [RecordPlacement], onFinish: @escaping @Sendable () -> Void,
         completion: @escaping @Sendable (Result<[RecordPlacement], BrokerError>) -> Void) {
        self.placements = placements
        self.onFinish = onFinish
        state = Mutex(State(remaining: partitions, completion: completion))
    }

    func partitionDurable() {
        let done = state.withLock { s -> (@Sendable (Result<[RecordPlacement], BrokerError>) -> Void)? in
            s.remaining -= 1
            guard s.remaining == 0, let c = s.completion else { return nil }
            s.completion = nil
            return c
        }
        if let done {
            onFinish()
            done(.success(placements))
        }
    }

    func fail(_ error: BrokerError) {
        let done = state.withLock { s -> (@Sendable (Result<[RecordPlacement], BrokerError>) -> Void)? in
            defer { s.completion = nil }
            return s.completion
        }
        if let done {
            onFinish()
            done(.failure(error))
        }
    }
}

struct AckWaiter {
    var lastOffset: Offset
    var tracker: ProduceTracker
}

/// A parked long-poll read. Answered exactly once: by new data, by its deadline, or by shutdown,
/// whichever claims it first.
final class ReadWaiter: Sendable {
    let request: ReadRequest
    let from: Offset
    private let completion: Mutex<(@Sendable (Result<ReadResult, BrokerError>) -> Void)?>

    init(request: ReadRequest, from: Offset, completion: @escaping @Sendable (Result<ReadResult, BrokerError>) -> Void) {
        self.request = request
        self.from = from
        self.completion = Mutex(completion)
    }

    /// Takes the completion; nil if someone else already answered.
    func claim() -> (@Sendable (Result<ReadResult, BrokerError>) -> Void)? {
        completion.withLock { c in
            defer { c = nil }
            return c
        }
    }
}

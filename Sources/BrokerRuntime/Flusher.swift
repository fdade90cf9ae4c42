import BrokerModel
import Dispatch
import Foundation
import LogStorage
import Synchronization

/// Group commit. One thread fsyncs every partition that has unflushed appends; appends that arrive
/// while an fsync runs are covered by the next one, so a burst of producers shares a few fsyncs
/// instead of paying one each. After each fsync the partition's high watermark advances, waiting
/// `acks=all` producers are answered and parked readers are woken.
final class Flusher: Sendable {
    private let queue = Mutex<[Partition]>([])
    private let wakeup = DispatchSemaphore(value: 0)
    private let stopping = Atomic<Bool>(false)
    private let stopped = DispatchSemaphore(value: 0)
    let serveWaiter: @Sendable (Partition, ReadWaiter) -> Void

    init(serveWaiter: @escaping @Sendable (Partition, ReadWaiter) -> Void) {
        self.serveWaiter = serveWaiter
    }

    func start() {
        let thread = Thread { [self] in run() }
        thread.name = "petrel-flusher"
        thread.start()
    }

    /// Queues `partition` for a flush round on the flusher thread. Call only when the caller flipped
    /// `isQueuedForFlush` from false to true under the partition lock, so each partition sits in the
    /// queue at most once.
    func enqueue(_ partition: Partition) {
        queue.withLock { $0.append(partition) }
        wakeup.signal()
    }

    /// Stops the thread after it drained the queue.
    func stop() {
        stopping.store(true, ordering: .releasing)
        wakeup.signal()
        stopped.wait()
    }

    private func run() {
        while true {
            wakeup.wait()
            let batch = queue.withLock { q -> [Partition] in
                defer { q.removeAll(keepingCapacity: true) }
                return q
            }
            for partition in batch { flush(partition) }
            if stopping.load(ordering: .acquiring) && queue.withLock({ $0.isEmpty }) { break }
        }
        stopped.signal()
    }

    /// One flush round for `partition`: fsync what is appended (lock released during the fsync),
    /// advance the high watermark, answer the producers and readers it satisfies. Rounds never
    /// overlap on a partition; what a round leaves unflushed it hands to the flusher thread.
    ///
    /// `isLeader`: the caller already set `isFlushing` (a producer flushing inline, see
    /// `Broker.produce`); otherwise this round takes the flag or, if another round runs, does nothing
    /// (that round will hand off what is left).
    func flush(_ partition: Partition, isLeader: Bool = false) {
        let pending = partition.state.withLock { s -> PendingFlush? in
            if !isLeader {
                s.isQueuedForFlush = false
                guard !s.isFlushing else { return nil }
                s.isFlushing = true
            }
            guard s.closedReason == nil, let p = s.log.beginFlush() else {
                s.isFlushing = false
                return nil
            }
            return p
        }
        guard let pending else { return }
        var failure: BrokerError?
        do { try pending.perform() } catch { failure = .storage("fsync of \(partition.topicPartition) failed: \(error)") }

        let (acks, readers, error, handOff) = partition.state.withLock { s -> ([AckWaiter], [ReadWaiter], BrokerError?, Bool) in
            s.isFlushing = false
            if let failure {
                // A failed fsync leaves the file's durable content unknown: stop serving this
                // partition rather than acknowledge anything more (Kafka marks the log dir offline).
                s.closedReason = failure
                let acks = s.ackWaiters
                let readers = s.readWaiters
                s.ackWaiters.removeAll()
                s.readWaiters.removeAll()
                return (acks, readers, failure, false)
            }
            s.log.completeFlush(pending)
            // Appends that arrived during this fsync: the next round is the flusher thread's.
            let handOff = s.log.logEndOffset > s.log.flushedOffset && !s.isQueuedForFlush
            if handOff { s.isQueuedForFlush = true }
            let newHighWatermark = s.log.flushedOffset
            guard newHighWatermark > s.highWatermark else { return ([], [], nil, handOff) }
            s.highWatermark = newHighWatermark
            var done = 0
            while done < s.ackWaiters.count && s.ackWaiters[done].lastOffset < newHighWatermark { done += 1 }
            let acks = Array(s.ackWaiters[0..<done])
            s.ackWaiters.removeFirst(done)
            var readers: [ReadWaiter] = []
            s.readWaiters.removeAll { w in
                if w.from < newHighWatermark {
                    readers.append(w)
                    return true
                }
                return false
            }
            return (acks, readers, nil, handOff)
        }
        if handOff { enqueue(partition) }
        if let error {
            for a in acks { a.tracker.fail(error) }
            for r in readers { r.claim()?(.failure(error)) }
            return
        }
        for a in acks { a.tracker.partitionDurable() }
        for r in readers { serveWaiter(partition, r) }
    }
}

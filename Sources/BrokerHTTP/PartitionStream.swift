import BrokerModel
import BrokerRuntime
import Dispatch
import MicroHTTP
import Synchronization

/// A partition read pushed to the client as it grows: Server-Sent Events (`Accept: text/event-stream`)
/// or chunked NDJSON (`Accept: application/x-ndjson`). A stream is the long-poll read, repeated:
///
/// 1. read from `next` with `wait_ms = batch_flush_timeout` (returns as soon as a record is committed);
/// 2. render: SSE sends one `record` event per record, `id:` = its offset, so `Last-Event-ID` resumes
///    right after it; NDJSON sends one line per read, `{"records":[...],"next_offset":...}`;
///    an empty read sends a keep-alive (an SSE comment, or an NDJSON line with no records);
/// 3. wait until the client has taken the bytes down to half the stream buffer (`whenDrained`), so a
///    client that stops reading holds at most one buffer of memory and no thread;
/// 4. stop at `stream_limit` records or after `stream_timeout` seconds, or when the client leaves.
///
/// Every step runs on a Dispatch worker; no thread waits on the client or on new data.
final class PartitionStream: Sendable {
    enum Kind: Sendable { case sse, ndjson }

    struct Settings: Sendable {
        var batchLimit: Int
        var batchMaxBytes: Int
        var flushTimeoutMilliseconds: Int
        /// 0 = no limit.
        var streamTimeoutMilliseconds: Int
        /// 0 = no limit.
        var streamLimit: Int
        var format: ValueFormat
    }

    let broker: Broker
    let topic: TopicName
    let partition: PartitionID
    let kind: Kind
    let settings: Settings
    let stream: ResponseStream
    let bufferBytes: Int
    let deadline: DispatchTime?
    private let position: Mutex<(next: OffsetSpec, delivered: Int)>

    init(broker: Broker, topic: TopicName, partition: PartitionID, start: OffsetSpec, kind: Kind, settings: Settings,
         stream: ResponseStream, bufferBytes: Int) {
        self.broker = broker
        self.topic = topic
        self.partition = partition
        self.kind = kind
        self.settings = settings
        self.stream = stream
        self.bufferBytes = bufferBytes
        self.deadline = settings.streamTimeoutMilliseconds > 0 ? .now() + .milliseconds(settings.streamTimeoutMilliseconds) : nil
        position = Mutex((start, 0))
    }

    func start() {
        if kind == .sse {
            // Tell EventSource clients to reconnect after 1 s; they resend the last id they saw.
            stream.write(Array("retry: 1000\n\n".utf8))
        }
        pump()
    }

    private func pump() {
        guard !stream.isClosed else { return }
        let (next, delivered) = position.withLock { $0 }
        var wait = settings.flushTimeoutMilliseconds
        if let deadline {
            let now = DispatchTime.now()
            guard now < deadline else { return finish() }
            wait = min(wait, Int((deadline.uptimeNanoseconds - now.uptimeNanoseconds) / 1_000_000))
        }
        var limit = settings.batchLimit
        if settings.streamLimit > 0 {
            guard delivered < settings.streamLimit else { return finish() }
            limit = min(limit, settings.streamLimit - delivered)
        }
        let request = ReadRequest(topic: topic, partition: partition, offset: next, maxRecords: limit,
                                  maxBytes: settings.batchMaxBytes, waitMilliseconds: max(wait, 0))
        broker.read(request) { [self] result in
            // Never continue inside the completion: it may run synchronously, and a long catch-up
            // would otherwise recurse once per batch.
            DispatchQueue.global().async { self.deliver(result) }
        }
    }

    private func deliver(_ result: Result<ReadResult, BrokerError>) {
        let read: ReadResult
        switch result {
        case .failure(.shuttingDown):
            return finish()
        case .failure(let error):
            write(errorEvent(error))
            return finish()
        case .success(let r):
            read = r
        }
        var bytes: [UInt8]
        var count = 0
        var next = read.nextOffset
        do {
            (bytes, count, next) = try render(read)
        } catch {
            write(errorEvent(.storage("a stored batch could not be decoded: \(error)")))
            return finish()
        }
        if count == 0 { bytes = keepAlive(read) }
        position.withLock {
            $0.next = .exact(next)
            $0.delivered += count
        }
        send(bytes) { [self] in
            stream.whenDrained(below: bufferBytes / 2) { [self] in pump() }
        }
    }

    private func send(_ bytes: [UInt8], then next: @escaping @Sendable () -> Void) {
        stream.send(bytes, then: next) { [self] in
            // Larger than the whole buffer: the service sizes batchMaxBytes so this cannot happen.
            write(errorEvent(.payloadTooLarge("one batch is larger than the stream buffer; lower max_bytes")))
            finish()
        }
    }

    private func write(_ bytes: [UInt8]) { _ = stream.write(bytes) }

    private func finish() { stream.finish() }

    /// Renders what one read returned, cut at half the stream buffer so one answer always fits.
    private func render(_ read: ReadResult) throws(DecodeError) -> (bytes: [UInt8], count: Int, next: Offset) {
        let budget = bufferBytes / 2
        switch kind {
        case .ndjson:
            var (bytes, count, next) = try Render.read(read, format: settings.format, byteBudget: budget)
            bytes.append(0x0A)
            return (bytes, count, next)
        case .sse:
            var w = JSONWriter(capacity: min(read.batches.reduce(0) { $0 + $1.sizeBytes } * 2, budget + 4096))
            var count = 0
            var next = read.nextOffset
            try read.forEachRecordView { (r: RecordView) throws(DecodeError) -> Bool in
                w.raw("id: ")
                w.int(r.offset.rawValue)
                w.raw("\nevent: record\ndata: ")
                try Render.record(r, format: settings.format, into: &w)
                w.raw("\n\n")
                count += 1
                if w.bytes.count >= budget {
                    next = r.offset + 1
                    return false
                }
                return true
            }
            return (w.bytes, count, next)
        }
    }

    private func keepAlive(_ read: ReadResult) -> [UInt8] {
        switch kind {
        case .sse:
            return Array(": keep-alive next_offset=\(read.nextOffset) high_watermark=\(read.highWatermark)\n\n".utf8)
        case .ndjson:
            var bytes = (try? Render.read(read, format: settings.format)) ?? []
            bytes.append(0x0A)
            return bytes
        }
    }

    private func errorEvent(_ error: BrokerError) -> [UInt8] {
        switch kind {
        case .sse: Array("event: error\ndata: ".utf8) + Render.error(error) + Array("\n\n".utf8)
        case .ndjson: Render.error(error) + [0x0A]
        }
    }
}

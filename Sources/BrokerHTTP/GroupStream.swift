import BrokerModel
import BrokerRuntime
import Dispatch
import MicroHTTP
import Synchronization

/// A group member's poll pushed to the client as records arrive: Server-Sent Events or chunked
/// NDJSON on `GET /v1/groups/{group}/members/{member}/records`. The stream is the member's
/// long-poll, repeated (so it keeps the member alive, auto-commits as polls do and follows
/// rebalances):
///
/// - SSE: one `record` event per record; its `id:` is the stream's cursor — every partition's next
///   offset after what this stream delivered (`topic/partition/offset,...`). An EventSource that
///   reconnects sends it back as `Last-Event-ID` and the member resumes exactly after that event
///   (if its session is still alive; otherwise it joins again and starts at the committed offsets).
///   A rebalance sends a `rebalance` event with the new generation and assignment.
/// - NDJSON: one line per poll, the same object a plain poll answers.
/// - `max_uncommitted` (Nakadi's max_uncommitted_events): once this many delivered records are
///   not yet committed, the stream stops polling (it only heartbeats, sending keep-alives) until
///   the client commits.
/// - Backpressure as in `PartitionStream`: after each write the stream waits until the client has
///   taken the buffer down to half; a client that stops reading holds one buffer and no thread.
final class GroupStream: Sendable {
    struct Settings: Sendable {
        var kind: PartitionStream.Kind
        var batchLimit: Int
        var batchMaxBytes: Int
        var flushTimeoutMilliseconds: Int
        var streamTimeoutMilliseconds: Int
        var streamLimit: Int
        var maxUncommitted: Int
        var format: ValueFormat
    }

    let broker: Broker
    let group: GroupID
    let member: MemberID
    let settings: Settings
    let stream: ResponseStream
    let deadline: DispatchTime?
    /// `cursor`: next offset per partition after what this stream delivered; `first`: the first offset
    /// it delivered per partition (where its uncommitted records start when nothing is committed).
    private let progress = Mutex<(cursor: [TopicPartition: Offset], first: [TopicPartition: Offset], delivered: Int, generation: Int32?)>(([:], [:], 0, nil))

    init(broker: Broker, group: GroupID, member: MemberID, settings: Settings, stream: ResponseStream) {
        self.broker = broker
        self.group = group
        self.member = member
        self.settings = settings
        self.stream = stream
        deadline = settings.streamTimeoutMilliseconds > 0 ? .now() + .milliseconds(settings.streamTimeoutMilliseconds) : nil
    }

    /// `Last-Event-ID` as a cursor: `topic/partition/offset` entries separated by commas.
    static func parseCursor(_ text: String) -> [MemberSeek]? {
        var out: [MemberSeek] = []
        for entry in text.split(separator: ",") {
            let parts = entry.split(separator: "/")
            guard parts.count == 3, let topic = TopicName(String(parts[0])), let p = Int32(parts[1]), p >= 0, let o = Int64(parts[2]), o >= 0 else { return nil }
            out.append(MemberSeek(partition: TopicPartition(topic, PartitionID(p)), position: .offset(Offset(o))))
        }
        return out.count <= 10_000 ? out : nil
    }

    static func cursorText(_ cursor: [TopicPartition: Offset]) -> String {
        cursor.sorted { ($0.key.topic, $0.key.partition) < ($1.key.topic, $1.key.partition) }
            .map { "\($0.key.topic.rawValue)/\($0.key.partition.rawValue)/\($0.value.rawValue)" }.joined(separator: ",")
    }

    func start(resumeFrom seeks: [MemberSeek]) {
        if settings.kind == .sse { _ = stream.write(Array("retry: 1000\n\n".utf8)) }
        guard !seeks.isEmpty else { return pump() }
        // Positions on partitions the member no longer owns are refused; resume what still applies.
        broker.seekMember(group, member: member, positions: seeks) { [self] result in
            if case .failure(.unknownMember(let m)) = result { return fail(.unknownMember(m)) }
            progress.withLock { p in
                for s in seeks { if case .offset(let o) = s.position { p.cursor[s.partition] = o } }
            }
            DispatchQueue.global().async { self.pump() }
        }
    }

    private func pump() {
        guard !stream.isClosed else { return }
        var wait = settings.flushTimeoutMilliseconds
        if let deadline {
            let now = DispatchTime.now()
            guard now < deadline else { return stream.finish() }
            wait = min(wait, Int((deadline.uptimeNanoseconds - now.uptimeNanoseconds) / 1_000_000))
        }
        let delivered = progress.withLock { $0.delivered }
        var limit = settings.batchLimit
        if settings.streamLimit > 0 {
            guard delivered < settings.streamLimit else { return stream.finish() }
            limit = min(limit, settings.streamLimit - delivered)
        }
        guard settings.maxUncommitted > 0 else { return poll(limit: limit, wait: wait) }
        let (pollLimit, pollWait) = (limit, wait)
        uncommitted { [self] count in
            guard let count else { return }
            if count >= settings.maxUncommitted {
                // Paused until the client commits: stay alive, say so, look again after the wait.
                broker.heartbeat(group, member: member) { [self] result in
                    if case .failure(let e) = result { return fail(e) }
                    send(keepAlive("paused: \(count) records delivered and not committed (max_uncommitted=\(settings.maxUncommitted))")) { [self] in
                        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(min(pollWait, 1_000))) { self.pump() }
                    }
                }
            } else {
                poll(limit: min(pollLimit, settings.maxUncommitted - count), wait: pollWait)
            }
        }
    }

    /// Records this stream delivered beyond the member's committed offsets (nil: the stream ended).
    private func uncommitted(_ completion: @escaping @Sendable (Int?) -> Void) {
        broker.groupOffsets(group, member: member, partitions: nil) { [self] result in
            switch result {
            case .failure(let e):
                fail(e)
                completion(nil)
            case .success(let offsets):
                var committed: [TopicPartition: Offset] = [:]
                for o in offsets { if let x = o.offset { committed[o.partition] = x } }
                let (cursor, first) = progress.withLock { ($0.cursor, $0.first) }
                var total: Int64 = 0
                for (tp, next) in cursor {
                    let start = max(committed[tp] ?? .zero, first[tp] ?? next)
                    if start < next { total += next - start }
                }
                completion(Int(clamping: total))
            }
        }
    }

    private func poll(limit: Int, wait: Int) {
        let request = GroupPollRequest(group: group, member: member, maxRecords: max(limit, 1), maxBytes: settings.batchMaxBytes, waitMilliseconds: max(wait, 0))
        broker.pollGroup(request) { [self] result in
            // Never continue inside the completion (it may run synchronously).
            DispatchQueue.global().async { self.deliver(result) }
        }
    }

    private func deliver(_ result: Result<GroupPollResult, BrokerError>) {
        let poll: GroupPollResult
        switch result {
        case .failure(.shuttingDown): return stream.finish()
        case .failure(let e): return fail(e)
        case .success(let r): poll = r
        }
        var bytes: [UInt8]
        var count = 0
        do {
            (bytes, count) = try render(poll)
        } catch {
            return fail(.storage("a stored batch could not be decoded: \(error)"))
        }
        if count == 0 && bytes.isEmpty { bytes = keepAlive("no new records") }
        send(bytes) { [self] in
            stream.whenDrained(below: settings.batchMaxBytes) { [self] in pump() }
        }
    }

    private func render(_ poll: GroupPollResult) throws(DecodeError) -> ([UInt8], Int) {
        let rebalanced = progress.withLock { p -> Bool in
            defer { p.generation = poll.membership.generation }
            guard let old = p.generation, old != poll.membership.generation else { return false }
            // Partitions that moved away leave the cursor (their progress belongs to the new owner).
            let owned = Set(poll.membership.assignment)
            p.cursor = p.cursor.filter { owned.contains($0.key) }
            p.first = p.first.filter { owned.contains($0.key) }
            return true
        }
        switch settings.kind {
        case .ndjson:
            var bytes = try Render.groupPoll(poll, format: settings.format)
            bytes.append(0x0A)
            let count = poll.reads.reduce(0) { $0 + Int($1.nextOffset - $1.fromOffset) }
            progress.withLock { p in
                for r in poll.reads {
                    let tp = TopicPartition(r.topic, r.partition)
                    if p.first[tp] == nil { p.first[tp] = r.fromOffset }
                    p.cursor[tp] = r.nextOffset
                }
                p.delivered += count
            }
            return (bytes, count)
        case .sse:
            var w = JSONWriter(capacity: 256 + poll.reads.reduce(0) { $0 + $1.batches.reduce(0) { $0 + $1.sizeBytes } } * 2)
            if rebalanced {
                w.raw("event: rebalance\ndata: ")
                w.raw(Render.membership(poll.membership))
                w.raw("\n\n")
            }
            var count = 0
            for read in poll.reads {
                let tp = TopicPartition(read.topic, read.partition)
                try read.forEachRecordView { (r: RecordView) throws(DecodeError) -> Bool in
                    let cursor = progress.withLock { p -> String in
                        if p.first[tp] == nil { p.first[tp] = r.offset }
                        p.cursor[tp] = r.offset + 1
                        p.delivered += 1
                        return Self.cursorText(p.cursor)
                    }
                    w.raw("id: ")
                    w.raw(Array(cursor.utf8))
                    w.raw("\nevent: record\ndata: ")
                    try Render.record(r, format: settings.format, from: (read.topic, read.partition), into: &w)
                    w.raw("\n\n")
                    count += 1
                    return true
                }
                // Offsets the read skipped (control batches) move the cursor too.
                progress.withLock { $0.cursor[tp] = read.nextOffset }
            }
            return (w.bytes, count)
        }
    }

    private func keepAlive(_ why: String) -> [UInt8] {
        switch settings.kind {
        case .sse: return Array(": keep-alive \(why)\n\n".utf8)
        case .ndjson:
            var w = JSONWriter(capacity: 64)
            w.raw("{\"records\":[],\"status\":")
            w.string(why)
            w.raw("}\n")
            return w.bytes
        }
    }

    private func send(_ bytes: [UInt8], then next: @escaping @Sendable () -> Void) {
        stream.send(bytes, then: next) { [self] in fail(.payloadTooLarge("one poll is larger than the stream buffer; lower max_bytes")) }
    }

    private func fail(_ error: BrokerError) {
        let bytes: [UInt8] = switch settings.kind {
        case .sse: Array("event: error\ndata: ".utf8) + Render.error(error) + Array("\n\n".utf8)
        case .ndjson: Render.error(error) + [0x0A]
        }
        _ = stream.write(bytes)
        stream.finish()
    }
}

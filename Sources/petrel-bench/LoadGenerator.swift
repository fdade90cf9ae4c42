import Glibc
import Synchronization

/// Closed-loop load: `connections` keep-alive connections, each with one request in flight, driven
/// by `threads` poll loops (not one thread per connection: 32 blocking threads on 2 cores would
/// spend the box on context switches). Every response must be 2xx with a Content-Length body.
struct LoadResult: Sendable {
    var completed: Int
    var failed: Int
    var seconds: Double
    var clientCPUSeconds: Double
    var latenciesMilliseconds: [Double]
    var firstFailure: String?

    var requestsPerSecond: Double { Double(completed) / seconds }
}

enum LoadGenerator {
    static func run(endpoint: Endpoint, request: RequestBytes, connections: Int, threads: Int, seconds: Double) throws -> LoadResult {
        precondition(connections >= threads && threads >= 1, "need at least one connection per thread")
        // Connect everything first: connection setup is not part of the measured rate.
        var sockets: [[Int32]] = Array(repeating: [], count: threads)
        for i in 0..<connections { sockets[i % threads].append(try endpoint.connectSocket(nonBlocking: true)) }
        let collected = Mutex<[LoopResult]>([])
        let cpuBefore = processCPUSeconds()
        let start = monotonicNanoseconds()
        let deadline = start + UInt64(seconds * 1e9)
        let group = ThreadGroup()
        for t in 0..<threads {
            let mine = sockets[t]
            group.spawn {
                let result = EventLoop(sockets: mine, request: request, deadline: deadline).run()
                collected.withLock { $0.append(result) }
            }
        }
        group.join()
        let elapsed = Double(monotonicNanoseconds() - start) / 1e9
        let cpu = processCPUSeconds() - cpuBefore
        for list in sockets { for fd in list { close(fd) } }
        let results = collected.withLock { $0 }
        var total = LoadResult(completed: 0, failed: 0, seconds: min(elapsed, seconds), clientCPUSeconds: cpu, latenciesMilliseconds: [])
        for r in results {
            total.completed += r.completed
            total.failed += r.failed
            total.latenciesMilliseconds += r.latencies
            if total.firstFailure == nil { total.firstFailure = r.firstFailure }
        }
        return total
    }

    struct LoopResult: Sendable {
        var completed = 0
        var failed = 0
        var latencies: [Double] = []
        var firstFailure: String?
    }

    /// One poll loop over a few connections. Requests are counted when their response completes
    /// before the deadline; after it, the loop stops sending and drains what is in flight.
    final class EventLoop {
        struct Connection {
            var fd: Int32
            var buffer: [UInt8]
            var filled = 0
            var sentAt: UInt64 = 0
            var sendOffset = 0
            var isOpen = true
            /// A request was sent (or is being sent) and its response has not completed.
            var isAwaiting = false
        }

        var connections: [Connection]
        let request: [UInt8]
        let deadline: UInt64
        var result = LoopResult()
        /// poll(2), not epoll: Glibc's Swift module does not export sys/epoll.h, and for a few dozen
        /// descriptors the difference is a few hundred nanoseconds per call.
        var pollSet: [pollfd] = []
        var awaitingCount = 0

        init(sockets: [Int32], request: RequestBytes, deadline: UInt64) {
            connections = sockets.map { Connection(fd: $0, buffer: [UInt8](repeating: 0, count: 16 * 1024)) }
            self.request = request.bytes
            self.deadline = deadline
            result.latencies.reserveCapacity(200_000)
        }

        func run() -> LoopResult {
            pollSet = connections.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
            for index in connections.indices { sendRequest(index) }
            while awaitingCount > 0 {
                let n = pollSet.withUnsafeMutableBufferPointer { poll($0.baseAddress!, nfds_t($0.count), 100) }
                if n < 0 && errno != EINTR { break }
                // Long after the deadline something hangs: give up on what is left.
                if monotonicNanoseconds() > deadline + 5_000_000_000 {
                    if result.firstFailure == nil { result.firstFailure = "\(awaitingCount) responses never came" }
                    break
                }
                if n <= 0 { continue }
                for index in pollSet.indices where pollSet[index].revents != 0 {
                    let events = Int32(pollSet[index].revents)
                    pollSet[index].revents = 0
                    guard connections[index].isOpen else { continue }
                    if events & Int32(POLLOUT) != 0 { sendRequest(index) }
                    if events & Int32(POLLIN | POLLHUP | POLLERR) != 0, readAvailable(index), monotonicNanoseconds() <= deadline {
                        sendRequest(index)
                    }
                }
            }
            return result
        }

        private func sendRequest(_ index: Int) {
            if connections[index].sendOffset == 0 {
                connections[index].sentAt = monotonicNanoseconds()
                if !connections[index].isAwaiting {
                    connections[index].isAwaiting = true
                    awaitingCount += 1
                }
            }
            let fd = connections[index].fd
            let offset = connections[index].sendOffset
            let n = request.withUnsafeBytes { raw in
                Glibc.send(fd, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
            }
            if n < 0 && errno != EAGAIN && errno != EINTR {
                fail(index, "send: \(String(cString: strerror(errno)))")
                return
            }
            let sent = max(0, n)
            if offset + sent < request.count {
                // Rare for a few hundred bytes; wait until the socket takes the rest.
                connections[index].sendOffset = offset + sent
                pollSet[index].events = Int16(POLLIN | POLLOUT)
            } else if offset > 0 {
                connections[index].sendOffset = 0
                pollSet[index].events = Int16(POLLIN)
            }
        }

        /// Reads what is there; true when a whole response has arrived (and was counted).
        private func readAvailable(_ index: Int) -> Bool {
            let fd = connections[index].fd
            if connections[index].filled == connections[index].buffer.count {
                connections[index].buffer.append(contentsOf: [UInt8](repeating: 0, count: connections[index].buffer.count))
            }
            let filled = connections[index].filled
            let n = connections[index].buffer.withUnsafeMutableBytes { raw in
                recv(fd, raw.baseAddress! + filled, raw.count - filled, 0)
            }
            if n == 0 {
                fail(index, "server closed the connection")
                return false
            }
            if n < 0 {
                if errno != EAGAIN && errno != EINTR { fail(index, "recv: \(String(cString: strerror(errno)))") }
                return false
            }
            connections[index].filled += n
            let parsed: ResponseHead?
            do {
                parsed = try connections[index].buffer.withUnsafeBytes { raw in
                    try ResponseParsing.head(UnsafeRawBufferPointer(rebasing: raw[0..<connections[index].filled]))
                }
            } catch {
                fail(index, "\(error)")
                return false
            }
            guard let head = parsed else { return false }
            guard case .length(let bodyLength) = head.framing else {
                fail(index, "chunked response: the req/s client handles Content-Length bodies only")
                return false
            }
            let total = head.headLength + bodyLength
            guard connections[index].filled >= total else { return false }
            // Closed-loop client: one request in flight, so nothing may follow the response.
            guard connections[index].filled == total else {
                fail(index, "\(connections[index].filled - total) unexpected bytes after a response")
                return false
            }
            connections[index].filled = 0
            connections[index].isAwaiting = false
            awaitingCount -= 1
            let done = monotonicNanoseconds()
            if done <= deadline {
                if head.status >= 200 && head.status < 300 {
                    result.completed += 1
                    result.latencies.append(Double(done - connections[index].sentAt) / 1e6)
                } else {
                    result.failed += 1
                    if result.firstFailure == nil { result.firstFailure = "HTTP \(head.status)" }
                }
            }
            if head.closes {
                fail(index, "server closed the keep-alive connection (Connection: close)")
                return false
            }
            return true
        }

        private func fail(_ index: Int, _ reason: String) {
            if result.firstFailure == nil { result.firstFailure = reason }
            if connections[index].isOpen {
                connections[index].isOpen = false
                result.failed += 1
                pollSet[index].fd = -1  // poll ignores negative descriptors
            }
            if connections[index].isAwaiting {
                connections[index].isAwaiting = false
                awaitingCount -= 1
            }
        }
    }
}

/// Threads we can wait for (Foundation's Thread has no join).
final class ThreadGroup: @unchecked Sendable {
    // Only touched by the thread that spawns and joins.
    private var threads: [pthread_t] = []

    final class Box {
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }

    func spawn(_ body: @escaping @Sendable () -> Void) {
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { raw in
            let box = Unmanaged<ThreadGroup.Box>.fromOpaque(raw!).takeRetainedValue()
            box.body()
            return nil
        }, box)
        precondition(rc == 0, "pthread_create failed: \(rc)")
        threads.append(thread)
    }

    func join() {
        for thread in threads { pthread_join(thread, nil) }
        threads.removeAll()
    }
}

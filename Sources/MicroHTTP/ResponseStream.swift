import CMicroHTTPD
import Synchronization

/// The body of a streaming response (chunked encoding): Server-Sent Events, NDJSON. Thread-safe; write
/// from any thread. Bytes wait in a bounded buffer until libmicrohttpd sends them; when the buffer is
/// empty the connection is suspended (no thread spins or waits) and the next write or ``finish()`` resumes it.
///
/// Client departure: a suspended connection does not notice the client leaving, so the stream learns it
/// at the next send attempt. Write something periodically (an SSE comment line, a heartbeat) to bound
/// how long a dead stream lingers; ``isClosed`` and ``onClose(_:)`` report it.
public final class ResponseStream: Sendable {
    /// What happened to a ``write(_:)``.
    public enum WriteResult: Sendable, Equatable {
        /// Buffered; it will be sent.
        case accepted
        /// Not buffered: it would exceed `bufferBytesMax` (the client reads too slowly). Retry later or give up.
        case bufferFull
        /// Not buffered: the stream is finished, or the client went away.
        case closed
    }

    struct State {
        var buffer: [UInt8] = []
        var readOffset = 0
        var isFinished = false
        /// The response is gone (sent completely, client gone, or never queued).
        var isClosed = false
        /// The content reader suspended the connection and nobody resumed it yet.
        var isSuspended = false
        /// Counted in `ServerCore.Shared.parkedStreamCount` (suspended, or resumed but not read again).
        var isParked = false
        var closeHandlers: [@Sendable () -> Void] = []
        /// Called once the buffer has drained to `threshold` bytes or fewer (or the stream closed).
        var drained: (threshold: Int, handler: @Sendable () -> Void)?
        var pendingBytes: Int { buffer.count - readOffset }
    }

    /// Both nil for a stream detached from any connection (``ResponseRecorder``); never nil when MHD reads it.
    let core: ServerCore?
    let connection: ConnectionHandle?
    let bufferBytesMax: Int
    /// Lock order: `core.shared` before `state`.
    let state = Mutex(State())

    init(core: ServerCore?, connection: ConnectionHandle?, bufferBytesMax: Int) {
        self.core = core
        self.connection = connection
        self.bufferBytesMax = bufferBytesMax
    }

    /// Queues bytes for sending; never blocks.
    @discardableResult
    public func write(_ bytes: [UInt8]) -> WriteResult {
        let (result, resume): (WriteResult, Bool) = state.withLock { state in
            if state.isClosed || state.isFinished { return (.closed, false) }
            if state.pendingBytes + bytes.count > bufferBytesMax { return (.bufferFull, false) }
            state.buffer += bytes
            return (.accepted, takeResume(&state))
        }
        if resume, let connection { MHD_resume_connection(connection.pointer) }
        return result
    }

    /// Ends the body once the buffered bytes are sent. Idempotent.
    public func finish() {
        let resume = state.withLock { state in
            state.isFinished = true
            return takeResume(&state)
        }
        if resume, let connection { MHD_resume_connection(connection.pointer) }
    }

    /// True once the response is over: fully sent after ``finish()``, or the client went away.
    public var isClosed: Bool { state.withLock { $0.isClosed } }

    /// Bytes written but not yet handed to libmicrohttpd.
    public var pendingBytes: Int { state.withLock { $0.pendingBytes } }

    /// Calls `handler` once when the stream closes (immediately if it already has), on an arbitrary thread.
    public func onClose(_ handler: @escaping @Sendable () -> Void) {
        let runNow = state.withLock { state in
            if state.isClosed { return true }
            state.closeHandlers.append(handler)
            return false
        }
        if runNow { handler() }
    }

    /// Calls `handler` once, when at most `threshold` bytes are still waiting to be sent, or when the
    /// stream closes (immediately if either is already true). This is the producer's backpressure
    /// signal: a streaming endpoint writes until ``write(_:)`` says `.bufferFull` or the buffer is
    /// above its high-water mark, then waits here instead of polling. Runs on an arbitrary thread
    /// (often a libmicrohttpd thread): do little in it. A later call replaces an earlier pending one.
    public func whenDrained(below threshold: Int, _ handler: @escaping @Sendable () -> Void) {
        let runNow = state.withLock { state -> Bool in
            if state.isClosed || state.pendingBytes <= threshold { return true }
            state.drained = (threshold, handler)
            return false
        }
        if runNow { handler() }
    }

    private func takeDrainHandler() -> (@Sendable () -> Void)? {
        state.withLock { state in
            guard let drained = state.drained, state.isClosed || state.pendingBytes <= drained.threshold else { return nil }
            state.drained = nil
            return drained.handler
        }
    }

    /// Resume is needed exactly when the reader suspended and nobody resumed yet.
    private func takeResume(_ state: inout State) -> Bool {
        guard state.isSuspended else { return false }
        state.isSuspended = false
        return true
    }

    /// Takes the buffered bytes (detached streams only: a ``ResponseRecorder`` plays the client).
    func takeBuffered() -> (bytes: [UInt8], isFinished: Bool) {
        let taken = state.withLock { state in
            let bytes = Array(state.buffer[state.readOffset...])
            state.buffer = []
            state.readOffset = 0
            return (bytes, state.isFinished)
        }
        if let drained = takeDrainHandler() { drained() }
        return taken
    }

    func markClosed() {
        let handlers: [@Sendable () -> Void] = state.withLock { state in
            state.isClosed = true
            defer {
                state.closeHandlers = []
                state.drained = nil
            }
            return state.closeHandlers + (state.drained.map { [$0.handler] } ?? [])
        }
        for handler in handlers { handler() }
    }

    // MARK: libmicrohttpd callbacks

    /// Content reader: copy buffered bytes, or end the stream, or suspend the connection and return 0
    /// (returning 0 without suspending would make MHD's thread spin).
    static let reader: MHD_ContentReaderCallback = { cls, _, buffer, max in
        let stream = Unmanaged<ResponseStream>.fromOpaque(cls!).takeUnretainedValue()
        let result = stream.read(into: UnsafeMutableRawPointer(buffer!), max: max)
        if result > 0, let drained = stream.takeDrainHandler() { drained() }
        return result
    }

    static let released: MHD_ContentReaderFreeCallback = { cls in
        let stream = Unmanaged<ResponseStream>.fromOpaque(cls!).takeRetainedValue()
        stream.core!.shared.withLock { shared in
            shared.streams.removeValue(forKey: ObjectIdentifier(stream))
            stream.state.withLock { state in
                if state.isParked {
                    state.isParked = false
                    shared.parkedStreamCount -= 1
                }
            }
        }
        stream.markClosed()
    }

    private func read(into destination: UnsafeMutableRawPointer, max: Int) -> Int {
        func copy(_ state: inout State) -> Int? {
            let count = min(state.pendingBytes, max)
            if count > 0 {
                state.buffer.withUnsafeBytes {
                    destination.copyMemory(from: $0.baseAddress! + state.readOffset, byteCount: count)
                }
                state.readOffset += count
                if state.readOffset == state.buffer.count {
                    state.buffer.removeAll(keepingCapacity: state.buffer.capacity <= 64 * 1024)
                    state.readOffset = 0
                }
                return count
            }
            if state.isFinished { return cmhd_content_reader_end_of_stream() }
            return nil
        }
        // Fast path without the server lock, unless this read follows a resume (the parked count must drop).
        let quick: Int? = state.withLock { state in state.isParked ? nil : copy(&state) }
        if let quick { return quick }
        return core!.shared.withLock { shared in
            state.withLock { state in
                if state.isParked {
                    state.isParked = false
                    shared.parkedStreamCount -= 1
                }
                if let copied = copy(&state) { return copied }
                if shared.isStopping {
                    // stop() is draining: never suspend again, end the body instead.
                    state.isFinished = true
                    return cmhd_content_reader_end_of_stream()
                }
                MHD_suspend_connection(connection!.pointer)
                state.isSuspended = true
                state.isParked = true
                shared.parkedStreamCount += 1
                return 0
            }
        }
    }
}

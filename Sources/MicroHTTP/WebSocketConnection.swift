import CMicroHTTPD
import Synchronization
import WebSocketCodec

/// libmicrohttpd's handle of an upgraded connection. Not Sendable as an `OpaquePointer`; this wrapper is,
/// because it is used once, for `MHD_upgrade_action(CLOSE)`, by the event loop's teardown.
struct UpgradeHandle: @unchecked Sendable {
    let pointer: OpaquePointer
}

/// One open WebSocket, usable from any thread. Sends never block: frames go to the socket at once when the
/// kernel takes them, otherwise into a bounded per-socket buffer flushed by the event loop when the
/// socket becomes writable. A client that stops reading until that buffer would exceed
/// ``WebSocketLimits/sendBufferBytesMax`` is closed with 1008 rather than growing memory.
public final class WebSocketConnection: Sendable {
    /// What happened to a send.
    public enum SendResult: Sendable, Equatable {
        /// Sent or buffered.
        case accepted
        /// Not sent: it would have exceeded the send buffer. The socket is now closing (1008).
        case bufferFull
        /// Not sent: the socket is closing or closed.
        case closed
    }

    enum Phase: Equatable {
        case open
        /// A close frame is queued (by the server); data is no longer sent, the peer's close is awaited.
        case closing(since: Double)
        /// The peer closed or the protocol failed: our close frame is queued, teardown follows the flush.
        case closingAfterFlush(since: Double)
        case tornDown
    }

    struct State {
        var outbound: [UInt8] = []
        var sentOffset = 0
        var phase = Phase.open
        var isWatchingWritable = false
        /// The close code to report when the server initiated the close.
        var localClose: (code: WebSocketCloseCode, reason: String)?
        var drained: (threshold: Int, handler: @Sendable () -> Void)?
        var pendingBytes: Int { outbound.count - sentOffset }
    }

    let fd: Int32
    let upgradeHandle: UpgradeHandle
    let loop: WebSocketLoop
    public let limits: WebSocketLimits
    /// The request that was upgraded (path, query, headers), for the application's bookkeeping.
    public let request: HTTPRequest
    /// The subprotocol agreed in the handshake, if any.
    public let subprotocol: String?
    /// Lock order: taken alone (never while holding the loop's lock).
    let state = Mutex(State())

    init(
        fd: Int32, upgradeHandle: UpgradeHandle, loop: WebSocketLoop, limits: WebSocketLimits, request: HTTPRequest,
        subprotocol: String?
    ) {
        self.fd = fd
        self.upgradeHandle = upgradeHandle
        self.loop = loop
        self.limits = limits
        self.request = request
        self.subprotocol = subprotocol
    }

    /// Sends a text message (one frame).
    @discardableResult
    public func send(text: String) -> SendResult { sendData(.text, Array(text.utf8)) }

    /// Sends a binary message (one frame).
    @discardableResult
    public func send(binary: [UInt8]) -> SendResult { sendData(.binary, binary) }

    /// Starts the closing handshake: sends a close frame and stops sending data; the connection is dropped
    /// when the client answers, or after ``WebSocketLimits/closeTimeoutSeconds``. Idempotent.
    public func close(code: WebSocketCloseCode = .normalClosure, reason: String = "") {
        precondition(code.isValidOnWire, "close code \(code.rawValue) may not be sent")
        let drained: (@Sendable () -> Void)? = state.withLock { state in
            guard state.phase == .open else { return nil }
            queueControlLocked(&state, .close, WebSocketClose(code: code, reason: reason).encoded())
            state.phase = .closing(since: WebSocketLoop.now())
            state.localClose = (code, reason)
            return flushLocked(&state)
        }
        drained?()
    }

    /// Bytes queued and not yet taken by the kernel.
    public var bufferedBytes: Int { state.withLock { $0.pendingBytes } }

    /// True once closing started (either side) or the socket is gone: sends are refused.
    public var isClosed: Bool { state.withLock { $0.phase != .open } }

    /// Calls `handler` once, when at most `threshold` bytes wait in the send buffer or the socket closes
    /// (immediately if either is already true). A later call replaces a pending one. Runs on an arbitrary
    /// thread (often the event loop): do little in it.
    public func whenDrained(below threshold: Int, _ handler: @escaping @Sendable () -> Void) {
        let runNow = state.withLock { state -> Bool in
            if state.phase == .tornDown || state.pendingBytes <= threshold { return true }
            state.drained = (threshold, handler)
            return false
        }
        if runNow { handler() }
    }

    // MARK: Internals (the loop and the senders)

    private func sendData(_ opcode: WebSocketOpcode, _ payload: [UInt8]) -> SendResult {
        let (result, drained): (SendResult, (@Sendable () -> Void)?) = state.withLock { state in
            guard state.phase == .open else { return (.closed, nil) }
            let headerBytes = payload.count < 126 ? 2 : payload.count <= 0xFFFF ? 4 : 10
            if state.pendingBytes + headerBytes + payload.count > limits.sendBufferBytesMax {
                // The client is not reading. Close rather than grow; the close frame itself may exceed the
                // limit by its few bytes, and the close timeout drops a client that never reads it.
                queueControlLocked(&state, .close, WebSocketClose(code: .policyViolation, reason: "send buffer full").encoded())
                state.phase = .closing(since: WebSocketLoop.now())
                state.localClose = (.policyViolation, "send buffer full")
                return (.bufferFull, flushLocked(&state))
            }
            compactLocked(&state)
            WebSocketFrame.appendHeader(to: &state.outbound, isFinal: true, opcode: opcode, payloadBytes: payload.count)
            state.outbound += payload
            return (.accepted, flushLocked(&state))
        }
        drained?()
        return result
    }

    /// Queues a control frame regardless of the send limit (they are at most 127 bytes).
    func queueControlLocked(_ state: inout State, _ opcode: WebSocketOpcode, _ payload: [UInt8]) {
        compactLocked(&state)
        state.outbound += WebSocketFrame(opcode: opcode, payload: payload).serialized()
    }

    /// Drops already sent bytes from the front when they are most of the buffer (amortised O(1)).
    private func compactLocked(_ state: inout State) {
        if state.sentOffset > 0 && state.sentOffset * 2 >= state.outbound.count {
            state.outbound.removeFirst(state.sentOffset)
            state.sentOffset = 0
        }
    }

    /// Writes what the kernel takes now; watches EPOLLOUT for the rest. Returns the drain handler to call
    /// (outside the lock) if the buffer went below its threshold.
    func flushLocked(_ state: inout State) -> (@Sendable () -> Void)? {
        guard state.phase != .tornDown else { return nil }
        while state.pendingBytes > 0 {
            let written = state.outbound.withUnsafeBytes {
                cmhd_send_nonblocking(fd, $0.baseAddress! + state.sentOffset, state.pendingBytes)
            }
            if written > 0 {
                state.sentOffset += written
                continue
            }
            // EAGAIN: the kernel buffer is full. Any other error: the loop sees EPOLLERR/HUP and tears down.
            break
        }
        if state.pendingBytes == 0 {
            state.outbound.removeAll(keepingCapacity: state.outbound.capacity <= 64 * 1024)
            state.sentOffset = 0
        }
        let wantsWritable = state.pendingBytes > 0
        if wantsWritable != state.isWatchingWritable {
            state.isWatchingWritable = wantsWritable
            _ = cmhd_epoll_control(loop.epollFD, 3, fd, wantsWritable ? 1 : 0)
        }
        if let drained = state.drained, state.pendingBytes <= drained.threshold {
            state.drained = nil
            return drained.handler
        }
        return nil
    }
}

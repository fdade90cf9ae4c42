import BrokerModel
import CCurl
import Glibc

/// The one client thread: a libcurl multi handle driving every frames POST and call of one
/// ``HTTPPeerTransport``. Connections are kept alive in the multi handle's connection cache and reused
/// across transfers to the same peer.
///
/// Threading: `multi`, `transfers` and `idleHandles` belong to the loop thread alone. Other threads
/// only call ``wakeup()`` — always under the transport's `outgoing` lock and only before it marked
/// itself stopped, so a wakeup can never reach a multi handle already cleaned up (``join()`` cleans
/// up after the thread saw the stop under that same lock).
final class CurlLoop: @unchecked Sendable {
    /// Valid for the thread's whole life: the transport joins the thread in `stop()`, which its
    /// `deinit` calls, before its memory goes away.
    unowned(unsafe) let transport: HTTPPeerTransport
    private let multi: UnsafeMutableRawPointer
    private var thread: pthread_t?
    private var transfers: [Int: Transfer] = [:]
    private var idleHandles: [UnsafeMutableRawPointer] = []
    private static let idleHandlesMax = 64
    private static let globalInit: Void = { curl_global_init(Int(CURL_GLOBAL_ALL)) }()

    init?(transport: HTTPPeerTransport) {
        _ = Self.globalInit
        guard let multi = curl_multi_init() else { return nil }
        self.multi = multi
        self.transport = transport
        ccurl_multi_setopt_long(multi, CURLMOPT_MAX_HOST_CONNECTIONS, transport.limits.connectionsPerPeer)
    }

    func startThread() {
        transport.attach(self)
        var thread = pthread_t()
        let context = Unmanaged.passRetained(self).toOpaque()
        let result = pthread_create(
            &thread, nil,
            { context in
                let loop = Unmanaged<CurlLoop>.fromOpaque(context!).takeRetainedValue()
                loop.run()
                return nil
            }, context)
        precondition(result == 0, "cannot start the peer transport's curl thread: \(result)")
        self.thread = thread
    }

    func wakeup() { curl_multi_wakeup(multi) }

    /// Waits for the thread to end (it ends once it sees the transport stopped), then frees curl.
    func join() {
        if let thread {
            // Joining itself would hang forever: a completion must not stop the transport.
            precondition(pthread_equal(pthread_self(), thread) == 0, "HTTPPeerTransport.stop() called from a call completion")
            pthread_join(thread, nil)
        }
        thread = nil
        for handle in idleHandles { curl_easy_cleanup(handle) }
        idleHandles.removeAll()
        curl_multi_cleanup(multi)
    }

    private func run() {
        var finishedSome = false
        while true {
            let work = transport.takeWork()
            if work.isStopped { break }
            for (peer, address, body, count, sequence) in work.frames {
                let headers = [
                    (HTTPPeerTransport.incarnationHeader, transport.headerValues.incarnation),
                    (HTTPPeerTransport.sequenceHeader, String(sequence)),
                    (HTTPPeerTransport.windowHeader, String(transport.framePostsInFlightPerPeer)),
                ]
                begin(Transfer(kind: .frames(peer: peer, count: count, bytes: body.count), body: body),
                      url: "http://\(address)/internal/v1/frames", extraHeaders: headers,
                      timeoutMilliseconds: transport.limits.defaultTimeout)
            }
            for (call, address) in work.calls {
                transport.callStarted()
                begin(Transfer(kind: .call(call), body: call.body),
                      url: "http://\(address)/internal/v1/call/\(Self.percentEncode(call.method))", extraHeaders: [],
                      timeoutMilliseconds: call.timeoutMilliseconds)
            }
            transport.abandon(work.unreachableCalls, with: .unavailable("peer unreachable: no address known"))

            var running: Int32 = 0
            curl_multi_perform(multi, &running)
            finishedSome = drainFinished()
            // A finished transfer may have freed a slot for queued frames: look again at once.
            let timeout: Int32 = finishedSome ? 0 : work.pollMilliseconds
            curl_multi_poll(multi, nil, 0, timeout, nil)
        }
        // Stopped: every transfer still on the wire is abandoned; calls complete with shuttingDown.
        for (_, transfer) in transfers {
            curl_multi_remove_handle(multi, transfer.handle)
            curl_easy_cleanup(transfer.handle)
            if case .call(let call) = transfer.kind { transport.callFinished(call, .failure(.shuttingDown), reachedPeer: false) }
            transfer.release()
        }
        transfers.removeAll()
        transport.abandon(transport.takeLeftoverCalls(), with: .shuttingDown)
    }

    private func begin(_ transfer: Transfer, url: String, extraHeaders: [(String, String)], timeoutMilliseconds: Int) {
        let handle: UnsafeMutableRawPointer
        if let idle = idleHandles.popLast() {
            curl_easy_reset(idle)
            handle = idle
        } else if let fresh = curl_easy_init() {
            handle = fresh
        } else {
            transfer.release()
            finish(transfer, code: CURLE_OUT_OF_MEMORY, status: 0)
            return
        }
        transfer.handle = handle
        transfer.responseMax = transport.limits.bodyMax
        let ids = transport.headerValues
        var list: UnsafeMutablePointer<curl_slist>?
        let lines = [
            "\(HTTPPeerTransport.nodeHeader): \(ids.node)", "\(HTTPPeerTransport.secretHeader): \(ids.secret)",
            "Content-Type: application/octet-stream", "Expect:",
        ] + extraHeaders.map { "\($0.0): \($0.1)" }
        for line in lines { list = curl_slist_append(list, line) }
        transfer.headers = list
        let context = Unmanaged.passUnretained(transfer).toOpaque()
        ccurl_setopt_string(handle, CURLOPT_URL, url)
        ccurl_setopt_long(handle, CURLOPT_POST, 1)
        ccurl_setopt_long(handle, CURLOPT_NOSIGNAL, 1)
        ccurl_setopt_long(handle, CURLOPT_TCP_NODELAY, 1)
        ccurl_setopt_long(handle, CURLOPT_TIMEOUT_MS, timeoutMilliseconds)
        ccurl_setopt_long(handle, CURLOPT_CONNECTTIMEOUT_MS, min(timeoutMilliseconds, transport.limits.connectTimeout))
        ccurl_setopt_headers(handle, list)
        ccurl_setopt_offset(handle, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(transfer.bodyCount))
        ccurl_setopt_pointer(handle, CURLOPT_POSTFIELDS, transfer.body.baseAddress)
        ccurl_setopt_callback(handle, CURLOPT_WRITEFUNCTION, Self.onBody)
        ccurl_setopt_pointer(handle, CURLOPT_WRITEDATA, context)
        transfers[Int(bitPattern: handle)] = transfer
        curl_multi_add_handle(multi, handle)
    }

    private static let onBody: ccurl_data_callback = { data, size, count, context in
        let transfer = Unmanaged<Transfer>.fromOpaque(context!).takeUnretainedValue()
        let n = size * count
        // A peer may not make this broker buffer more than a body's worth: abort the transfer.
        guard transfer.response.count + n <= transfer.responseMax else { return 0 }
        if n > 0, let data {
            transfer.response.append(contentsOf: UnsafeRawBufferPointer(start: data, count: n))
        }
        return n
    }

    /// Returns whether any transfer finished.
    private func drainFinished() -> Bool {
        var any = false
        var left: Int32 = 0
        while let message = curl_multi_info_read(multi, &left) {
            var handle: UnsafeMutableRawPointer?
            var code = CURLE_OK
            guard ccurl_message_done(message, &handle, &code) == 1, let handle,
                let transfer = transfers.removeValue(forKey: Int(bitPattern: handle))
            else { continue }
            any = true
            let status = ccurl_response_code(handle)
            curl_multi_remove_handle(multi, handle)
            if idleHandles.count < Self.idleHandlesMax { idleHandles.append(handle) } else { curl_easy_cleanup(handle) }
            transfer.release()
            finish(transfer, code: code, status: status)
        }
        return any
    }

    private func finish(_ transfer: Transfer, code: CURLcode, status: Int) {
        let failure: String? =
            code != CURLE_OK ? String(cString: curl_easy_strerror(code)) : nil
        switch transfer.kind {
        case .frames(let peer, let count, let bytes):
            let why = failure ?? (status == 204 ? nil : "answered HTTP \(status)")
            transport.framePostFinished(peer: peer, count: count, bytes: bytes, failure: why)
        case .call(let call):
            if let failure {
                transport.callFinished(call, .failure(.unavailable("peer \(call.peer) unreachable: \(failure)")), reachedPeer: false)
            } else if status == 200 {
                transport.callFinished(call, .success(transfer.response), reachedPeer: true)
            } else if status == 500 {
                var decoded: BrokerError?
                transfer.response.withUnsafeBytes { raw in
                    var reader = ByteReader(raw)
                    if let error = try? BrokerError.decode(from: &reader), reader.remaining == 0 { decoded = error }
                }
                transport.callFinished(
                    call, .failure(decoded ?? .unavailable("peer \(call.peer) answered an undecodable error")), reachedPeer: true)
            } else {
                transport.callFinished(call, .failure(.unavailable("peer \(call.peer) answered HTTP \(status)")), reachedPeer: false)
            }
        }
    }

    /// A method name goes in one path segment: anything but unreserved characters is escaped.
    static func percentEncode(_ s: String) -> String {
        var out = ""
        for byte in s.utf8 {
            let isUnreserved = (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                || byte == 0x2D || byte == 0x2E || byte == 0x5F || byte == 0x7E
            if isUnreserved {
                out.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                let hex = Array("0123456789ABCDEF".utf8)
                out += "%" + String(decoding: [hex[Int(byte >> 4)], hex[Int(byte & 0xF)]], as: UTF8.self)
            }
        }
        return out
    }
}

/// One transfer on the wire. The request body lives in memory of its own: `CURLOPT_POSTFIELDS` does
/// not copy, so the bytes must stay put until the transfer is removed from the multi handle.
final class Transfer {
    enum Kind {
        case frames(peer: NodeID, count: Int, bytes: Int)
        case call(HTTPPeerTransport.PendingCall)
    }
    let kind: Kind
    let body: UnsafeMutableRawBufferPointer
    let bodyCount: Int
    var handle: UnsafeMutableRawPointer!
    var headers: UnsafeMutablePointer<curl_slist>?
    var response: [UInt8] = []
    var responseMax = 0
    private var released = false

    init(kind: Kind, body: [UInt8]) {
        self.kind = kind
        bodyCount = body.count
        // At least one byte so the pointer is never null (curl would then read from a callback).
        self.body = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, body.count), alignment: 1)
        body.withUnsafeBytes { self.body.copyMemory(from: $0) }
    }

    /// Frees what curl no longer uses (call after `curl_multi_remove_handle`).
    func release() {
        guard !released else { return }
        released = true
        body.deallocate()
        curl_slist_free_all(headers)
        headers = nil
    }
}

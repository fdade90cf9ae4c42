import CMicroHTTPD
import Glibc
import Synchronization

/// State shared by the libmicrohttpd callbacks of one server. The daemon's `cls` points here (unretained:
/// ``HTTPServer`` keeps it alive until after `MHD_stop_daemon`).
final class ServerCore: Sendable {
    let configuration: HTTPServerConfiguration
    let handler: HTTPHandler
    let duplicateResponseCount = Atomic<Int>(0)
    /// Serves every upgraded WebSocket (its thread starts with the first upgrade).
    let webSocketLoop: WebSocketLoop

    struct Shared {
        /// Set by stop(): new requests get 503, and a handler returning without an answer gets 503 instead
        /// of being suspended (MHD_stop_daemon aborts the process on a suspended connection).
        var isStopping = false
        /// Requests suspended or resumed-but-not-yet-sent. Empty is the precondition for MHD_stop_daemon.
        var parked: [ObjectIdentifier: RequestContext] = [:]
        /// Streams whose body is not finished sending; stop() finishes them.
        var streams: [ObjectIdentifier: ResponseStream] = [:]
        /// Stream connections suspended by the content reader (or resumed but not yet read again).
        var parkedStreamCount = 0
        var lastLogMessage = ""
    }

    /// Lock order: `shared` before any `RequestContext.phase`.
    let shared = Mutex(Shared())

    init(configuration: HTTPServerConfiguration, handler: @escaping HTTPHandler) {
        self.configuration = configuration
        self.handler = handler
        webSocketLoop = WebSocketLoop(log: configuration.log)
    }

    // MARK: C callbacks (non-capturing, nonisolated)

    static let accessHandler: MHD_AccessHandlerCallback = {
        cls, connection, url, method, _, uploadData, uploadDataSize, requestContext in
        let core = Unmanaged<ServerCore>.fromOpaque(cls!).takeUnretainedValue()
        return core.access(
            connection: ConnectionHandle(pointer: connection!), url: url!, method: method!,
            uploadData: uploadData, uploadDataSize: uploadDataSize!, requestContext: requestContext!)
    }

    static let requestCompleted: MHD_RequestCompletedCallback = { cls, _, requestContext, _ in
        guard let requestContext, let raw = requestContext.pointee else { return }
        requestContext.pointee = nil
        let context = Unmanaged<RequestContext>.fromOpaque(raw).takeRetainedValue()
        context.phase.withLock { $0 = .completed }
        context.upgrade.withLock { $0 }?.requestCompleted()
        let core = Unmanaged<ServerCore>.fromOpaque(cls!).takeUnretainedValue()
        // A parked connection whose client left is completed without re-entering the handler.
        core.shared.withLock { _ = $0.parked.removeValue(forKey: context.identifier) }
    }

    static let logSink: cmhd_log_function = { cls, message in
        let core = Unmanaged<ServerCore>.fromOpaque(cls!).takeUnretainedValue()
        let text = String(cString: message!)
        core.shared.withLock { $0.lastLogMessage = text }
        core.configuration.log(text)
    }

    static let headerCollector: MHD_KeyValueIterator = { cls, _, key, value in
        let list = cls!.assumingMemoryBound(to: [(name: String, value: String)].self)
        list.pointee.append((String(cString: key!), value.map { String(cString: $0) } ?? ""))
        return .YES
    }

    // MARK: Request flow

    private func access(
        connection: ConnectionHandle, url: UnsafePointer<CChar>, method: UnsafePointer<CChar>,
        uploadData: UnsafePointer<CChar>?, uploadDataSize: UnsafeMutablePointer<Int>,
        requestContext: UnsafeMutablePointer<UnsafeMutableRawPointer?>
    ) -> MHD_Result {
        guard let raw = requestContext.pointee else {
            // First call: headers only.
            let context = RequestContext(connection: connection, core: self)
            context.isHead = strcmp(method, "HEAD") == 0
            requestContext.pointee = Unmanaged.passRetained(context).toOpaque()
            if let declared = MHD_lookup_connection_value(connection.pointer, .HEADER_KIND, "Content-Length"),
                let length = Int(String(cString: declared))
            {
                guard length <= configuration.requestBodyBytesMax else {
                    // Refuse before reading (and before "100 Continue"); the unread body forces a close.
                    context.phase.withLock { $0 = .answeredByServer }
                    return queueError(
                        413, "request body larger than \(configuration.requestBodyBytesMax) bytes", on: connection, close: true)
                }
                context.body.reserveCapacity(length)  // bounded by the check above
            }
            return .YES
        }
        let context = Unmanaged<RequestContext>.fromOpaque(raw).takeUnretainedValue()

        let chunkSize = uploadDataSize.pointee
        if chunkSize > 0 {
            uploadDataSize.pointee = 0
            context.bodyBytesSeen += chunkSize
            if context.isBodyTooLarge { return .YES }
            if context.bodyBytesSeen > configuration.requestBodyBytesMax {
                // Drop what we have and discard the rest as it streams; 413 once drained.
                context.isBodyTooLarge = true
                context.body = []
            } else if let uploadData {
                context.body.append(contentsOf: UnsafeRawBufferPointer(start: uploadData, count: chunkSize))
            }
            return .YES
        }

        // Body complete (first final call), or re-entry after a resume.
        let current = context.phase.withLock { $0 }
        switch current {
        case .receiving:
            break
        case .resumed(let answer, let byServer):
            context.phase.withLock { $0 = byServer ? .answeredByServer : .sent }
            shared.withLock { _ = $0.parked.removeValue(forKey: context.identifier) }
            return queue(answer, on: connection, isHead: context.isHead)
        default:
            // Already answered by the server (413 up front): nothing more to do.
            return .YES
        }

        if context.isBodyTooLarge {
            context.phase.withLock { $0 = .answeredByServer }
            return queueError(413, "request body larger than \(configuration.requestBodyBytesMax) bytes", on: connection, close: false)
        }
        if shared.withLock({ $0.isStopping }) {
            context.phase.withLock { $0 = .answeredByServer }
            return queueError(503, "server shutting down", on: connection, close: true)
        }

        let request = makeRequest(connection: connection, url: url, method: method, body: context.body)
        context.body = []
        context.phase.withLock { $0 = .handling }
        handler(request, Responder(context: context))
        return afterHandler(context)
    }

    /// The handler returned: send its answer, or suspend until respond() resumes us. Race-free because
    /// suspending and publishing `.suspended` happen under the same lock respond() takes.
    private func afterHandler(_ context: RequestContext) -> MHD_Result {
        enum Next { case send(Answer), suspended, shuttingDown }
        // Fast path, no server lock: answered synchronously.
        let early: Answer? = context.phase.withLock { phase in
            if case .respondedWhileHandling(let response) = phase {
                phase = .sent
                return response
            }
            return nil
        }
        if let early { return queue(early, on: context.connection, isHead: context.isHead) }

        let next: Next = shared.withLock { shared in
            context.phase.withLock { phase in
                switch phase {
                case .respondedWhileHandling(let response):
                    phase = .sent
                    return .send(response)
                case .handling:
                    if shared.isStopping {
                        phase = .answeredByServer
                        return .shuttingDown
                    }
                    MHD_suspend_connection(context.connection.pointer)
                    phase = .suspended
                    shared.parked[context.identifier] = context
                    return .suspended
                default:
                    preconditionFailure("request left handling in an unexpected phase: \(phase)")
                }
            }
        }
        switch next {
        case .send(let answer): return queue(answer, on: context.connection, isHead: context.isHead)
        case .suspended: return .YES
        case .shuttingDown: return queueError(503, "server shutting down", on: context.connection, close: true)
        }
    }

    private func makeRequest(
        connection: ConnectionHandle, url: UnsafePointer<CChar>, method: UnsafePointer<CChar>, body: [UInt8]
    ) -> HTTPRequest {
        var headers: [(name: String, value: String)] = []
        withUnsafeMutablePointer(to: &headers) {
            _ = MHD_get_connection_values(connection.pointer, .HEADER_KIND, ServerCore.headerCollector, $0)
        }
        // MHD splits the query (identity unescape: values arrive raw); we decode them here.
        var rawQuery: [(name: String, value: String)] = []
        withUnsafeMutablePointer(to: &rawQuery) {
            _ = MHD_get_connection_values(connection.pointer, .GET_ARGUMENT_KIND, ServerCore.headerCollector, $0)
        }
        let query = rawQuery.map {
            (name: PercentDecoding.decode($0.name, plusIsSpace: true), value: PercentDecoding.decode($0.value, plusIsSpace: true))
        }
        var address = [CChar](repeating: 0, count: 64)
        let remote: String? =
            cmhd_connection_client_address(connection.pointer, &address, address.count) == 0
            ? String(decoding: address.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : nil
        return HTTPRequest(
            method: String(cString: method), rawPath: String(cString: url), query: query, headers: headers,
            body: body, remoteAddress: remote)
    }

    // MARK: Responses

    func errorResponse(_ status: Int, _ message: String, close: Bool) -> HTTPResponse {
        let rendered = configuration.errorBody(status, message)
        var headers = [(name: "Content-Type", value: rendered.contentType)]
        if close { headers.append((name: "Connection", value: "close")) }
        return HTTPResponse(status: status, headers: headers, body: rendered.body)
    }

    private func queueError(_ status: Int, _ message: String, on connection: ConnectionHandle, close: Bool) -> MHD_Result {
        queue(errorResponse(status, message, close: close), on: connection)
    }

    private func queue(_ answer: Answer, on connection: ConnectionHandle, isHead: Bool) -> MHD_Result {
        switch answer {
        case .full(let response):
            return queue(response, on: connection)
        case .stream(let status, let headers, let stream) where isHead:
            // MHD 0.9.75 sends the terminating "0" chunk even for HEAD, corrupting keep-alive framing:
            // answer HEAD with the head only, and tell the producer at once that nobody reads the body.
            stream.markClosed()
            return queue(HTTPResponse(status: status, headers: headers), on: connection)
        case .stream(let status, let headers, let stream):
            return queueStream(stream, status: status, headers: headers, on: connection)
        case .upgrade(let upgrade):
            return queueUpgrade(upgrade, on: connection)
        }
    }

    /// A chunked response whose body comes from `stream` (MHD_SIZE_UNKNOWN). The stream is retained by the
    /// response and released in its free callback, which is also how we learn the client is gone.
    private func queueStream(
        _ stream: ResponseStream, status: Int, headers: [(name: String, value: String)], on connection: ConnectionHandle
    ) -> MHD_Result {
        if shared.withLock({ $0.isStopping }) { stream.finish() }
        shared.withLock { $0.streams[ObjectIdentifier(stream)] = stream }
        let made = MHD_create_response_from_callback(
            cmhd_size_unknown(), 16 * 1024, ResponseStream.reader, Unmanaged.passRetained(stream).toOpaque(),
            ResponseStream.released)
        guard let made else {
            // MHD did not take the stream: undo by hand what its free callback would have done.
            ResponseStream.released(Unmanaged.passUnretained(stream).toOpaque())
            configuration.log("MicroHTTP: cannot create a streaming response")
            return .NO
        }
        defer { MHD_destroy_response(made) }
        addHeaders(headers, to: made)
        return MHD_queue_response(connection.pointer, UInt32(status), made)
    }

    /// 101 with the accept key; libmicrohttpd adds `Connection: Upgrade` and calls
    /// ``WebSocketUpgrade/upgraded`` once the head is sent.
    private func queueUpgrade(_ upgrade: WebSocketUpgrade, on connection: ConnectionHandle) -> MHD_Result {
        let made = MHD_create_response_for_upgrade(WebSocketUpgrade.upgraded, Unmanaged.passRetained(upgrade).toOpaque())
        guard let made else {
            Unmanaged.passUnretained(upgrade).release()
            if !upgrade.isSettled.exchange(true, ordering: .acquiringAndReleasing) { webSocketLoop.releaseReservation() }
            configuration.log("MicroHTTP: cannot create a WebSocket upgrade response")
            return .NO
        }
        upgrade.isQueued.store(true, ordering: .releasing)
        defer { MHD_destroy_response(made) }
        var headers: [(name: String, value: String)] = [("Upgrade", "websocket"), ("Sec-WebSocket-Accept", upgrade.acceptKey)]
        if let subprotocol = upgrade.subprotocol { headers.append(("Sec-WebSocket-Protocol", subprotocol)) }
        addHeaders(headers + upgrade.headers, to: made)
        return MHD_queue_response(connection.pointer, 101, made)
    }

    private func addHeaders(_ headers: [(name: String, value: String)], to response: OpaquePointer) {
        for header in headers {
            // MHD computes Content-Length itself; a second one would corrupt the framing.
            if PercentDecoding.asciiCaseInsensitiveEquals(header.name, "Content-Length") { continue }
            if MHD_add_response_header(response, header.name, header.value) != .YES {
                configuration.log("MicroHTTP: header refused by libmicrohttpd: \(header.name)")
            }
        }
    }

    /// Copies the response into MHD (MUST_COPY: the Swift array may go away) and queues it.
    private func queue(_ response: HTTPResponse, on connection: ConnectionHandle) -> MHD_Result {
        let made = response.body.withUnsafeBytes {
            MHD_create_response_from_buffer($0.count, UnsafeMutableRawPointer(mutating: $0.baseAddress), .RESPMEM_MUST_COPY)
        }
        guard let made else {
            configuration.log("MicroHTTP: cannot create a response of \(response.body.count) bytes")
            return .NO  // MHD closes the connection
        }
        defer { MHD_destroy_response(made) }
        addHeaders(response.headers, to: made)
        return MHD_queue_response(connection.pointer, UInt32(response.status), made)
    }
}

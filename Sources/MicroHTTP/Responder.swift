import CMicroHTTPD
import Synchronization

/// A libmicrohttpd connection handle. `OpaquePointer` is not Sendable; this wrapper is, because the
/// handle is only used under the rules of ``RequestContext`` (resume from any thread is allowed by MHD).
struct ConnectionHandle: @unchecked Sendable {
    let pointer: OpaquePointer
}

/// Where one request stands. Transitions (all under ``RequestContext/state``):
///
///     receiving ─▶ handling ─┬─ respond() ─▶ respondedWhileHandling ─(handler returns)─▶ sent
///                            └─(handler returns)─▶ suspended ─ respond() ─▶ resumed ─(MHD re-enters)─▶ sent
///     any ─▶ answeredByServer (413, 503 at shutdown...)      any ─▶ completed (MHD is done with it)
///
/// A streaming response is just another ``Answer``; so is a WebSocket upgrade (the third kind).
enum RequestPhase {
    case receiving
    case handling
    case respondedWhileHandling(Answer)
    case suspended
    /// `byServer`: the shutdown sweep answered; the request ends `answeredByServer`, not `sent`, so the
    /// application's late answer is not mistaken for a duplicate.
    case resumed(Answer, byServer: Bool)
    case sent
    case answeredByServer
    case completed
}

/// What the application answered: a whole response, or the head of a stream whose body follows.
enum Answer {
    case full(HTTPResponse)
    case stream(status: Int, headers: [(name: String, value: String)], ResponseStream)
    /// 101 Switching Protocols, then the socket goes to the WebSocket event loop.
    case upgrade(WebSocketUpgrade)
}

/// Per-request state, retained in MHD's `con_cls` from the first call of the access handler and released
/// in `MHD_OPTION_NOTIFY_COMPLETED`. Also kept alive by the ``Responder`` the application holds.
///
/// `@unchecked Sendable`: `phase` is guarded by its Mutex; `body`, `bodyBytesSeen`, `isBodyTooLarge` and `isHead`
/// are touched only from the access handler, which MHD calls for one connection at a time.
final class RequestContext: @unchecked Sendable {
    let connection: ConnectionHandle
    let core: ServerCore
    let phase = Mutex<RequestPhase>(.receiving)
    var body: [UInt8] = []
    var bodyBytesSeen = 0
    var isBodyTooLarge = false
    var isHead = false
    /// A WebSocket upgrade answered on this request, settled at completion if the socket never came.
    let upgrade = Mutex<WebSocketUpgrade?>(nil)

    init(connection: ConnectionHandle, core: ServerCore) {
        self.connection = connection
        self.core = core
    }

    var identifier: ObjectIdentifier { ObjectIdentifier(self) }

    enum RespondOutcome { case willBeSent, resumeConnection, ignored(duplicate: Bool) }

    /// The once-only transition behind ``Responder/respond(_:)``; `fromServer` marks the shutdown sweep,
    /// which must not count as a duplicate if the application answers at the same moment.
    @discardableResult
    func respond(_ answer: Answer, fromServer: Bool) -> Bool {
        let outcome: RespondOutcome = phase.withLock { phase in
            switch phase {
            case .handling:
                phase = .respondedWhileHandling(answer)
                return .willBeSent
            case .suspended:
                phase = .resumed(answer, byServer: fromServer)
                return .resumeConnection
            case .answeredByServer, .completed:
                // The server answered already (shutdown, client gone): a late answer is expected.
                return .ignored(duplicate: false)
            case .receiving:
                preconditionFailure("respond() before the handler was called")
            case .respondedWhileHandling, .resumed, .sent:
                return .ignored(duplicate: !fromServer)
            }
        }
        switch outcome {
        case .willBeSent: return true
        case .resumeConnection:
            // Safe from any thread: MHD was suspended (under the lock) before `.suspended` was visible,
            // and a suspended connection cannot complete, so the handle is alive.
            MHD_resume_connection(connection.pointer)
            return true
        case .ignored(let duplicate):
            if duplicate { core.duplicateResponseCount.add(1, ordering: .relaxed) }
            return false
        }
    }
}

/// Answers one request, once. ``respond(_:)`` may be called synchronously inside the handler or later from
/// any thread. If the handler returns without answering, the connection is suspended (no thread waits)
/// and resumed by ``respond(_:)``. A second call is ignored and counted in
/// ``HTTPServer/duplicateResponseCount``. Calls after the server answered the request itself (503 at
/// shutdown) or after the client went away are ignored silently.
public final class Responder: Sendable {
    enum Target {
        case connection(RequestContext)
        case recorder(ResponseRecorder)
    }
    let target: Target

    init(context: RequestContext) {
        target = .connection(context)
    }

    init(recorder: ResponseRecorder) {
        target = .recorder(recorder)
    }

    public func respond(_ response: HTTPResponse) {
        precondition((100...999).contains(response.status), "HTTP status out of range: \(response.status)")
        switch target {
        case .connection(let context): context.respond(.full(response), fromServer: false)
        case .recorder(let recorder): recorder.record(.full(response))
        }
    }

    /// Answers with a streaming body (chunked transfer encoding, for Server-Sent Events or NDJSON): sends
    /// `status` and `headers` now, then whatever is written to the returned ``ResponseStream`` until
    /// ``ResponseStream/finish()``. Once-only like ``respond(_:)``; if the request was already answered the
    /// stream comes back closed. For HEAD only the head is sent and the stream is closed at once.
    /// `bufferBytesMax` bounds the bytes written but not yet sent.
    public func respondStreaming(
        status: Int, headers: [(name: String, value: String)] = [], bufferBytesMax: Int = 1 << 20
    ) -> ResponseStream {
        precondition((100...999).contains(status), "HTTP status out of range: \(status)")
        precondition(bufferBytesMax > 0, "a stream needs a buffer")
        switch target {
        case .connection(let context):
            let stream = ResponseStream(core: context.core, connection: context.connection, bufferBytesMax: bufferBytesMax)
            if !context.respond(.stream(status: status, headers: headers, stream), fromServer: false) {
                stream.markClosed()
            }
            return stream
        case .recorder(let recorder):
            let stream = ResponseStream(core: nil, connection: nil, bufferBytesMax: bufferBytesMax)
            if !recorder.record(.stream(status: status, headers: headers, stream)) { stream.markClosed() }
            return stream
        }
    }
}

import Synchronization

/// A test kit: a ``Responder`` attached to no connection, recording what a handler answers, so that an
/// application's handlers can be tested without sockets. Thread-safe.
///
///     let recorder = ResponseRecorder()
///     handler(HTTPRequest(method: "GET", rawPath: "/v1/topics"), recorder.responder)
///     #expect(recorder.response?.status == 200)
public final class ResponseRecorder: Sendable {
    private struct State {
        var answers: [Answer] = []
    }
    private let state = Mutex(State())

    public init() {}

    /// Pass this to the handler under test.
    public var responder: Responder { Responder(recorder: self) }

    /// Records an answer; false if one was recorded already (the server would ignore the second).
    @discardableResult
    func record(_ answer: Answer) -> Bool {
        state.withLock { state in
            state.answers.append(answer)
            return state.answers.count == 1
        }
    }

    /// How many times the handler answered (more than 1 is a bug the server would count as duplicate).
    public var answerCount: Int { state.withLock { $0.answers.count } }

    /// The first answer if it was a whole response.
    public var response: HTTPResponse? {
        state.withLock { state in
            guard case .full(let response)? = state.answers.first else { return nil }
            return response
        }
    }

    /// True if the handler accepted a WebSocket upgrade (a recorder has no socket: nothing follows).
    public var isWebSocketUpgrade: Bool {
        state.withLock { state in
            if case .upgrade? = state.answers.first { return true }
            return false
        }
    }

    /// Bytes written to the stream and not yet taken (nil if the answer is not a stream). Peeking does
    /// not read them, so a test can play a client that never reads.
    public var pendingStreamBytes: Int? {
        let first = state.withLock { $0.answers.first }
        guard case .stream(_, _, let stream)? = first else { return nil }
        return stream.pendingBytes
    }

    /// The first answer if it was a stream: its head, the bytes written since the last call (taken, as a
    /// client would read them), and whether ``ResponseStream/finish()`` was called.
    public func takeStreamed() -> (status: Int, headers: [(name: String, value: String)], bytes: [UInt8], isFinished: Bool)? {
        let first = state.withLock { $0.answers.first }
        guard case .stream(let status, let headers, let stream)? = first else { return nil }
        let (bytes, isFinished) = stream.takeBuffered()
        return (status, headers, bytes, isFinished)
    }
}

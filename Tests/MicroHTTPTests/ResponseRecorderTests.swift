import Testing

import MicroHTTP

@Suite struct ResponseRecorderTests {
    @Test func recordsAWholeResponseAndDuplicates() {
        let recorder = ResponseRecorder()
        let handler: HTTPHandler = { request, responder in
            responder.respond(HTTPResponse(status: 200, body: Array(request.path.utf8)))
            responder.respond(HTTPResponse(status: 500))
        }
        handler(HTTPRequest(method: "GET", rawPath: "/a%20b"), recorder.responder)
        #expect(recorder.response?.status == 200)
        #expect(recorder.response?.body == Array("/a b".utf8))
        #expect(recorder.answerCount == 2)
        #expect(recorder.takeStreamed() == nil)
    }

    @Test func recordsAStream() {
        let recorder = ResponseRecorder()
        let stream = recorder.responder.respondStreaming(status: 200, headers: [("Content-Type", "text/event-stream")], bufferBytesMax: 8)
        #expect(stream.write(Array("data: 1\n".utf8)) == .accepted)
        #expect(stream.write([1]) == .bufferFull)
        let first = recorder.takeStreamed()
        #expect(first?.bytes == Array("data: 1\n".utf8))
        #expect(first?.isFinished == false)
        #expect(stream.write([2]) == .accepted)
        stream.finish()
        let second = recorder.takeStreamed()
        #expect(second?.bytes == [2])
        #expect(second?.isFinished == true)
        #expect(recorder.response == nil)
    }
}

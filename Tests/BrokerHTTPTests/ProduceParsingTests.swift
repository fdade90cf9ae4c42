import BrokerModel
import BrokerRuntime
import Testing
@testable import BrokerHTTP

@Suite struct ProduceParsingTests {
    func parse(_ body: String, _ type: String?, query: [(name: String, value: String)] = []) throws(BrokerError) -> [ProduceRecord] {
        try ProduceParsing.records(body: Array(body.utf8), contentType: type, query: query)
    }

    @Test func rawBodyIsOneRecordWithQueryParameters() throws {
        let records = try parse("hello", "application/x-www-form-urlencoded", query: [
            (name: "key", value: "k1"), (name: "partition", value: "2"), (name: "timestamp", value: "123"),
            (name: "header", value: "trace:abc:def"),
        ])
        #expect(records == [ProduceRecord(partition: PartitionID(2), key: Array("k1".utf8), value: Array("hello".utf8),
                                          headers: [RecordHeader(key: "trace", value: Array("abc:def".utf8))], timestamp: 123)])
        #expect(try parse("x", nil).count == 1)
        #expect(try parse("x", "text/plain; charset=utf-8").first?.value == Array("x".utf8))
    }

    @Test func jsonValuesAreStoredAsWritten() throws {
        let body = #"{"records":[{"key":"k","value":{"a": 1.50}},{"value":"text"},{"value":null},{"value":[1,2],"headers":{"h":"v"}},{"value_base64":"AAEC","key_base64":"/w=="}]}"#
        let records = try parse(body, "application/json")
        #expect(records.count == 5)
        #expect(records[0].key == Array("k".utf8))
        #expect(records[0].value == Array(#"{"a": 1.50}"#.utf8))
        #expect(records[1].value == Array("text".utf8))
        #expect(records[2].value == nil)
        #expect(records[3].value == Array("[1,2]".utf8))
        #expect(records[3].headers == [RecordHeader(key: "h", value: Array("v".utf8))])
        #expect(records[4].value == [0, 1, 2])
        #expect(records[4].key == [0xFF])
    }

    @Test func ndjsonSkipsBlankLinesAndHandlesCRLF() throws {
        let records = try parse("{\"value\":\"a\"}\r\n\n  \n{\"value\":\"b\",\"partition\":1}\n", "application/x-ndjson")
        #expect(records.map(\.value) == [Array("a".utf8), Array("b".utf8)])
        #expect(records[1].partition == PartitionID(1))
    }

    @Test func headerArrayForm() throws {
        let records = try parse(#"{"records":[{"value":"v","headers":[{"key":"a","value":"1"},{"key":"a","value_base64":"Mg=="}]}]}"#, "application/json")
        #expect(records[0].headers == [RecordHeader(key: "a", value: Array("1".utf8)), RecordHeader(key: "a", value: Array("2".utf8))])
    }

    @Test(arguments: [
        ("{", "application/json"), ("[]", "application/json"), (#"{"records":{}}"#, "application/json"),
        (#"{"records":[]}"#, "application/json"), (#"{"records":[1]}"#, "application/json"),
        (#"{"records":[{"key":"k"}]}"#, "application/json"), (#"{"records":[{"value":1,"bogus":2}]}"#, "application/json"),
        (#"{"records":[{"value_base64":"!!"}]}"#, "application/json"), (#"{"records":[{"value":1,"partition":-1}]}"#, "application/json"),
        (#"{"records":[{"value":1,"timestamp":"now"}]}"#, "application/json"), ("\n\n", "application/x-ndjson"),
        ("{\"value\":1}\nnope\n", "application/x-ndjson"),
    ])
    func rejectsBadBodies(_ body: String, _ type: String) {
        #expect(throws: BrokerError.self) { try parse(body, type) }
        do { _ = try parse(body, type) } catch { #expect(error.httpStatus == 400) }
    }

    @Test func unknownMediaTypeIs415() {
        do {
            _ = try parse("x", "application/xml")
            Issue.record("expected an error")
        } catch {
            #expect(error.httpStatus == 415)
        }
    }
}

@Suite struct RenderTests {
    @Test func readResultRendersTextBinaryAndJSON() throws {
        let topic = TopicName("t")!
        let batch = RecordBatch.encode(records: [
            Record(key: Array("k".utf8), value: Array(#"{"a":1}"#.utf8), headers: [RecordHeader(key: "h", value: [0xFF])], timestamp: 7),
            Record(key: nil, value: [0xC3, 0x28], timestamp: 8),
        ], baseOffset: Offset(10))
        let result = ReadResult(topic: topic, partition: PartitionID(0), batches: [batch], fromOffset: Offset(10), nextOffset: Offset(12),
                                highWatermark: Offset(12), logStartOffset: Offset(0), logEndOffset: Offset(12))
        let text = try JSONParser.parse(try Render.read(result, format: .text))
        let records = try #require(text["records"]?.arrayValue)
        #expect(records.count == 2)
        #expect(records[0]["value"]?.stringValue == #"{"a":1}"#)
        #expect(records[0]["headers"]?.arrayValue?.first?["value_base64"]?.stringValue == "/w==")
        #expect(records[1]["key"]?.isNull == true)
        #expect(records[1]["value_base64"]?.stringValue == "wyg=")
        #expect(text["next_offset"]?.int64Value == 12)

        let json = try JSONParser.parse(try Render.read(result, format: .json))
        #expect(json["records"]?.arrayValue?[0]["value"]?["a"]?.int64Value == 1)

        let binary = try JSONParser.parse(try Render.read(result, format: .binary))
        #expect(binary["records"]?.arrayValue?[0]["key_base64"]?.stringValue == "aw==")
    }

    @Test func readResultHonoursTheOffsetWindow() throws {
        let batch = RecordBatch.encode(records: (0..<5).map { Record(value: [UInt8($0)], timestamp: 0) }, baseOffset: Offset(100))
        let result = ReadResult(topic: TopicName("t")!, partition: PartitionID(0), batches: [batch], fromOffset: Offset(101), nextOffset: Offset(103),
                                highWatermark: Offset(105), logStartOffset: Offset(0), logEndOffset: Offset(105))
        #expect(try result.records().map(\.offset) == [Offset(101), Offset(102)])
    }

    @Test func errorsAreJSONWithCodeAndMessage() throws {
        let node = try JSONParser.parse(Render.error(.offsetOutOfRange(requested: 9, logStart: 0, logEnd: 5)))
        #expect(node["error_code"]?.int64Value == 41601)
        #expect(node["message"]?.stringValue?.contains("0...5") == true)
    }
}

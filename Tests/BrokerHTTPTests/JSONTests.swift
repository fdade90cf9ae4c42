import Testing
@testable import BrokerHTTP

@Suite struct JSONParserTests {
    @Test func parsesEveryKindAndKeepsRawSpans() throws {
        let text = #"{"a": [1, -2.5e3, true, false, null], "b": {"c": "d\u00e9\n"}, "e": 0}"#
        let bytes = Array(text.utf8)
        let root = try JSONParser.parse(bytes)
        let a = try #require(root["a"]?.arrayValue)
        #expect(a.count == 5)
        #expect(a[0].int64Value == 1)
        #expect(a[1].value == .number("-2.5e3"))
        #expect(a[2].boolValue == true)
        #expect(a[4].isNull)
        #expect(root["b"]?["c"]?.stringValue == "dé\n")
        let b = try #require(root["b"])
        #expect(String(decoding: bytes[b.range], as: UTF8.self) == #"{"c": "d\u00e9\n"}"#)
        #expect(root["e"]?.int64Value == 0)
    }

    @Test func decodesSurrogatePairs() throws {
        let node = try JSONParser.parse(Array(#""\ud83d\ude00""#.utf8))
        #expect(node.stringValue == "😀")
    }

    @Test(arguments: [
        "", "{", "}", "[1,]", "{\"a\":}", "{\"a\" 1}", "01", "1.", "-", "1e", "tru", "nul",
        "\"abc", "\"\\x\"", "\"\\ud800\"", "\"\\udc00\"", "{\"a\":1} x", "[1 2]", "{1:2}", "\"a\u{01}b\"", "NaN",
    ])
    func rejectsMalformedInput(_ text: String) {
        #expect(throws: JSONError.self) { try JSONParser.parse(Array(text.utf8)) }
    }

    @Test func rejectsInvalidUTF8InStrings() {
        #expect(throws: JSONError.self) { try JSONParser.parse([0x22, 0xFF, 0xFE, 0x22]) }
    }

    @Test func limitsNestingDepth() {
        let deep = String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000)
        #expect(throws: JSONError.self) { try JSONParser.parse(Array(deep.utf8)) }
        let ok = String(repeating: "[", count: 50) + String(repeating: "]", count: 50)
        #expect((try? JSONParser.parse(Array(ok.utf8))) != nil)
    }

    @Test func writerEscapesAndRoundTrips() throws {
        let samples = ["plain", "quote \" backslash \\ slash /", "ctl \u{01}\u{1f} tab\t nl\n cr\r", "ünïcødé 😀", ""]
        for s in samples {
            var w = JSONWriter()
            w.string(s)
            #expect(try JSONParser.parse(w.bytes).stringValue == s)
        }
    }

    @Test func base64RoundTripsAndRejectsGarbage() {
        for n in 0..<40 {
            let data = (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
            #expect(Base64.decode(Base64.encode(data)) == data)
        }
        #expect(Base64.encode(Array("hello".utf8)) == "aGVsbG8=")
        #expect(Base64.decode("aGVsbG8") == Array("hello".utf8))
        #expect(Base64.decode("a*b=") == nil)
        #expect(Base64.decode("abcde") == nil)
    }
}

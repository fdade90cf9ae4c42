import Testing

@testable import WebSocketCodec

@Suite struct FrameTests {
    @Test(arguments: [0, 1, 125, 126, 127, 65535, 65536, 70000])
    func roundTripMaskedAndUnmasked(length: Int) throws {
        let payload = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        for (role, key) in [(WebSocketFrameParser.Role.server, (0xA1, 0xB2, 0xC3, 0xD4) as (UInt8, UInt8, UInt8, UInt8)?), (.client, nil)] {
            let frame = WebSocketFrame(isFinal: length % 2 == 0, opcode: .binary, payload: payload)
            let wire = frame.serialized(maskingKey: key)
            let expectedHeader = (length < 126 ? 2 : length <= 65535 ? 4 : 10) + (key == nil ? 0 : 4)
            #expect(wire.count == expectedHeader + length)
            var parser = WebSocketFrameParser(role: role, framePayloadBytesMax: 1 << 20)
            #expect(try parser.parse(wire) == [frame])
            #expect(parser.isAtFrameBoundary)
        }
    }

    @Test func controlFramesAndCloseRoundTrip() throws {
        let close = WebSocketClose(code: .goingAway, reason: "bye")
        let wire = clientFrame(.ping, [1, 2]) + clientFrame(.pong, []) + clientFrame(.close, close.encoded())
        #expect(try readAll(wire).get() == [.ping([1, 2]), .pong([]), .close(close)])
        #expect(try readAll(clientFrame(.close, [])).get() == [.close(WebSocketClose(code: nil))])
    }

    @Test func closeReasonIsCutToFitOnACharacterBoundary() throws {
        let long = String(repeating: "é", count: 100)  // 200 bytes
        let encoded = WebSocketClose(code: .normalClosure, reason: long).encoded()
        #expect(encoded.count <= 125)
        let decoded = try WebSocketClose.decode(encoded)
        #expect(decoded.code == .normalClosure)
        #expect(decoded.reason == String(repeating: "é", count: 61))
    }

    @Test func closeCodeValidity() {
        for valid: UInt16 in [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999] {
            #expect(WebSocketCloseCode(rawValue: valid).isValidOnWire, "\(valid)")
        }
        for invalid: UInt16 in [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535] {
            #expect(!WebSocketCloseCode(rawValue: invalid).isValidOnWire, "\(invalid)")
        }
    }
}

@Suite struct RejectionTests {
    @Test func unmaskedClientFrameIs1002() {
        let frame = WebSocketFrame(opcode: .text, payload: Array("hi".utf8)).serialized()
        #expect(errorCode(readAll(frame)) == 1002)
    }

    @Test func maskedServerFrameIs1002ForAClient() {
        var parser = WebSocketFrameParser(role: .client, framePayloadBytesMax: 100)
        #expect(throws: WebSocketProtocolError.self) { try parser.parse(clientFrame(.text, [65])) }
    }

    @Test(arguments: [UInt8(0x40), 0x20, 0x10])
    func reservedBitsAre1002(bit: UInt8) {
        #expect(errorCode(readAll(rawHeader(first: 0x81 | bit, lengthField: 0))) == 1002)
    }

    @Test(arguments: [UInt8(3), 4, 5, 6, 7, 11, 12, 13, 14, 15])
    func reservedOpcodesAre1002(opcode: UInt8) {
        #expect(errorCode(readAll(rawHeader(first: 0x80 | opcode, lengthField: 0))) == 1002)
    }

    @Test func fragmentedControlFrameIs1002() {
        #expect(errorCode(readAll(rawHeader(first: 0x09, lengthField: 0))) == 1002)  // ping without FIN
    }

    @Test func oversizedControlFrameIs1002() {
        let header = rawHeader(first: 0x89, lengthField: 126, extended: [0, 126])
        #expect(errorCode(readAll(header + [UInt8](repeating: 0, count: 126))) == 1002)
    }

    @Test func nonMinimalLengthsAre1002() {
        // 16-bit length for 5 bytes, 64-bit length for 200 bytes.
        #expect(errorCode(readAll(rawHeader(first: 0x82, lengthField: 126, extended: [0, 5]) + [1, 2, 3, 4, 5])) == 1002)
        let long = rawHeader(first: 0x82, lengthField: 127, extended: [0, 0, 0, 0, 0, 0, 0, 200])
        #expect(errorCode(readAll(long + [UInt8](repeating: 0, count: 200))) == 1002)
    }

    @Test func lengthWithTopBitIs1002() {
        let header = rawHeader(first: 0x82, lengthField: 127, extended: [0x80, 0, 0, 0, 0, 0, 0, 0])
        #expect(errorCode(readAll(header)) == 1002)
    }

    @Test func lyingHugeLengthIs1009BeforeAnyPayloadIsBuffered() {
        // Claims 2^62 bytes: refused from the header alone; nothing is reserved or buffered.
        var reader = WebSocketMessageReader(role: .server, messageBytesMax: 1024)
        let header = rawHeader(first: 0x82, lengthField: 127, extended: [0x40, 0, 0, 0, 0, 0, 0, 0])
        #expect(throws: WebSocketProtocolError(.messageTooBig, "frame of 4611686018427387904 bytes above the limit of 1024")) {
            try reader.read(header)
        }
        #expect(reader.bufferedBytes == 0)
    }

    @Test func messageTooBigAcrossFragmentsIs1009FromTheHeader() {
        var reader = WebSocketMessageReader(role: .server, messageBytesMax: 100)
        #expect(throws: Never.self) { try reader.read(clientFrame(.binary, [UInt8](repeating: 1, count: 60), isFinal: false)) }
        #expect(reader.bufferedBytes == 60)
        // The second fragment's header says 41 more: 101 > 100, refused before its payload arrives.
        let second = clientFrame(.continuation, [UInt8](repeating: 2, count: 41))
        #expect(throws: WebSocketProtocolError.self) { try reader.read(Array(second.prefix(6))) }
        var dead = reader
        #expect(throws: WebSocketProtocolError.self) { try dead.read([]) }
        #expect(errorCode(readAll(clientFrame(.binary, [UInt8](repeating: 1, count: 101)), messageBytesMax: 100)) == 1009)
        #expect(errorCode(readAll(clientFrame(.binary, [UInt8](repeating: 1, count: 100)), messageBytesMax: 100)) == nil)
    }

    @Test func invalidUTF8TextIs1007() throws {
        for bad: [UInt8] in [[0xFF], [0xC0, 0x80], [0xED, 0xA0, 0x80], [0xE2, 0x82], [0xF4, 0x90, 0x80, 0x80]] {
            #expect(errorCode(readAll(clientFrame(.text, bad))) == 1007, "\(bad)")
        }
        // Valid only once reassembled: a character split across fragments is fine.
        let euro: [UInt8] = [0xE2, 0x82, 0xAC]
        let split = clientFrame(.text, [euro[0]], isFinal: false) + clientFrame(.continuation, Array(euro[1...]))
        #expect(try readAll(split).get() == [.text("€")])
        // Binary is never validated.
        #expect(try readAll(clientFrame(.binary, [0xFF])).get() == [.binary([0xFF])])
    }

    @Test func badClosePayloads() {
        #expect(errorCode(readAll(clientFrame(.close, [3]))) == 1002)
        #expect(errorCode(readAll(clientFrame(.close, [0x03, 0xEC]))) == 1002)  // 1004 reserved
        #expect(errorCode(readAll(clientFrame(.close, [0x03, 0xE8, 0xFF]))) == 1007)
    }

    @Test func continuationRules() {
        #expect(errorCode(readAll(clientFrame(.continuation, [1]))) == 1002)
        let interleaved = clientFrame(.text, [65], isFinal: false) + clientFrame(.binary, [66])
        #expect(errorCode(readAll(interleaved)) == 1002)
    }

    @Test func errorIsSticky() {
        var parser = WebSocketFrameParser(role: .server, framePayloadBytesMax: 10)
        #expect(throws: WebSocketProtocolError.self) { try parser.parse([0xF1]) }
        #expect(throws: WebSocketProtocolError.self) { try parser.parse(clientFrame(.text, [65])) }
    }
}

@Suite struct ReassemblyTests {
    static let mixed: [UInt8] =
        clientFrame(.text, Array("Hel".utf8), isFinal: false)
        + clientFrame(.ping, [7])
        + clientFrame(.continuation, Array("lo, ".utf8), isFinal: false)
        + clientFrame(.pong, [])
        + clientFrame(.continuation, Array("wörld".utf8))
        + clientFrame(.binary, [UInt8](repeating: 9, count: 300))
        + clientFrame(.binary, [], isFinal: false) + clientFrame(.continuation, [])
        + clientFrame(.close, WebSocketClose(code: .normalClosure, reason: "done").encoded())
        + clientFrame(.text, Array("after close: ignored".utf8))
    static let expected: [WebSocketEvent] = [
        .ping([7]), .pong([]), .text("Hello, wörld"), .binary([UInt8](repeating: 9, count: 300)), .binary([]),
        .close(WebSocketClose(code: .normalClosure, reason: "done")),
    ]

    @Test func fragmentsWithInterleavedControlFrames() throws {
        #expect(try readAll(Self.mixed).get() == Self.expected)
    }

    @Test func oneByteAtATime() throws {
        #expect(try readAll(Self.mixed, chunk: 1).get() == Self.expected)
    }

    @Test func everySplitPoint() throws {
        for split in 0...Self.mixed.count {
            var reader = WebSocketMessageReader(role: .server, messageBytesMax: 1 << 20)
            let events = try reader.read(Array(Self.mixed[..<split])) + reader.read(Array(Self.mixed[split...]))
            #expect(events == Self.expected, "split at \(split)")
        }
    }
}

@Suite struct HandshakeTests {
    @Test func rfcExampleAcceptKey() {
        #expect(WebSocketHandshake.acceptKey(forKey: "dGhlIHNhbXBsZSBub25jZQ==", sha1: sha1) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    }

    @Test func keyValidation() {
        #expect(WebSocketHandshake.isValidKey("dGhlIHNhbXBsZSBub25jZQ=="))
        #expect(!WebSocketHandshake.isValidKey("dGhlIHNhbXBsZSBub25jZQ"))  // unpadded
        #expect(!WebSocketHandshake.isValidKey("c2hvcnQ="))  // 5 bytes
        #expect(!WebSocketHandshake.isValidKey("dGhlIHNhbXBsZSBub25jZQ=!"))
        #expect(!WebSocketHandshake.isValidKey(""))
    }

    @Test func base64RoundTrip() {
        var random = SplitMix64(seed: 7)
        for length in 0..<40 {
            let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &random) }
            #expect(Base64.decode(Base64.encode(bytes)) == bytes)
        }
        #expect(Base64.encode(Array("foobar".utf8)) == "Zm9vYmFy")
        #expect(Base64.encode(Array("fo".utf8)) == "Zm8=")
        #expect(Base64.decode("Zm=v") == nil)
    }
}

@Suite struct FuzzTests {
    /// Random valid frames, then mutated (bit flips, truncations, inserted garbage), fed in random chunk
    /// sizes: the reader must never crash, must end in events or a protocol error, and must never hold
    /// more than the message limit plus one header.
    @Test(arguments: [UInt64(1), 2, 3, 42, 2026])
    func randomAndMutatedFramesNeverCrashAndStayBounded(seed: UInt64) {
        var random = SplitMix64(seed: seed)
        let messageBytesMax = 2500
        var parsed = 0
        var failed = 0
        for iteration in 0..<400 {
            var wire: [UInt8] = []
            if iteration % 5 == 0 {
                // Pure garbage, sometimes starting with a plausible first byte.
                wire = (0..<Int.random(in: 1...300, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
                if Bool.random(using: &random) { wire[0] = 0x82 }
            }
            for _ in 0..<Int.random(in: 1...6, using: &random) {
                let opcode = [WebSocketOpcode.text, .binary, .continuation, .ping, .pong, .close].randomElement(using: &random)!
                let length = opcode.isControl ? Int.random(in: 0...125, using: &random) : Int.random(in: 0...3000, using: &random)
                let payload = (0..<length).map { _ in UInt8.random(in: 0...255, using: &random) }
                let key = (UInt8.random(in: 0...255, using: &random), UInt8.random(in: 0...255, using: &random), UInt8(1), UInt8(2))
                wire += WebSocketFrame(isFinal: opcode.isControl || Bool.random(using: &random), opcode: opcode, payload: payload)
                    .serialized(maskingKey: key)
            }
            for _ in 0..<Int.random(in: 0...4, using: &random) where !wire.isEmpty {
                let at = Int.random(in: 0..<wire.count, using: &random)
                switch Int.random(in: 0..<3, using: &random) {
                case 0: wire[at] ^= UInt8(1) << UInt8.random(in: 0...7, using: &random)
                case 1: wire.removeSubrange(at...)
                default: wire.insert(UInt8.random(in: 0...255, using: &random), at: at)
                }
            }
            var reader = WebSocketMessageReader(role: .server, messageBytesMax: messageBytesMax)
            var start = 0
            var outcome = "parsed"
            while start < wire.count {
                let end = min(wire.count, start + Int.random(in: 1...700, using: &random))
                do {
                    _ = try reader.read(Array(wire[start..<end]))
                } catch {
                    outcome = "error"
                    #expect([1002, 1007, 1009].contains(error.code.rawValue), "seed \(seed): \(error)")
                    break
                }
                #expect(reader.bufferedBytes <= messageBytesMax + 14, "seed \(seed): \(reader.bufferedBytes) buffered")
                start = end
            }
            if outcome == "parsed" { parsed += 1 } else { failed += 1 }
        }
        // Both branches are exercised (a generator that never fails or never parses would test little).
        #expect(parsed > 0 && failed > 0, "seed \(seed): parsed \(parsed), failed \(failed)")
    }
}

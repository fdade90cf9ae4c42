@testable import WebSocketCodec

/// Seeded generator (SplitMix64) so every fuzz failure replays from its printed seed.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// A client frame (masked with a fixed key unless told otherwise).
func clientFrame(
    _ opcode: WebSocketOpcode, _ payload: [UInt8], isFinal: Bool = true, key: (UInt8, UInt8, UInt8, UInt8) = (1, 2, 3, 4)
) -> [UInt8] {
    WebSocketFrame(isFinal: isFinal, opcode: opcode, payload: payload).serialized(maskingKey: key)
}

/// A raw header built by hand, for frames the serializer refuses to make.
func rawHeader(first: UInt8, lengthField: UInt8, extended: [UInt8] = [], masked: Bool = true) -> [UInt8] {
    [first, (masked ? 0x80 : 0) | lengthField] + extended + (masked ? [9, 8, 7, 6] : [])
}

/// Reads everything and returns the events or the error.
func readAll(_ bytes: [UInt8], messageBytesMax: Int = 1 << 20, chunk: Int? = nil) -> Result<[WebSocketEvent], WebSocketProtocolError> {
    var reader = WebSocketMessageReader(role: .server, messageBytesMax: messageBytesMax)
    var events: [WebSocketEvent] = []
    do throws(WebSocketProtocolError) {
        if let chunk {
            var start = 0
            while start < bytes.count {
                let end = min(bytes.count, start + chunk)
                events += try reader.read(Array(bytes[start..<end]))
                start = end
            }
        } else {
            events = try reader.read(bytes)
        }
        return .success(events)
    } catch {
        return .failure(error)
    }
}

func errorCode(_ result: Result<[WebSocketEvent], WebSocketProtocolError>) -> UInt16? {
    if case .failure(let error) = result { return error.code.rawValue }
    return nil
}

/// A small test-only SHA-1 (FIPS 180-4) to check the accept key against RFC 6455's example.
func sha1(_ message: [UInt8]) -> [UInt8] {
    var h: [UInt32] = [0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476, 0xC3D2_E1F0]
    var data = message + [0x80]
    while data.count % 64 != 56 { data.append(0) }
    let bits = UInt64(message.count) * 8
    for shift in stride(from: 56, through: 0, by: -8) { data.append(UInt8((bits >> UInt64(shift)) & 0xFF)) }
    for block in stride(from: 0, to: data.count, by: 64) {
        var w = [UInt32](repeating: 0, count: 80)
        for i in 0..<16 {
            w[i] = (0..<4).reduce(0) { $0 << 8 | UInt32(data[block + i * 4 + $1]) }
        }
        for i in 16..<80 {
            let x = w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]
            w[i] = x << 1 | x >> 31
        }
        var (a, b, c, d, e) = (h[0], h[1], h[2], h[3], h[4])
        for i in 0..<80 {
            let (f, k): (UInt32, UInt32) =
                i < 20 ? ((b & c) | (~b & d), 0x5A82_7999)
                : i < 40 ? (b ^ c ^ d, 0x6ED9_EBA1)
                : i < 60 ? ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC) : (b ^ c ^ d, 0xCA62_C1D6)
            let temp = (a << 5 | a >> 27) &+ f &+ e &+ k &+ w[i]
            e = d
            d = c
            c = b << 30 | b >> 2
            b = a
            a = temp
        }
        h[0] = h[0] &+ a
        h[1] = h[1] &+ b
        h[2] = h[2] &+ c
        h[3] = h[3] &+ d
        h[4] = h[4] &+ e
    }
    return h.flatMap { word in (0..<4).map { UInt8((word >> UInt32(24 - 8 * $0)) & 0xFF) } }
}

/// Percent-decoding of paths and query strings. The server decodes here, exactly once (libmicrohttpd is
/// told not to), so that "%2F" can stay inside a path segment.
enum PercentDecoding {
    /// Decodes %XX escapes; a malformed escape is kept literally. Invalid UTF-8 becomes U+FFFD.
    static func decode(_ raw: String, plusIsSpace: Bool) -> String {
        let utf8 = raw.utf8
        // Fast path: nothing to decode (the common case for broker paths).
        if !utf8.contains(where: { $0 == UInt8(ascii: "%") || (plusIsSpace && $0 == UInt8(ascii: "+")) }) {
            return raw
        }
        var out: [UInt8] = []
        out.reserveCapacity(utf8.count)
        var index = utf8.startIndex
        while index != utf8.endIndex {
            let byte = utf8[index]
            if byte == UInt8(ascii: "%") {
                let first = utf8.index(after: index)
                if first != utf8.endIndex {
                    let second = utf8.index(after: first)
                    if second != utf8.endIndex, let high = hexValue(utf8[first]), let low = hexValue(utf8[second]) {
                        out.append(high << 4 | low)
                        index = utf8.index(after: second)
                        continue
                    }
                }
                out.append(byte)
            } else if plusIsSpace && byte == UInt8(ascii: "+") {
                out.append(UInt8(ascii: " "))
            } else {
                out.append(byte)
            }
            index = utf8.index(after: index)
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Splits a raw path on "/" and decodes each segment; see ``HTTPRequest/pathSegments``.
    static func segments(ofRawPath rawPath: String) -> [String] {
        var parts = rawPath.split(separator: "/", omittingEmptySubsequences: false)
        if parts.first == "" { parts.removeFirst() }
        if parts == [""] { return [] }
        return parts.map { decode(String($0), plusIsSpace: false) }
    }

    static func asciiCaseInsensitiveEquals(_ a: String, _ b: String) -> Bool {
        let a = a.utf8, b = b.utf8
        guard a.count == b.count else { return false }
        return zip(a, b).allSatisfy { lowerASCII($0) == lowerASCII($1) }
    }

    private static func lowerASCII(_ byte: UInt8) -> UInt8 {
        (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z")) ? byte | 0x20 : byte
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}

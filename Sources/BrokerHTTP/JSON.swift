/// A small RFC 8259 JSON reader and writer.
///
/// Why not Foundation's `JSONSerialization`: a produced JSON value must be stored exactly as the
/// client wrote it (its raw text span), booleans must not turn into numbers, and the read path
/// renders hundreds of thousands of records per second into one buffer. This parser keeps each
/// value's byte range in the request body, rejects trailing garbage, limits nesting depth, and never
/// traps on hostile input.
public indirect enum JSONValue: Equatable, Sendable {
    case null
    case bool(Bool)
    /// The number's text as written (validated); convert with `int64` / `double` when needed.
    case number(String)
    case string(String)
    case array([JSONNode])
    case object([(key: String, value: JSONNode)])

    public static func == (a: JSONValue, b: JSONValue) -> Bool {
        switch (a, b) {
        case (.null, .null): true
        case (.bool(let x), .bool(let y)): x == y
        case (.number(let x), .number(let y)): x == y
        case (.string(let x), .string(let y)): x == y
        case (.array(let x), .array(let y)): x == y
        case (.object(let x), .object(let y)):
            x.count == y.count && zip(x, y).allSatisfy { $0.key == $1.key && $0.value == $1.value }
        default: false
        }
    }
}

/// A parsed value plus where it sits in the source text (byte offsets, end exclusive).
public struct JSONNode: Equatable, Sendable {
    public var value: JSONValue
    public var range: Range<Int>
    public static func == (a: JSONNode, b: JSONNode) -> Bool { a.value == b.value }

    public subscript(key: String) -> JSONNode? {
        if case .object(let members) = value { return members.first { $0.key == key }?.value }
        return nil
    }
    public var stringValue: String? { if case .string(let s) = value { s } else { nil } }
    public var isNull: Bool { value == .null }
    /// An integer, if the number has no fraction or exponent and fits in Int64.
    public var int64Value: Int64? { if case .number(let n) = value { Int64(n) } else { nil } }
    public var boolValue: Bool? { if case .bool(let b) = value { b } else { nil } }
    public var arrayValue: [JSONNode]? { if case .array(let a) = value { a } else { nil } }
    public var objectValue: [(key: String, value: JSONNode)]? { if case .object(let o) = value { o } else { nil } }
    public var typeName: String {
        switch value {
        case .null: "null"
        case .bool: "boolean"
        case .number: "number"
        case .string: "string"
        case .array: "array"
        case .object: "object"
        }
    }
}

public struct JSONError: Error, Equatable, Sendable, CustomStringConvertible {
    public var message: String
    public var position: Int
    public var description: String { "invalid JSON at byte \(position): \(message)" }
}

public enum JSONParser {
    public static let depthMax = 64

    public static func parse(_ bytes: [UInt8]) throws(JSONError) -> JSONNode {
        try bytes.withUnsafeBufferPointer { (buffer) throws(JSONError) -> JSONNode in
            var parser = Parser(bytes: buffer)
            parser.skipWhitespace()
            let node = try parser.value(depth: 0)
            parser.skipWhitespace()
            if parser.position != buffer.count { throw parser.error("unexpected data after the JSON value") }
            return node
        }
    }

    /// Parses `bytes[range]` as one JSON value (used for NDJSON lines).
    public static func parse(_ bytes: [UInt8], range: Range<Int>) throws(JSONError) -> JSONNode {
        try bytes.withUnsafeBufferPointer { (buffer) throws(JSONError) -> JSONNode in
            var parser = Parser(bytes: UnsafeBufferPointer(rebasing: buffer[..<range.upperBound]), position: range.lowerBound)
            parser.skipWhitespace()
            let node = try parser.value(depth: 0)
            parser.skipWhitespace()
            if parser.position != range.upperBound { throw parser.error("unexpected data after the JSON value") }
            return node
        }
    }

    struct Parser {
        let bytes: UnsafeBufferPointer<UInt8>
        var position = 0

        func error(_ message: String) -> JSONError { JSONError(message: message, position: position) }

        mutating func skipWhitespace() {
            while position < bytes.count {
                switch bytes[position] {
                case 0x20, 0x09, 0x0A, 0x0D: position += 1
                default: return
                }
            }
        }

        mutating func value(depth: Int) throws(JSONError) -> JSONNode {
            guard depth < JSONParser.depthMax else { throw error("nesting deeper than \(JSONParser.depthMax)") }
            guard position < bytes.count else { throw error("unexpected end of input") }
            let start = position
            let v: JSONValue
            switch bytes[position] {
            case UInt8(ascii: "{"): v = try object(depth: depth)
            case UInt8(ascii: "["): v = try array(depth: depth)
            case UInt8(ascii: "\""): v = .string(try string())
            case UInt8(ascii: "t"): try literal("true"); v = .bool(true)
            case UInt8(ascii: "f"): try literal("false"); v = .bool(false)
            case UInt8(ascii: "n"): try literal("null"); v = .null
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): v = .number(try number())
            default: throw error("unexpected character '\(Unicode.Scalar(bytes[position]))'")
            }
            return JSONNode(value: v, range: start..<position)
        }

        mutating func literal(_ word: StaticString) throws(JSONError) {
            let n = word.utf8CodeUnitCount
            guard bytes.count - position >= n else { throw error("unexpected end of input") }
            for i in 0..<n where bytes[position + i] != word.utf8Start[i] { throw error("invalid literal") }
            position += n
        }

        mutating func number() throws(JSONError) -> String {
            let start = position
            if bytes[position] == UInt8(ascii: "-") { position += 1 }
            guard position < bytes.count, isDigit(bytes[position]) else { throw error("invalid number") }
            if bytes[position] == UInt8(ascii: "0") {
                position += 1
            } else {
                while position < bytes.count, isDigit(bytes[position]) { position += 1 }
            }
            if position < bytes.count, bytes[position] == UInt8(ascii: ".") {
                position += 1
                guard position < bytes.count, isDigit(bytes[position]) else { throw error("invalid number fraction") }
                while position < bytes.count, isDigit(bytes[position]) { position += 1 }
            }
            if position < bytes.count, bytes[position] | 0x20 == UInt8(ascii: "e") {
                position += 1
                if position < bytes.count, bytes[position] == UInt8(ascii: "+") || bytes[position] == UInt8(ascii: "-") { position += 1 }
                guard position < bytes.count, isDigit(bytes[position]) else { throw error("invalid number exponent") }
                while position < bytes.count, isDigit(bytes[position]) { position += 1 }
            }
            return String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<position]), as: UTF8.self)
        }

        func isDigit(_ b: UInt8) -> Bool { b >= 0x30 && b <= 0x39 }

        mutating func string() throws(JSONError) -> String {
            position += 1  // opening quote
            var out: [UInt8] = []
            var runStart = position
            while true {
                guard position < bytes.count else { throw error("unterminated string") }
                let b = bytes[position]
                if b == UInt8(ascii: "\"") {
                    out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<position]))
                    position += 1
                    break
                }
                if b < 0x20 { throw error("control character in string") }
                if b == UInt8(ascii: "\\") {
                    out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<position]))
                    position += 1
                    guard position < bytes.count else { throw error("unterminated escape") }
                    let e = bytes[position]
                    position += 1
                    switch e {
                    case UInt8(ascii: "\""): out.append(0x22)
                    case UInt8(ascii: "\\"): out.append(0x5C)
                    case UInt8(ascii: "/"): out.append(0x2F)
                    case UInt8(ascii: "b"): out.append(0x08)
                    case UInt8(ascii: "f"): out.append(0x0C)
                    case UInt8(ascii: "n"): out.append(0x0A)
                    case UInt8(ascii: "r"): out.append(0x0D)
                    case UInt8(ascii: "t"): out.append(0x09)
                    case UInt8(ascii: "u"):
                        var scalar = try hex4()
                        if scalar >= 0xD800 && scalar < 0xDC00 {
                            guard bytes.count - position >= 6, bytes[position] == 0x5C, bytes[position + 1] == UInt8(ascii: "u") else {
                                throw error("unpaired surrogate")
                            }
                            position += 2
                            let low = try hex4()
                            guard low >= 0xDC00 && low < 0xE000 else { throw error("invalid low surrogate") }
                            scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                        } else if scalar >= 0xDC00 && scalar < 0xE000 {
                            throw error("unpaired surrogate")
                        }
                        guard let u = Unicode.Scalar(scalar) else { throw error("invalid unicode escape") }
                        out.append(contentsOf: Array(String(Character(u)).utf8))
                    default: throw error("invalid escape")
                    }
                    runStart = position
                    continue
                }
                position += 1
            }
            guard let s = String(validating: out, as: UTF8.self) else { throw error("string is not valid UTF-8") }
            return s
        }

        mutating func hex4() throws(JSONError) -> UInt32 {
            guard bytes.count - position >= 4 else { throw error("short unicode escape") }
            var v: UInt32 = 0
            for _ in 0..<4 {
                let b = bytes[position]
                let d: UInt32
                switch b {
                case 0x30...0x39: d = UInt32(b - 0x30)
                case 0x41...0x46: d = UInt32(b - 0x41 + 10)
                case 0x61...0x66: d = UInt32(b - 0x61 + 10)
                default: throw error("invalid hex digit in unicode escape")
                }
                v = v << 4 | d
                position += 1
            }
            return v
        }

        mutating func array(depth: Int) throws(JSONError) -> JSONValue {
            position += 1
            var items: [JSONNode] = []
            skipWhitespace()
            if position < bytes.count, bytes[position] == UInt8(ascii: "]") {
                position += 1
                return .array(items)
            }
            while true {
                skipWhitespace()
                items.append(try value(depth: depth + 1))
                skipWhitespace()
                guard position < bytes.count else { throw error("unterminated array") }
                if bytes[position] == UInt8(ascii: ",") { position += 1; continue }
                if bytes[position] == UInt8(ascii: "]") { position += 1; return .array(items) }
                throw error("expected ',' or ']' in array")
            }
        }

        mutating func object(depth: Int) throws(JSONError) -> JSONValue {
            position += 1
            var members: [(key: String, value: JSONNode)] = []
            skipWhitespace()
            if position < bytes.count, bytes[position] == UInt8(ascii: "}") {
                position += 1
                return .object(members)
            }
            while true {
                skipWhitespace()
                guard position < bytes.count, bytes[position] == UInt8(ascii: "\"") else { throw error("expected a string key in object") }
                let key = try string()
                skipWhitespace()
                guard position < bytes.count, bytes[position] == UInt8(ascii: ":") else { throw error("expected ':' in object") }
                position += 1
                skipWhitespace()
                members.append((key, try value(depth: depth + 1)))
                skipWhitespace()
                guard position < bytes.count else { throw error("unterminated object") }
                if bytes[position] == UInt8(ascii: ",") { position += 1; continue }
                if bytes[position] == UInt8(ascii: "}") { position += 1; return .object(members) }
                throw error("expected ',' or '}' in object")
            }
        }
    }
}

/// Appends JSON text to a byte buffer. Callers are responsible for commas and structure; this type
/// only gets escaping right, which is the part that must never be wrong.
public struct JSONWriter {
    public var bytes: [UInt8]
    public init(capacity: Int = 256) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    @inline(__always) public mutating func raw(_ s: StaticString) {
        bytes.append(contentsOf: UnsafeBufferPointer(start: s.utf8Start, count: s.utf8CodeUnitCount))
    }
    public mutating func raw(_ b: [UInt8]) { bytes.append(contentsOf: b) }
    public mutating func int(_ v: Int64) { bytes.append(contentsOf: String(v).utf8) }
    public mutating func int(_ v: Int) { int(Int64(v)) }
    public mutating func bool(_ v: Bool) { v ? raw("true") : raw("false") }

    public mutating func string(_ s: String) {
        var s = s
        s.withUTF8 { stringBytes($0) }
    }

    /// Writes `utf8` (assumed valid UTF-8) as a JSON string.
    public mutating func stringBytes(_ utf8: UnsafeBufferPointer<UInt8>) {
        bytes.append(0x22)
        var runStart = 0
        for i in 0..<utf8.count {
            let b = utf8[i]
            if b >= 0x20 && b != 0x22 && b != 0x5C { continue }
            if runStart < i { bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[runStart..<i])) }
            switch b {
            case 0x22: raw("\\\"")
            case 0x5C: raw("\\\\")
            case 0x0A: raw("\\n")
            case 0x0D: raw("\\r")
            case 0x09: raw("\\t")
            default:
                raw("\\u00")
                let hex: [UInt8] = Array("0123456789abcdef".utf8)
                bytes.append(hex[Int(b >> 4)])
                bytes.append(hex[Int(b & 0xF)])
            }
            runStart = i + 1
        }
        if runStart < utf8.count { bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[runStart...])) }
        bytes.append(0x22)
    }

    public mutating func stringBytes(_ utf8: [UInt8]) { utf8.withUnsafeBufferPointer { stringBytes($0) } }

    /// Writes `data` base64-encoded as a JSON string.
    public mutating func base64String(_ data: [UInt8]) {
        bytes.append(0x22)
        Base64.encode(data, into: &bytes)
        bytes.append(0x22)
    }
}

/// Big-endian fixed-width integers and Kafka's zig-zag varints, written to and read from byte arrays.
/// Readers are bounds-checked and throw `DecodeError` instead of trapping: every byte they see may
/// come from a torn file or a hostile peer.

public struct DecodeError: Error, Equatable, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

public struct ByteWriter: Sendable {
    public var bytes: [UInt8]
    public init(capacity: Int = 0) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }
    public mutating func int8(_ v: Int8) { bytes.append(UInt8(bitPattern: v)) }
    public mutating func int16(_ v: Int16) { uint(UInt64(UInt16(bitPattern: v)), width: 2) }
    public mutating func int32(_ v: Int32) { uint(UInt64(UInt32(bitPattern: v)), width: 4) }
    public mutating func uint32(_ v: UInt32) { uint(UInt64(v), width: 4) }
    public mutating func int64(_ v: Int64) { uint(UInt64(bitPattern: v), width: 8) }
    mutating func uint(_ v: UInt64, width: Int) {
        var shift = (width - 1) * 8
        while shift >= 0 {
            bytes.append(UInt8(truncatingIfNeeded: v >> UInt64(shift)))
            shift -= 8
        }
    }
    /// Zig-zag varint (Kafka's `varint`/`varlong`).
    public mutating func varint(_ v: Int64) {
        var z = UInt64(bitPattern: (v << 1) ^ (v >> 63))
        while z >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: z) | 0x80)
            z >>= 7
        }
        bytes.append(UInt8(z))
    }
    public mutating func append(_ b: [UInt8]) { bytes.append(contentsOf: b) }
    public mutating func append(_ b: UnsafeRawBufferPointer) { bytes.append(contentsOf: b) }

    public static func varintSize(_ v: Int64) -> Int {
        var z = UInt64(bitPattern: (v << 1) ^ (v >> 63))
        var n = 1
        while z >= 0x80 {
            z >>= 7
            n += 1
        }
        return n
    }
}

/// A cursor over borrowed bytes. Valid only inside the `withUnsafeBytes` that produced the buffer.
public struct ByteReader {
    public let buffer: UnsafeRawBufferPointer
    public var position: Int

    public init(_ buffer: UnsafeRawBufferPointer, position: Int = 0) {
        self.buffer = buffer
        self.position = position
    }

    public var remaining: Int { buffer.count - position }

    @inline(__always) mutating func need(_ n: Int) throws(DecodeError) {
        if n < 0 || buffer.count - position < n { throw DecodeError("truncated: need \(n) bytes at \(position), have \(buffer.count - position)") }
    }
    public mutating func int8() throws(DecodeError) -> Int8 {
        try need(1)
        defer { position += 1 }
        return Int8(bitPattern: buffer[position])
    }
    public mutating func int16() throws(DecodeError) -> Int16 { Int16(truncatingIfNeeded: try uint(width: 2)) }
    public mutating func int32() throws(DecodeError) -> Int32 { Int32(truncatingIfNeeded: try uint(width: 4)) }
    public mutating func uint32() throws(DecodeError) -> UInt32 { UInt32(truncatingIfNeeded: try uint(width: 4)) }
    public mutating func int64() throws(DecodeError) -> Int64 { Int64(bitPattern: try uint(width: 8)) }
    mutating func uint(width: Int) throws(DecodeError) -> UInt64 {
        try need(width)
        var v: UInt64 = 0
        for i in 0..<width { v = v << 8 | UInt64(buffer[position + i]) }
        position += width
        return v
    }
    public mutating func varint() throws(DecodeError) -> Int64 {
        var z: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            try need(1)
            let b = buffer[position]
            position += 1
            if shift > 63 { throw DecodeError("varint longer than 10 bytes") }
            z |= UInt64(b & 0x7F) << shift
            if b < 0x80 { break }
            shift += 7
        }
        return Int64(bitPattern: z >> 1) ^ -Int64(bitPattern: z & 1)
    }
    public mutating func bytes(_ n: Int) throws(DecodeError) -> [UInt8] {
        try need(n)
        defer { position += n }
        return [UInt8](UnsafeRawBufferPointer(rebasing: buffer[position..<position + n]))
    }
    public mutating func skip(_ n: Int) throws(DecodeError) {
        try need(n)
        position += n
    }
}

extension Array where Element == UInt8 {
    /// Overwrites a big-endian integer in place (used to patch a batch's base offset and length).
    public mutating func putBigEndian<T: FixedWidthInteger>(_ value: T, at index: Int) {
        let width = T.bitWidth / 8
        for i in 0..<width {
            self[index + i] = UInt8(truncatingIfNeeded: value >> ((width - 1 - i) * 8))
        }
    }

    public func readBigEndian<T: FixedWidthInteger>(_: T.Type, at index: Int) -> T {
        let width = T.bitWidth / 8
        var v: T = 0
        for i in 0..<width { v = v << 8 | T(truncatingIfNeeded: self[index + i]) }
        return v
    }
}

/// `withUnsafeBytes` with a typed throw (the standard library's version rethrows `any Error`).
@inline(__always)
public func withBytes<R>(_ bytes: [UInt8], _ body: (UnsafeRawBufferPointer) throws(DecodeError) -> R) throws(DecodeError) -> R {
    let result: Result<R, DecodeError> = bytes.withUnsafeBytes { raw in
        do throws(DecodeError) { return .success(try body(raw)) } catch { return .failure(error) }
    }
    return try result.get()
}

import CCRC32C

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as Kafka's RecordBatch v2 uses.
/// Uses the CPU's `crc32` instruction when there is one (x86-64 SSE4.2: the read path verifies every
/// batch it serves, and the software version was a quarter of the broker's CPU on read-back);
/// otherwise slicing-by-8 tables in Swift. Both give the same values (tests check them against each other).
public enum CRC32C {
    static let hardwareAvailable = ccrc32c_hardware_available() != 0
    static let tableRows: [[UInt32]] = {
        var tables = [[UInt32]](repeating: [UInt32](repeating: 0, count: 256), count: 8)
        for i in 0..<256 {
            var crc = UInt32(i)
            for _ in 0..<8 { crc = (crc & 1) != 0 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
            tables[0][i] = crc
        }
        for i in 0..<256 {
            var crc = tables[0][i]
            for t in 1..<8 {
                crc = tables[0][Int(crc & 0xFF)] ^ (crc >> 8)
                tables[t][i] = crc
            }
        }
        return tables
    }()
    /// The eight tables back to back, so the inner loop indexes one contiguous buffer.
    static let flatTable: [UInt32] = tableRows.flatMap { $0 }

    /// The checksum of `bytes`, continuing from `crc` (pass the previous result to checksum in pieces).
    public static func checksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        if hardwareAvailable {
            guard let base = bytes.baseAddress else { return crc }
            return ~ccrc32c_hardware_update(~crc, base, bytes.count)
        }
        return softwareChecksum(bytes, continuing: crc)
    }

    /// The table-driven version (used when the CPU has no crc32 instruction; tests compare both).
    public static func softwareChecksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        var crc = ~crc
        var index = 0
        let count = bytes.count
        flatTable.withUnsafeBufferPointer { t in
            while count - index >= 8 {
                let lo = UInt32(bytes[index]) | UInt32(bytes[index + 1]) << 8
                    | UInt32(bytes[index + 2]) << 16 | UInt32(bytes[index + 3]) << 24
                let hi = UInt32(bytes[index + 4]) | UInt32(bytes[index + 5]) << 8
                    | UInt32(bytes[index + 6]) << 16 | UInt32(bytes[index + 7]) << 24
                let x = crc ^ lo
                crc = t[7 * 256 + Int(x & 0xFF)] ^ t[6 * 256 + Int((x >> 8) & 0xFF)]
                    ^ t[5 * 256 + Int((x >> 16) & 0xFF)] ^ t[4 * 256 + Int(x >> 24)]
                    ^ t[3 * 256 + Int(hi & 0xFF)] ^ t[2 * 256 + Int((hi >> 8) & 0xFF)]
                    ^ t[1 * 256 + Int((hi >> 16) & 0xFF)] ^ t[0 * 256 + Int(hi >> 24)]
                index += 8
            }
            while index < count {
                crc = t[Int((crc ^ UInt32(bytes[index])) & 0xFF)] ^ (crc >> 8)
                index += 1
            }
        }
        return ~crc
    }

    public static func checksum(_ bytes: [UInt8]) -> UInt32 {
        bytes.withUnsafeBytes { checksum($0) }
    }
}

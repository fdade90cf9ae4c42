import BrokerModel
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// The single-node broker's metadata: cluster id and topics with their partition counts and configs.
/// Stored as `meta.json` in the data directory, replaced atomically (write a temporary file, fsync
/// it, rename over the old one, fsync the directory) so a crash leaves either the old or the new
/// version, never a torn one. In a cluster this role moves to the metadata Raft group.
struct StoredMetadata: Codable, Equatable {
    var formatVersion = 1
    var clusterID: String
    var topics: [StoredTopic]
}

struct StoredTopic: Codable, Equatable {
    var name: String
    var partitionCount: Int32
    var config: TopicConfig
    var createdMilliseconds: Int64
}

struct MetadataStore {
    let directory: String
    var path: String { directory + "/meta.json" }

    func load() throws(BrokerError) -> StoredMetadata? {
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        do {
            let data = try Data(contentsOf: URL(fileURLWithPath: path))
            return try JSONDecoder().decode(StoredMetadata.self, from: data)
        } catch {
            throw .storage("cannot read \(path): \(error)")
        }
    }

    func save(_ metadata: StoredMetadata) throws(BrokerError) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data: Data
        do { data = try encoder.encode(metadata) } catch { throw .storage("cannot encode metadata: \(error)") }
        try DurableFile.replace(path: path, with: [UInt8](data))
    }
}

/// Crash-safe whole-file replacement with POSIX calls.
enum DurableFile {
    static func replace(path: String, with bytes: [UInt8]) throws(BrokerError) {
        let temporary = path + ".tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .storage("cannot create \(temporary): \(String(cString: strerror(errno)))") }
        var written = 0
        while written < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + written, bytes.count - written) }
            if n < 0 {
                if errno == EINTR { continue }
                let message = String(cString: strerror(errno))
                close(fd)
                throw .storage("cannot write \(temporary): \(message)")
            }
            written += n
        }
        guard fsync(fd) == 0 else {
            let message = String(cString: strerror(errno))
            close(fd)
            throw .storage("cannot fsync \(temporary): \(message)")
        }
        close(fd)
        guard rename(temporary, path) == 0 else { throw .storage("cannot rename \(temporary): \(String(cString: strerror(errno)))") }
        try syncDirectory((path as NSString).deletingLastPathComponent)
    }

    static func syncDirectory(_ directory: String) throws(BrokerError) {
        let fd = open(directory.isEmpty ? "." : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw .storage("cannot open directory \(directory): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw .storage("cannot fsync directory \(directory): \(String(cString: strerror(errno)))") }
    }
}

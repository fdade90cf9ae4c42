import BrokerModel
import Foundation
import LogStorage

/// The single-node broker's metadata: cluster id and topics with their partition counts and configs.
/// Stored as `meta.json` in the data directory, replaced atomically (write a temporary file, fsync
/// it, rename over the old one, fsync the directory) so a crash leaves either the old or the new
/// version, never a torn one. Goes through the same `FileSystem` as the logs, so simulated-crash
/// tests cover it too. In a cluster this role moves to the metadata Raft group.
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
    let fileSystem: any FileSystem
    var path: String { fileSystem.join(directory, "meta.json") }
    var temporaryPath: String { fileSystem.join(directory, "meta.json.tmp") }

    func load() throws(BrokerError) -> StoredMetadata? {
        guard fileSystem.fileExists(path) else { return nil }
        do {
            let file = try fileSystem.openFile(path, create: false)
            let bytes = try file.read(at: 0, count: Int(try file.size()))
            return try JSONDecoder().decode(StoredMetadata.self, from: Data(bytes))
        } catch {
            throw .storage("cannot read \(path): \(error)")
        }
    }

    func save(_ metadata: StoredMetadata) throws(BrokerError) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        do {
            let bytes = [UInt8](try encoder.encode(metadata))
            try fileSystem.replaceAtomically(path, with: bytes, temporaryPath: temporaryPath, directory: directory)
        } catch {
            throw .storage("cannot write \(path): \(error)")
        }
    }
}

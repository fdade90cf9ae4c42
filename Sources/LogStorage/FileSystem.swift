/// Operating errors of the storage layer. Broken invariants are `precondition`s, not errors.
public enum StorageError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A system call failed (disk full, I/O error, permission). The message names the call and path.
    case io(String)
    /// Bytes on disk failed validation (CRC, magic, length) where they must be valid.
    case corrupt(String)
    /// The log was closed or deleted.
    case closed
    /// The requested offset lies outside `[logStartOffset, logEndOffset]`.
    case offsetOutOfRange(requested: Int64, logStart: Int64, logEnd: Int64)
    /// A batch's offsets go backwards or would not fit in a segment (replication bug upstream).
    case invalidBatch(String)

    public var description: String {
        switch self {
        case .io(let m): "storage I/O error: \(m)"
        case .corrupt(let m): "corrupt data on disk: \(m)"
        case .closed: "the partition log is closed"
        case .offsetOutOfRange(let requested, let start, let end):
            "offset \(requested) is out of range: the log holds \(start)..<\(end)"
        case .invalidBatch(let m): "invalid batch: \(m)"
        }
    }
}

/// An open file. Positional reads and writes only (no shared cursor), so several threads may use
/// one handle at once: the broker appends under its lock while a group-commit `sync()` runs outside
/// it. The handle stays valid after its file is removed or renamed (POSIX semantics); it is closed
/// when the last reference goes away.
public protocol FileHandle: AnyObject, Sendable {
    /// Reads up to `count` bytes at `offset`; fewer only at end of file.
    func read(at offset: Int64, count: Int) throws(StorageError) -> [UInt8]
    /// Writes all of `bytes` at `offset`, extending the file if needed. Not durable until `sync()`.
    func write(_ bytes: [UInt8], at offset: Int64) throws(StorageError)
    /// Makes every write so far durable (fdatasync).
    func sync() throws(StorageError)
    /// Cuts (or extends with zeros) the file to `size` bytes. Not durable until `sync()`.
    func truncate(to size: Int64) throws(StorageError)
    /// The current size in bytes.
    func size() throws(StorageError) -> Int64
}

/// The file operations the log needs, so tests can swap in a simulated disk that loses
/// un-synced data on a "crash" (`BrokerTesting.SimulatedFileSystem`).
///
/// Durability contract (POSIX's): file contents become durable by `FileHandle.sync()`; a file's
/// *directory entry* (its creation, rename or removal) becomes durable only by `syncDirectory` of
/// its parent. Directories created by `createDirectory` are durable when it returns.
public protocol FileSystem: Sendable {
    /// Creates `path` and any missing parents (mkdir -p); no error if it exists.
    func createDirectory(_ path: String) throws(StorageError)
    /// Names (not paths) of the entries in `path`, unsorted, without `.` and `..`.
    func listDirectory(_ path: String) throws(StorageError) -> [String]
    /// Removes `path` and everything under it (rm -r), durably. No error if it does not exist.
    func removeDirectory(_ path: String) throws(StorageError)
    func directoryExists(_ path: String) -> Bool
    /// Opens `path` for reading and writing; creates it empty when `create` and it is missing.
    func openFile(_ path: String, create: Bool) throws(StorageError) -> any FileHandle
    func fileExists(_ path: String) -> Bool
    /// Atomically replaces `to` with `from`.
    func rename(from: String, to: String) throws(StorageError)
    /// Removes the file; no error if it does not exist.
    func removeFile(_ path: String) throws(StorageError)
    /// Makes creations, renames and removals of entries in `path` durable (fsync of the directory).
    func syncDirectory(_ path: String) throws(StorageError)
}

extension FileSystem {
    /// `directory/name`.
    public func join(_ directory: String, _ name: String) -> String {
        directory.hasSuffix("/") ? directory + name : directory + "/" + name
    }
}

extension FileSystem {
    /// Replaces `path` with `bytes` so that a crash leaves either the old or the new content: write a
    /// temporary file, fsync it, rename it over `path`, fsync the directory.
    public func replaceAtomically(_ path: String, with bytes: [UInt8], temporaryPath: String, directory: String) throws(StorageError) {
        if fileExists(temporaryPath) { try removeFile(temporaryPath) }
        let file = try openFile(temporaryPath, create: true)
        try file.truncate(to: 0)
        try file.write(bytes, at: 0)
        try file.sync()
        try rename(from: temporaryPath, to: path)
        try syncDirectory(directory)
    }
}

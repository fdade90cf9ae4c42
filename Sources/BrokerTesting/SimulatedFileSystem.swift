import BrokerModel
import LogStorage
import Synchronization

/// An in-memory `FileSystem` that models what survives a power cut, for crash tests.
///
/// For every file it keeps the *durable* content (as of the last `sync()`) and the *volatile*
/// content (everything written). For every directory entry it keeps the durable namespace (as of
/// the last `syncDirectory` of its parent) and the current one. `crash(seed:mode:)` replaces the
/// current state with what a disk could hold after a power cut:
///
/// - `.drop`: every file goes back to its durable content;
/// - `.tear`: a file whose un-synced changes are pure appends keeps its durable content plus a
///   random prefix of the appended bytes, optionally followed by a few garbage bytes; a file with
///   other un-synced changes (overwrites, truncation) comes back either as it was last synced or as
///   it is now, at random;
///
/// and in both modes the namespace goes back to its durable state: files whose creation was never
/// made durable disappear, un-synced removals and renames are undone. Directories are durable as
/// soon as they are created or removed (a simplification). The outcome depends only on the seed.
///
/// Handles opened before a crash are dead afterwards: every call on them throws `.io`, as the
/// process that held them would be gone.
///
/// Faults: `diskFull` makes writes that grow a file fail; `failNextSyncs` makes the next syncs fail.
///
/// Thread-safe: all state sits behind one `Mutex`.
public final class SimulatedFileSystem: FileSystem {
    public enum CrashMode: Sendable, Equatable {
        /// Lose every un-synced byte.
        case drop
        /// Keep a random prefix of un-synced appends; with `garbage`, append random bytes after it.
        case tear(garbage: Bool)
    }

    /// One file's content. Mutated only under `SimulatedFileSystem.state`'s lock.
    final class Inode: @unchecked Sendable {
        var content: [UInt8] = []
        /// While nil, the durable content is `content[0..<durableCount]` (only appends since the
        /// last sync: the common case, kept cheap so large logs stay linear).
        var durableSnapshot: [UInt8]?
        var durableCount = 0

        var durable: [UInt8] { durableSnapshot ?? Array(content[0..<durableCount]) }

        /// Called before a change that touches bytes below `position`.
        func preserveDurable(below position: Int) {
            if durableSnapshot == nil && position < durableCount { durableSnapshot = Array(content[0..<durableCount]) }
        }
    }

    struct State {
        var files: [String: Inode] = [:]
        var durableFiles: [String: Inode] = [:]
        var directories: Set<String> = ["/"]
        var generation: UInt64 = 0
        var diskFull = false
        var failingSyncs = 0
    }

    let state = Mutex(State())

    public init() {}

    static func normalize(_ path: String) -> String {
        let parts = path.split(separator: "/", omittingEmptySubsequences: true)
        return "/" + parts.joined(separator: "/")
    }

    static func parent(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/"), slash != path.startIndex else { return "/" }
        return String(path[..<slash])
    }

    // MARK: faults

    /// While true, any write that would grow a file fails with "no space left on device".
    public var diskFull: Bool {
        get { state.withLock { $0.diskFull } }
        set { state.withLock { $0.diskFull = newValue } }
    }

    /// Makes the next `count` `sync()` calls fail with an I/O error (and make nothing durable).
    public func failNextSyncs(_ count: Int) {
        state.withLock { $0.failingSyncs = count }
    }

    // MARK: crash

    /// Simulates a power cut (see the type's documentation). Deterministic for a given `seed`.
    public func crash(seed: UInt64, mode: CrashMode) {
        var random = SimulatedFileSystemRandom(seed: seed)
        crash(using: &random, mode: mode)
    }

    public func crash<R: RandomNumberGenerator>(using random: inout R, mode: CrashMode) {
        state.withLock { state in
            state.generation += 1
            state.files = state.durableFiles
            // Visit inodes in path order so the outcome does not depend on dictionary order.
            var seen = Set<ObjectIdentifier>()
            for path in state.files.keys.sorted() {
                let inode = state.files[path]!
                guard seen.insert(ObjectIdentifier(inode)).inserted else { continue }
                var result = inode.durable
                if case .tear(let garbage) = mode {
                    if inode.durableSnapshot == nil {
                        let extra = inode.content.count - inode.durableCount
                        if extra > 0 {
                            let keep = Int.random(in: 0...extra, using: &random)
                            result.append(contentsOf: inode.content[inode.durableCount..<(inode.durableCount + keep)])
                            if garbage && Bool.random(using: &random) {
                                for _ in 0..<Int.random(in: 1...16, using: &random) { result.append(UInt8.random(in: 0...255, using: &random)) }
                            }
                        }
                    } else if Bool.random(using: &random) {
                        result = inode.content
                    }
                }
                inode.content = result
                inode.durableSnapshot = nil
                inode.durableCount = result.count
            }
        }
    }

    // MARK: inspection and damage, for tests

    /// The current (volatile) content of a file, or nil.
    public func contents(of path: String) -> [UInt8]? {
        state.withLock { $0.files[Self.normalize(path)]?.content }
    }

    /// Overwrites a file's content, durably (bit rot, or a test planting a corrupt file).
    public func setContents(of path: String, to bytes: [UInt8]) {
        let path = Self.normalize(path)
        state.withLock { state in
            let inode = state.files[path] ?? Inode()
            inode.content = bytes
            inode.durableSnapshot = nil
            inode.durableCount = bytes.count
            state.files[path] = inode
            state.durableFiles[path] = inode
        }
    }

    // MARK: FileSystem

    public func createDirectory(_ path: String) throws(StorageError) {
        var current = ""
        let normalized = Self.normalize(path)
        try state.withLock { (state) throws(StorageError) in
            for part in normalized.split(separator: "/") {
                current += "/" + part
                if state.files[current] != nil { throw .io("mkdir(\(current)): a file is in the way") }
                state.directories.insert(current)
            }
        }
    }

    public func listDirectory(_ path: String) throws(StorageError) -> [String] {
        let dir = Self.normalize(path)
        return try state.withLock { (state) throws(StorageError) -> [String] in
            guard state.directories.contains(dir) else { throw .io("opendir(\(dir)): no such directory") }
            var names: [String] = []
            for file in state.files.keys where Self.parent(file) == dir { names.append(String(file[file.index(after: file.lastIndex(of: "/")!)...])) }
            for sub in state.directories where sub != dir && Self.parent(sub) == dir {
                names.append(String(sub[sub.index(after: sub.lastIndex(of: "/")!)...]))
            }
            return names
        }
    }

    public func removeDirectory(_ path: String) throws(StorageError) {
        let dir = Self.normalize(path)
        let prefix = dir == "/" ? "/" : dir + "/"
        state.withLock { state in
            state.files = state.files.filter { !$0.key.hasPrefix(prefix) }
            state.durableFiles = state.durableFiles.filter { !$0.key.hasPrefix(prefix) }
            state.directories = state.directories.filter { $0 != dir && !$0.hasPrefix(prefix) }
        }
    }

    public func directoryExists(_ path: String) -> Bool {
        let dir = Self.normalize(path)
        return state.withLock { $0.directories.contains(dir) }
    }

    public func fileExists(_ path: String) -> Bool {
        let file = Self.normalize(path)
        return state.withLock { $0.files[file] != nil }
    }

    public func openFile(_ path: String, create: Bool) throws(StorageError) -> any FileHandle {
        let file = Self.normalize(path)
        return try state.withLock { (state) throws(StorageError) -> any FileHandle in
            guard state.directories.contains(Self.parent(file)) else { throw .io("open(\(file)): no such directory") }
            if state.directories.contains(file) { throw .io("open(\(file)): is a directory") }
            let inode: Inode
            if let existing = state.files[file] {
                inode = existing
            } else if create {
                inode = Inode()
                state.files[file] = inode
            } else {
                throw .io("open(\(file)): no such file")
            }
            return SimulatedFileHandle(fileSystem: self, inode: inode, path: file, generation: state.generation)
        }
    }

    public func rename(from: String, to: String) throws(StorageError) {
        let source = Self.normalize(from)
        let target = Self.normalize(to)
        try state.withLock { (state) throws(StorageError) in
            guard let inode = state.files[source] else { throw .io("rename(\(source)): no such file") }
            state.files[source] = nil
            state.files[target] = inode
        }
    }

    public func removeFile(_ path: String) throws(StorageError) {
        let file = Self.normalize(path)
        state.withLock { _ = $0.files.removeValue(forKey: file) }
    }

    public func syncDirectory(_ path: String) throws(StorageError) {
        let dir = Self.normalize(path)
        try state.withLock { (state) throws(StorageError) in
            guard state.directories.contains(dir) else { throw .io("fsync(\(dir)): no such directory") }
            for file in Set(state.files.keys).union(state.durableFiles.keys) where Self.parent(file) == dir {
                state.durableFiles[file] = state.files[file]
            }
        }
    }

    // MARK: handle operations (under the lock)

    fileprivate func withInode<R>(
        _ handle: SimulatedFileHandle, _ call: String, _ body: (inout State, Inode) throws(StorageError) -> R
    ) throws(StorageError) -> R {
        try state.withLock { (state) throws(StorageError) -> R in
            guard state.generation == handle.generation else { throw .io("\(call)(\(handle.path)): handle from before a crash") }
            return try body(&state, handle.inode)
        }
    }
}

/// A handle on a simulated file; keeps the file's content alive after removal, as POSIX does.
final class SimulatedFileHandle: FileHandle {
    let fileSystem: SimulatedFileSystem
    let inode: SimulatedFileSystem.Inode
    let path: String
    let generation: UInt64

    init(fileSystem: SimulatedFileSystem, inode: SimulatedFileSystem.Inode, path: String, generation: UInt64) {
        self.fileSystem = fileSystem
        self.inode = inode
        self.path = path
        self.generation = generation
    }

    func read(at offset: Int64, count: Int) throws(StorageError) -> [UInt8] {
        precondition(offset >= 0 && count >= 0)
        return try fileSystem.withInode(self, "pread") { (_, inode) throws(StorageError) -> [UInt8] in
            let start = min(Int(offset), inode.content.count)
            let end = min(start + count, inode.content.count)
            return Array(inode.content[start..<end])
        }
    }

    func write(_ bytes: [UInt8], at offset: Int64) throws(StorageError) {
        precondition(offset >= 0)
        try fileSystem.withInode(self, "pwrite") { (state, inode) throws(StorageError) in
            let start = Int(offset)
            let end = start + bytes.count
            if state.diskFull && end > inode.content.count { throw .io("pwrite(\(path)): No space left on device (errno 28)") }
            inode.preserveDurable(below: start)
            if start > inode.content.count { inode.content.append(contentsOf: [UInt8](repeating: 0, count: start - inode.content.count)) }
            if start == inode.content.count {
                inode.content.append(contentsOf: bytes)
            } else {
                let overlap = min(end, inode.content.count)
                inode.content.replaceSubrange(start..<overlap, with: bytes[0..<(overlap - start)])
                if end > overlap { inode.content.append(contentsOf: bytes[(overlap - start)...]) }
            }
        }
    }

    func sync() throws(StorageError) {
        try fileSystem.withInode(self, "fdatasync") { (state, inode) throws(StorageError) in
            if state.failingSyncs > 0 {
                state.failingSyncs -= 1
                throw .io("fdatasync(\(path)): Input/output error (errno 5)")
            }
            inode.durableSnapshot = nil
            inode.durableCount = inode.content.count
        }
    }

    func truncate(to size: Int64) throws(StorageError) {
        try fileSystem.withInode(self, "ftruncate") { (state, inode) throws(StorageError) in
            let size = Int(size)
            if size < inode.content.count {
                inode.preserveDurable(below: size)
                inode.content.removeSubrange(size...)
            } else if size > inode.content.count {
                if state.diskFull { throw .io("ftruncate(\(path)): No space left on device (errno 28)") }
                inode.content.append(contentsOf: [UInt8](repeating: 0, count: size - inode.content.count))
            }
        }
    }

    func size() throws(StorageError) -> Int64 {
        try fileSystem.withInode(self, "fstat") { (_, inode) throws(StorageError) -> Int64 in Int64(inode.content.count) }
    }
}

/// The simulated disk's generator, so a crash replays exactly from its seed.
public typealias SimulatedFileSystemRandom = SplitMix64

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// `FileSystem` over POSIX calls: `open`, `pread`, `pwrite`, `fdatasync`, `ftruncate`, and an
/// `fsync` of the directory for `syncDirectory`. Stateless, so it is trivially `Sendable`.
public struct PosixFileSystem: FileSystem {
    public init() {}

    static func failure(_ call: String, _ path: String) -> StorageError {
        let code = errno
        return .io("\(call)(\(path)): \(String(cString: strerror(code))) (errno \(code))")
    }

    public func createDirectory(_ path: String) throws(StorageError) {
        if directoryExists(path) { return }
        var prefix = path.hasPrefix("/") ? "/" : ""
        for component in path.split(separator: "/") {
            prefix += component
            if !directoryExists(prefix) {
                if mkdir(prefix, 0o755) != 0 && errno != EEXIST { throw Self.failure("mkdir", prefix) }
                // The new entry lives in its parent: make it durable so a crash cannot lose a
                // directory that already holds synced segments.
                let parent = prefix.contains("/") ? String(prefix[..<prefix.lastIndex(of: "/")!]) : "."
                try syncDirectory(parent.isEmpty ? "/" : parent)
            }
            prefix += "/"
        }
    }

    public func listDirectory(_ path: String) throws(StorageError) -> [String] {
        guard let dir = opendir(path) else { throw Self.failure("opendir", path) }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    public func removeDirectory(_ path: String) throws(StorageError) {
        guard directoryExists(path) else { return }
        for name in try listDirectory(path) {
            let child = join(path, name)
            if directoryExists(child) {
                try removeDirectory(child)
            } else if unlink(child) != 0 && errno != ENOENT {
                throw Self.failure("unlink", child)
            }
        }
        if rmdir(path) != 0 && errno != ENOENT { throw Self.failure("rmdir", path) }
        let parent = path.contains("/") ? String(path[..<path.lastIndex(of: "/")!]) : "."
        try syncDirectory(parent.isEmpty ? "/" : parent)
    }

    public func directoryExists(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    public func fileExists(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG
    }

    public func openFile(_ path: String, create: Bool) throws(StorageError) -> any FileHandle {
        let flags = O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0)
        let fd = open(path, flags, 0o644)
        if fd < 0 { throw Self.failure("open", path) }
        return PosixFileHandle(descriptor: fd, path: path)
    }

    public func rename(from: String, to: String) throws(StorageError) {
        #if canImport(Glibc)
            let result = Glibc.rename(from, to)
        #else
            let result = Darwin.rename(from, to)
        #endif
        if result != 0 { throw Self.failure("rename", from + " -> " + to) }
    }

    public func removeFile(_ path: String) throws(StorageError) {
        if unlink(path) != 0 && errno != ENOENT { throw Self.failure("unlink", path) }
    }

    public func syncDirectory(_ path: String) throws(StorageError) {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd < 0 { throw Self.failure("open", path) }
        defer { close(fd) }
        if fsync(fd) != 0 { throw Self.failure("fsync", path) }
    }
}

/// An open POSIX descriptor. Closed in `deinit` only, never explicitly: a group-commit flush may
/// still hold the handle of a segment that retention just removed, and an explicit close could let
/// the descriptor number be reused and synced (or written) by mistake.
public final class PosixFileHandle: FileHandle {
    let descriptor: Int32
    let path: String

    init(descriptor: Int32, path: String) {
        self.descriptor = descriptor
        self.path = path
    }

    deinit { close(descriptor) }

    public func read(at offset: Int64, count: Int) throws(StorageError) -> [UInt8] {
        precondition(count >= 0 && offset >= 0)
        if count == 0 { return [] }
        var done = 0
        var failed = false
        let bytes = [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            while done < count {
                let n = pread(descriptor, buffer.baseAddress! + done, count - done, off_t(offset) + off_t(done))
                if n < 0 {
                    if errno == EINTR { continue }
                    failed = true
                    break
                }
                if n == 0 { break }
                done += n
            }
            initialized = done
        }
        if failed { throw PosixFileSystem.failure("pread", path) }
        return bytes
    }

    public func write(_ bytes: [UInt8], at offset: Int64) throws(StorageError) {
        var done = 0
        let ok = bytes.withUnsafeBytes { raw -> Bool in
            while done < raw.count {
                let n = pwrite(descriptor, raw.baseAddress! + done, raw.count - done, off_t(offset) + off_t(done))
                if n < 0 {
                    if errno == EINTR { continue }
                    return false
                }
                done += n
            }
            return true
        }
        if !ok { throw PosixFileSystem.failure("pwrite", path) }
    }

    public func sync() throws(StorageError) {
        #if canImport(Glibc)
            if fdatasync(descriptor) != 0 { throw PosixFileSystem.failure("fdatasync", path) }
        #else
            if fsync(descriptor) != 0 { throw PosixFileSystem.failure("fsync", path) }
        #endif
    }

    public func truncate(to size: Int64) throws(StorageError) {
        if ftruncate(descriptor, off_t(size)) != 0 { throw PosixFileSystem.failure("ftruncate", path) }
    }

    public func size() throws(StorageError) -> Int64 {
        var st = stat()
        if fstat(descriptor, &st) != 0 { throw PosixFileSystem.failure("fstat", path) }
        return Int64(st.st_size)
    }
}

import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// An exclusive lock on a data directory (`<data>/.lock`, like Kafka's), held for the life of the
/// process: two brokers on one directory would overwrite each other's logs and lose acknowledged
/// records. `flock` locks are released by the kernel when the process dies, so a crash never leaves a
/// stale lock behind.
public final class DataDirectoryLock {
    private let fd: Int32
    public let path: String

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    public init(directory: String) throws(Failure) {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw Failure(description: "cannot create data directory \(directory): \(error)")
        }
        path = (directory as NSString).appendingPathComponent(".lock")
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw Failure(description: "cannot open \(path): \(String(cString: strerror(errno)))") }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let holder = (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
            close(fd)
            throw Failure(description: "data directory \(directory) is in use by another petrel process\(holder.isEmpty ? "" : " (pid \(holder))")")
        }
        self.fd = fd
        // Record who holds it, for the error message above; the lock itself is the flock.
        let pid = Array("\(getpid())\n".utf8)
        _ = ftruncate(fd, 0)
        _ = pid.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
    }

    deinit {
        flock(fd, LOCK_UN)
        close(fd)
    }
}

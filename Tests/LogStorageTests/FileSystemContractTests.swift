import BrokerTesting
import LogStorage
import Testing

/// The same expectations against the real and the simulated file system.
@Suite struct FileSystemContractTests {
    @Test(arguments: FileSystemKind.allCases)
    func directoriesAreCreatedListedAndRemoved(kind: FileSystemKind) throws {
        try withFileSystem(kind) { fs, root in
            let dir = fs.join(root, "a/b")
            #expect(!fs.directoryExists(dir))
            try fs.createDirectory(dir)
            try fs.createDirectory(dir)  // idempotent
            #expect(fs.directoryExists(dir))
            #expect(try fs.listDirectory(dir).isEmpty)
            _ = try fs.openFile(fs.join(dir, "x.log"), create: true)
            try fs.createDirectory(fs.join(dir, "sub"))
            #expect(Set(try fs.listDirectory(dir)) == ["x.log", "sub"])
            #expect(fs.fileExists(fs.join(dir, "x.log")))
            #expect(!fs.fileExists(fs.join(dir, "sub")))
            try fs.removeDirectory(fs.join(root, "a"))
            #expect(!fs.directoryExists(dir))
            #expect(!fs.fileExists(fs.join(dir, "x.log")))
            try fs.removeDirectory(fs.join(root, "a"))  // no error when missing
        }
    }

    @Test(arguments: FileSystemKind.allCases)
    func positionalReadsAndWrites(kind: FileSystemKind) throws {
        try withFileSystem(kind) { fs, root in
            try fs.createDirectory(root)
            let file = try fs.openFile(fs.join(root, "f"), create: true)
            #expect(try file.size() == 0)
            try file.write([1, 2, 3, 4], at: 0)
            try file.write([9, 9], at: 1)
            try file.write([7], at: 6)  // past the end: the hole reads as zeros
            #expect(try file.size() == 7)
            #expect(try file.read(at: 0, count: 7) == [1, 9, 9, 4, 0, 0, 7])
            #expect(try file.read(at: 5, count: 100) == [0, 7])  // short read only at end of file
            #expect(try file.read(at: 50, count: 10) == [])
            try file.sync()
            try file.truncate(to: 2)
            #expect(try file.read(at: 0, count: 10) == [1, 9])
            // A second handle sees the same bytes.
            let again = try fs.openFile(fs.join(root, "f"), create: false)
            #expect(try again.read(at: 0, count: 10) == [1, 9])
        }
    }

    @Test(arguments: FileSystemKind.allCases)
    func openWithoutCreateFailsForMissingFile(kind: FileSystemKind) throws {
        try withFileSystem(kind) { fs, root in
            try fs.createDirectory(root)
            #expect(throws: StorageError.self) { _ = try fs.openFile(fs.join(root, "missing"), create: false) }
            #expect(!fs.fileExists(fs.join(root, "missing")))
        }
    }

    @Test(arguments: FileSystemKind.allCases)
    func renameReplacesAndRemoveIsIdempotent(kind: FileSystemKind) throws {
        try withFileSystem(kind) { fs, root in
            try fs.createDirectory(root)
            let a = fs.join(root, "a")
            let b = fs.join(root, "b")
            try fs.openFile(a, create: true).write([1], at: 0)
            try fs.openFile(b, create: true).write([2, 2], at: 0)
            try fs.rename(from: a, to: b)
            try fs.syncDirectory(root)
            #expect(!fs.fileExists(a))
            #expect(try fs.openFile(b, create: false).read(at: 0, count: 10) == [1])
            try fs.removeFile(b)
            try fs.removeFile(b)
            #expect(try fs.listDirectory(root).isEmpty)
        }
    }

    @Test(arguments: FileSystemKind.allCases)
    func handleOutlivesRemoval(kind: FileSystemKind) throws {
        try withFileSystem(kind) { fs, root in
            try fs.createDirectory(root)
            let path = fs.join(root, "segment.log")
            let file = try fs.openFile(path, create: true)
            try file.write([5, 6], at: 0)
            try fs.removeFile(path)
            try fs.syncDirectory(root)
            // A group commit may still sync a segment that retention removed meanwhile.
            try file.write([7], at: 2)
            try file.sync()
            #expect(try file.read(at: 0, count: 3) == [5, 6, 7])
            #expect(!fs.fileExists(path))
        }
    }
}

/// Crash behaviour of the simulated disk itself.
@Suite struct SimulatedFileSystemCrashTests {
    @Test func dropLosesUnsyncedBytesAndUnsyncedFiles() throws {
        let fs = SimulatedFileSystem()
        try fs.createDirectory("/d")
        let kept = try fs.openFile("/d/kept", create: true)
        try fs.syncDirectory("/d")
        try kept.write([1, 2], at: 0)
        try kept.sync()
        try kept.write([3, 4], at: 2)
        let lost = try fs.openFile("/d/lost", create: true)
        try lost.write([9], at: 0)
        try lost.sync()  // content durable, but the directory entry never was
        fs.crash(seed: 1, mode: .drop)
        #expect(fs.contents(of: "/d/kept") == [1, 2])
        #expect(!fs.fileExists("/d/lost"))
        #expect(throws: StorageError.self) { _ = try kept.read(at: 0, count: 1) }  // dead handle
    }

    @Test func unsyncedRemovalIsUndoneAndTruncationMayBe() throws {
        let fs = SimulatedFileSystem()
        try fs.createDirectory("/d")
        let file = try fs.openFile("/d/f", create: true)
        try file.write([1, 2, 3], at: 0)
        try file.sync()
        try fs.syncDirectory("/d")
        try file.truncate(to: 1)
        try fs.removeFile("/d/f")
        fs.crash(seed: 7, mode: .drop)
        #expect(fs.contents(of: "/d/f") == [1, 2, 3])
    }

    @Test func tearKeepsAPrefixOfTheUnsyncedTailAndIsDeterministic() throws {
        var outcomes = Set<[UInt8]>()
        for seed in UInt64(0)..<40 {
            func run() throws -> [UInt8] {
                let fs = SimulatedFileSystem()
                try fs.createDirectory("/d")
                let file = try fs.openFile("/d/f", create: true)
                try fs.syncDirectory("/d")
                try file.write([1, 2], at: 0)
                try file.sync()
                try file.write(Array(10..<30), at: 2)
                fs.crash(seed: seed, mode: .tear(garbage: false))
                return fs.contents(of: "/d/f")!
            }
            let first = try run()
            #expect(try run() == first, "seed \(seed) must replay")
            #expect(Array(first.prefix(2)) == [1, 2])
            #expect(Array(first.dropFirst(2)) == Array((10..<30).prefix(first.count - 2)))
            outcomes.insert(first)
        }
        #expect(outcomes.count > 5)
    }

    @Test func faultsFailWritesAndSyncs() throws {
        let fs = SimulatedFileSystem()
        try fs.createDirectory("/d")
        let file = try fs.openFile("/d/f", create: true)
        try file.write([1], at: 0)
        fs.diskFull = true
        #expect(throws: StorageError.self) { try file.write([2], at: 1) }
        try file.write([3], at: 0)  // overwriting in place needs no space
        fs.diskFull = false
        fs.failNextSyncs(1)
        #expect(throws: StorageError.self) { try file.sync() }
        try file.sync()
    }
}

import BrokerModel
import Consensus
import LogStorage
import Synchronization

/// What a replica keeps beside its partition log: the Raft hard state, where the log starts
/// (the snapshot point and the membership in force there) and an index of the membership batches
/// so `open` need not scan the whole log.
///
/// The log is the truth for batches; this state is the truth for where the log *starts*. When
/// they disagree after a crash, `ReplicaStorage.open` brings the log in line with the state
/// (see `resetPending`, and retention writing the state before it deletes segments).
struct ReplicaDurableState: Equatable {
    var hardState: HardState
    var snapshotPoint: LogPosition
    var snapshotMembership: Membership
    /// Set while a snapshot install may not have finished restarting the log at
    /// `snapshotPoint.offset + 1`: `open` redoes the reset.
    var resetPending: Bool
    /// Membership batches above `snapshotPoint` up to `scannedThrough`: last offset and content.
    var memberships: [(offset: Offset, membership: Membership)]
    /// Every membership batch at or below this offset is in `memberships`; `open` scans the log
    /// only after it.
    var scannedThrough: Offset

    static func == (a: ReplicaDurableState, b: ReplicaDurableState) -> Bool {
        a.hardState == b.hardState && a.snapshotPoint == b.snapshotPoint && a.snapshotMembership == b.snapshotMembership
            && a.resetPending == b.resetPending && a.scannedThrough == b.scannedThrough
            && a.memberships.map(\.offset) == b.memberships.map(\.offset)
            && a.memberships.map(\.membership) == b.memberships.map(\.membership)
    }

    static let magic: UInt32 = 0x5052_5354  // "PRST"
    static let version: Int16 = 1
    /// Bounds what `decode` accepts, so a corrupt length cannot make it allocate without limit.
    static let membersMax = 1 << 16
    static let membershipsMax = 1 << 20

    /// `magic u32, version i16, body length i32, body, CRC32C(body) u32`, big-endian. Body:
    /// `term i64, vote i32 (-1 = none), commit i64, snapshot offset i64, snapshot term i64,
    /// membership, resetPending i8, scannedThrough i64, count i32, count × (offset i64, membership)`;
    /// a membership is `voters count i32, ids i32…, learners count i32, ids i32…` (sorted).
    func encode() -> [UInt8] {
        var body = ByteWriter(capacity: 128)
        body.int64(hardState.term.rawValue)
        body.int32(hardState.vote?.rawValue ?? -1)
        body.int64(hardState.commit.rawValue)
        body.int64(snapshotPoint.offset.rawValue)
        body.int64(snapshotPoint.term.rawValue)
        Self.encode(snapshotMembership, into: &body)
        body.int8(resetPending ? 1 : 0)
        body.int64(scannedThrough.rawValue)
        body.int32(Int32(memberships.count))
        for (offset, membership) in memberships {
            body.int64(offset.rawValue)
            Self.encode(membership, into: &body)
        }
        var w = ByteWriter(capacity: body.bytes.count + 14)
        w.uint32(Self.magic)
        w.int16(Self.version)
        w.int32(Int32(body.bytes.count))
        w.append(body.bytes)
        w.uint32(CRC32C.checksum(body.bytes))
        return w.bytes
    }

    static func encode(_ m: Membership, into w: inout ByteWriter) {
        w.int32(Int32(m.voters.count))
        for v in m.voters.sorted() { w.int32(v.rawValue) }
        w.int32(Int32(m.learners.count))
        for l in m.learners.sorted() { w.int32(l.rawValue) }
    }

    static func decode(_ bytes: [UInt8]) throws(DecodeError) -> ReplicaDurableState {
        try withBytes(bytes) { (raw) throws(DecodeError) -> ReplicaDurableState in
            var r = ByteReader(raw)
            guard try r.uint32() == magic else { throw DecodeError("bad magic") }
            guard try r.int16() == version else { throw DecodeError("unknown version") }
            let length = Int(try r.int32())
            guard length >= 0, length + 4 == r.remaining else { throw DecodeError("bad length") }
            let body = try r.bytes(length)
            guard try r.uint32() == CRC32C.checksum(body) else { throw DecodeError("checksum mismatch") }
            return try withBytes(body) { (raw) throws(DecodeError) -> ReplicaDurableState in
                var b = ByteReader(raw)
                let term = Term(try b.int64())
                let vote = try b.int32()
                let commit = Offset(try b.int64())
                let point = LogPosition(offset: Offset(try b.int64()), term: Term(try b.int64()))
                let membership = try decodeMembership(&b)
                let resetPending = try b.int8() != 0
                let scannedThrough = Offset(try b.int64())
                let count = Int(try b.int32())
                guard count >= 0, count <= membershipsMax else { throw DecodeError("bad membership count") }
                var memberships: [(offset: Offset, membership: Membership)] = []
                for _ in 0..<count {
                    let offset = Offset(try b.int64())
                    memberships.append((offset, try decodeMembership(&b)))
                }
                guard b.remaining == 0 else { throw DecodeError("trailing bytes") }
                return ReplicaDurableState(
                    hardState: HardState(term: term, vote: vote < 0 ? nil : NodeID(vote), commit: commit),
                    snapshotPoint: point, snapshotMembership: membership, resetPending: resetPending,
                    memberships: memberships, scannedThrough: scannedThrough)
            }
        }
    }

    static func decodeMembership(_ r: inout ByteReader) throws(DecodeError) -> Membership {
        var voters = Set<NodeID>()
        let vc = Int(try r.int32())
        guard vc >= 0, vc <= membersMax else { throw DecodeError("bad voter count") }
        for _ in 0..<vc { voters.insert(NodeID(try r.int32())) }
        var learners = Set<NodeID>()
        let lc = Int(try r.int32())
        guard lc >= 0, lc <= membersMax else { throw DecodeError("bad learner count") }
        for _ in 0..<lc { learners.insert(NodeID(try r.int32())) }
        guard voters.isDisjoint(with: learners) else { throw DecodeError("a voter is also a learner") }
        return Membership(voters: voters, learners: learners)
    }
}

/// The state file `replica.state` in a replica's directory, replaced atomically: write
/// `replica.state.tmp`, fsync it, rename it over the old file, fsync the directory. A crash leaves
/// the old or the new version, never a torn one.
///
/// Writes are numbered by the caller (under its lock) and may run outside that lock (group commit):
/// a mutex serialises them here, and a write older than one already durable is skipped, so the
/// newest state always wins.
final class ReplicaStateFile: Sendable {
    let directory: String
    let fileSystem: any FileSystem
    /// The highest sequence number written durably.
    private let written = Mutex<UInt64>(0)

    static let name = "replica.state"
    static let temporaryName = "replica.state.tmp"

    init(directory: String, fileSystem: any FileSystem) {
        self.directory = directory
        self.fileSystem = fileSystem
    }

    var path: String { fileSystem.join(directory, Self.name) }
    var temporaryPath: String { fileSystem.join(directory, Self.temporaryName) }

    /// The stored state, or nil when there is none. A file that fails validation is `.corrupt`:
    /// starting over would forget a vote.
    func load() throws(StorageError) -> ReplicaDurableState? {
        guard fileSystem.fileExists(path) else { return nil }
        let file = try fileSystem.openFile(path, create: false)
        let bytes = try file.read(at: 0, count: Int(try file.size()))
        do throws(DecodeError) {
            return try ReplicaDurableState.decode(bytes)
        } catch {
            throw .corrupt("\(path): \(error.message)")
        }
    }

    /// Writes `bytes` durably unless a state numbered `sequence` or later already was.
    func write(_ bytes: [UInt8], sequence: UInt64) throws(StorageError) {
        try written.withLock { (last) throws(StorageError) in
            guard sequence > last else { return }
            try fileSystem.replaceAtomically(path, with: bytes, temporaryPath: temporaryPath, directory: directory)
            last = sequence
        }
    }
}

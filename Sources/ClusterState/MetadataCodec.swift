import BrokerModel

/// Binary encodings of ``MetadataRecord`` (one Raft entry's payload) and of a whole
/// ``MetadataState`` (a Raft snapshot).
///
/// Record layout (big-endian fixed ints, zig-zag varints as in Kafka):
///
///     version: u8 = 1 | tag: u8 | fields of the case, in declaration order
///
/// - string: varint byte count, UTF-8 bytes; optional string: u8 0 (absent) or 1, then the string
/// - node list: varint count, then int32 ids
/// - assignment: int32 partition, node list replicas, node list adding, node list removing
/// - configs: varint count, then (key, value) strings sorted by key (so equal maps encode equally)
///
/// Snapshot layout: `PMS` magic, u8 version = 1, int64 lastAppliedOffset, int64 lastAppliedEpoch,
/// int64 nextTopicID, int64 nextRegistrationEpoch, varint broker count + brokers (sorted by id),
/// varint topic count + topics (sorted by name: name, int64 id, varint replication factor, configs,
/// varint partition count + assignments).
///
/// Decoding never traps: every length and count is checked against the bytes left and
/// ``MetadataLimits``, every enum tag and topic name is validated, trailing bytes are an error, and a
/// snapshot is checked for the invariants ``MetadataState/apply(_:)`` relies on.
public enum MetadataCodec {
    public static let recordVersion: UInt8 = 1
    public static let snapshotVersion: UInt8 = 1
    /// Topic ids and registration epochs are counters below 2^62; the decoder refuses values within
    /// reach of overflow so that `apply` (which adds one) can never trap on a record that decoded.
    static let counterMax: Int64 = 1 << 62
    static let snapshotMagic: [UInt8] = [0x50, 0x4D, 0x53]  // "PMS"

    enum Tag: UInt8 {
        case brokerRegistered = 1, brokerUnregistered, brokerStatusChanged, topicCreated, partitionCreated
        case topicConfigChanged, partitionReplicasChanged, topicDeleted
    }

    // MARK: Records

    public static func encode(_ record: MetadataRecord) -> [UInt8] {
        var w = ByteWriter(capacity: 64)
        w.int8(Int8(bitPattern: recordVersion))
        switch record {
        case .brokerRegistered(let info):
            w.tag(.brokerRegistered)
            w.broker(info)
        case .brokerUnregistered(let id):
            w.tag(.brokerUnregistered)
            w.int32(id.rawValue)
        case .brokerStatusChanged(let id, let status):
            w.tag(.brokerStatusChanged)
            w.int32(id.rawValue)
            w.int8(Int8(bitPattern: status.rawValue))
        case .topicCreated(let name, let id, let replicationFactor, let configs):
            w.tag(.topicCreated)
            w.string(name.rawValue)
            w.int64(Int64(bitPattern: id.rawValue))
            w.varint(Int64(replicationFactor))
            w.configs(configs)
        case .partitionCreated(let topic, let assignment):
            w.tag(.partitionCreated)
            w.string(topic.rawValue)
            w.assignment(assignment)
        case .topicConfigChanged(let topic, let key, let value):
            w.tag(.topicConfigChanged)
            w.string(topic.rawValue)
            w.string(key)
            w.optionalString(value)
        case .partitionReplicasChanged(let topic, let assignment):
            w.tag(.partitionReplicasChanged)
            w.string(topic.rawValue)
            w.assignment(assignment)
        case .topicDeleted(let name):
            w.tag(.topicDeleted)
            w.string(name.rawValue)
        }
        return w.bytes
    }

    public static func decodeRecord(_ bytes: [UInt8], limits: MetadataLimits = .defaults) throws(DecodeError) -> MetadataRecord {
        try withBytes(bytes) { (raw) throws(DecodeError) -> MetadataRecord in
            var r = MetadataReader(reader: ByteReader(raw), limits: limits)
            let version = UInt8(bitPattern: try r.reader.int8())
            guard version == recordVersion else { throw DecodeError("metadata record version \(version) is not \(recordVersion)") }
            let rawTag = UInt8(bitPattern: try r.reader.int8())
            guard let tag = Tag(rawValue: rawTag) else { throw DecodeError("unknown metadata record tag \(rawTag)") }
            let record: MetadataRecord
            switch tag {
            case .brokerRegistered: record = .brokerRegistered(try r.broker())
            case .brokerUnregistered: record = .brokerUnregistered(try r.nodeID())
            case .brokerStatusChanged: record = .brokerStatusChanged(try r.nodeID(), try r.status())
            case .topicCreated:
                let name = try r.topicName()
                let id = try r.topicID()
                let factor = try r.replicationFactor()
                record = .topicCreated(name: name, id: id, replicationFactor: factor, configs: try r.configs())
            case .partitionCreated: record = .partitionCreated(topic: try r.topicName(), assignment: try r.assignment())
            case .topicConfigChanged:
                record = .topicConfigChanged(topic: try r.topicName(), key: try r.string(), value: try r.optionalString())
            case .partitionReplicasChanged:
                record = .partitionReplicasChanged(topic: try r.topicName(), assignment: try r.assignment())
            case .topicDeleted: record = .topicDeleted(try r.topicName())
            }
            if r.reader.remaining != 0 { throw DecodeError("\(r.reader.remaining) bytes after a metadata record") }
            return record
        }
    }

    // MARK: Snapshots

    public static func encodeSnapshot(_ state: MetadataState) -> [UInt8] {
        var w = ByteWriter(capacity: 1024)
        w.append(snapshotMagic)
        w.int8(Int8(bitPattern: snapshotVersion))
        w.int64(state.lastAppliedOffset.rawValue)
        w.int64(state.lastAppliedEpoch.rawValue)
        w.int64(Int64(bitPattern: state.nextTopicID.rawValue))
        w.int64(state.nextRegistrationEpoch)
        w.varint(Int64(state.brokers.count))
        for broker in state.sortedBrokers { w.broker(broker) }
        w.varint(Int64(state.topics.count))
        for topic in state.sortedTopics {
            w.string(topic.name.rawValue)
            w.int64(Int64(bitPattern: topic.id.rawValue))
            w.varint(Int64(topic.replicationFactor))
            w.configs(topic.configs)
            w.varint(Int64(topic.partitions.count))
            for partition in topic.partitions { w.assignment(partition) }
        }
        return w.bytes
    }

    public static func decodeSnapshot(_ bytes: [UInt8], limits: MetadataLimits = .defaults) throws(DecodeError) -> MetadataState {
        try withBytes(bytes) { (raw) throws(DecodeError) -> MetadataState in
            var r = MetadataReader(reader: ByteReader(raw), limits: limits)
            guard try r.reader.bytes(snapshotMagic.count) == snapshotMagic else { throw DecodeError("not a metadata snapshot") }
            let version = UInt8(bitPattern: try r.reader.int8())
            guard version == snapshotVersion else { throw DecodeError("metadata snapshot version \(version) is not \(snapshotVersion)") }
            var state = MetadataState()
            state.lastAppliedOffset = Offset(try r.reader.int64())
            state.lastAppliedEpoch = Term(try r.reader.int64())
            state.nextTopicID = TopicID(UInt64(bitPattern: try r.reader.int64()))
            state.nextRegistrationEpoch = try r.reader.int64()
            if state.lastAppliedOffset.rawValue < -1 || state.lastAppliedEpoch.rawValue < 0 || state.nextRegistrationEpoch < 1
                || state.nextRegistrationEpoch > MetadataCodec.counterMax || state.nextTopicID.rawValue < 1
                || state.nextTopicID.rawValue > UInt64(MetadataCodec.counterMax)
            {
                throw DecodeError("metadata snapshot header out of range")
            }
            let brokerCount = try r.count(max: limits.brokersMax)
            for _ in 0..<brokerCount {
                let broker = try r.broker()
                if state.brokers[broker.id] != nil { throw DecodeError("broker \(broker.id) twice in snapshot") }
                if broker.registrationEpoch >= state.nextRegistrationEpoch { throw DecodeError("broker \(broker.id) epoch from the future") }
                state.brokers[broker.id] = broker
            }
            let topicCount = try r.count(max: limits.topicsMax)
            var ids: Set<TopicID> = []
            for _ in 0..<topicCount {
                let name = try r.topicName()
                let id = try r.topicID()
                let factor = try r.replicationFactor()
                let configs = try r.configs()
                let partitionCount = try r.count(max: Int(limits.partitionsPerTopicMax))
                var partitions: [PartitionAssignment] = []
                for index in 0..<partitionCount {
                    let assignment = try r.assignment()
                    if assignment.partition.rawValue != Int32(index) { throw DecodeError("\(name): partition \(assignment.partition) at index \(index)") }
                    if let problem = MetadataState.assignmentProblem(assignment, brokers: state.brokers) {
                        throw DecodeError("\(name): \(problem)")
                    }
                    partitions.append(assignment)
                }
                if state.topics[name] != nil { throw DecodeError("topic \(name) twice in snapshot") }
                if id >= state.nextTopicID || !ids.insert(id).inserted { throw DecodeError("topic \(name) has a bad id \(id)") }
                state.topics[name] = Topic(name: name, id: id, replicationFactor: factor, configs: configs, partitions: partitions)
            }
            if r.reader.remaining != 0 { throw DecodeError("\(r.reader.remaining) bytes after a metadata snapshot") }
            return state
        }
    }
}

extension ByteWriter {
    fileprivate mutating func tag(_ tag: MetadataCodec.Tag) { int8(Int8(bitPattern: tag.rawValue)) }
    fileprivate mutating func string(_ s: String) {
        let utf8 = Array(s.utf8)
        varint(Int64(utf8.count))
        append(utf8)
    }
    fileprivate mutating func optionalString(_ s: String?) {
        if let s {
            int8(1)
            string(s)
        } else {
            int8(0)
        }
    }
    fileprivate mutating func nodes(_ ids: [NodeID]) {
        varint(Int64(ids.count))
        for id in ids { int32(id.rawValue) }
    }
    fileprivate mutating func assignment(_ a: PartitionAssignment) {
        int32(a.partition.rawValue)
        nodes(a.replicas)
        nodes(a.addingReplicas)
        nodes(a.removingReplicas)
    }
    fileprivate mutating func configs(_ configs: [String: String]) {
        varint(Int64(configs.count))
        for key in configs.keys.sorted() {
            string(key)
            string(configs[key]!)
        }
    }
    fileprivate mutating func broker(_ b: BrokerInfo) {
        int32(b.id.rawValue)
        optionalString(b.rack)
        string(b.publicAddress)
        string(b.internalAddress)
        int8(Int8(bitPattern: b.status.rawValue))
        int64(b.registrationEpoch)
    }
}

/// Bounds-checked reading of the shapes above; every failure is a `DecodeError`.
private struct MetadataReader {
    var reader: ByteReader
    let limits: MetadataLimits

    mutating func count(max: Int) throws(DecodeError) -> Int {
        let n = try reader.varint()
        // Each element takes at least one byte, so a count above the bytes left is a lie.
        guard n >= 0, n <= Int64(max), n <= Int64(reader.remaining) else { throw DecodeError("count \(n) out of range") }
        return Int(n)
    }
    mutating func string() throws(DecodeError) -> String {
        let n = try count(max: limits.stringBytesMax)
        let bytes = try reader.bytes(n)
        guard let s = String(validating: bytes, as: UTF8.self) else { throw DecodeError("string is not UTF-8") }
        return s
    }
    mutating func optionalString() throws(DecodeError) -> String? {
        switch try reader.int8() {
        case 0: return nil
        case 1: return try string()
        case let flag: throw DecodeError("bad optional flag \(flag)")
        }
    }
    mutating func topicName() throws(DecodeError) -> TopicName {
        let s = try string()
        guard let name = TopicName(s) else { throw DecodeError("invalid topic name in metadata") }
        return name
    }
    mutating func nodeID() throws(DecodeError) -> NodeID {
        let id = try reader.int32()
        guard id >= 0 else { throw DecodeError("negative broker id \(id)") }
        return NodeID(id)
    }
    mutating func nodes() throws(DecodeError) -> [NodeID] {
        let n = try count(max: limits.replicasPerPartitionMax)
        var ids: [NodeID] = []
        ids.reserveCapacity(n)
        for _ in 0..<n { ids.append(try nodeID()) }
        return ids
    }
    mutating func status() throws(DecodeError) -> BrokerStatus {
        let raw = UInt8(bitPattern: try reader.int8())
        guard let status = BrokerStatus(rawValue: raw) else { throw DecodeError("unknown broker status \(raw)") }
        return status
    }
    mutating func topicID() throws(DecodeError) -> TopicID {
        let id = try reader.int64()
        guard id >= 1, id < MetadataCodec.counterMax else { throw DecodeError("topic id \(id) out of range") }
        return TopicID(UInt64(id))
    }
    mutating func replicationFactor() throws(DecodeError) -> Int {
        let n = try reader.varint()
        guard n >= 1, n <= Int64(limits.replicasPerPartitionMax) else { throw DecodeError("replication factor \(n) out of range") }
        return Int(n)
    }
    mutating func assignment() throws(DecodeError) -> PartitionAssignment {
        let partition = try reader.int32()
        guard partition >= 0 else { throw DecodeError("negative partition \(partition)") }
        let a = PartitionAssignment(partition: PartitionID(partition), replicas: try nodes(), addingReplicas: try nodes(), removingReplicas: try nodes())
        // The shape checks that need no broker table: apply() would trap on these.
        if let problem = MetadataState.assignmentProblem(a, brokers: nil) { throw DecodeError(problem) }
        return a
    }
    mutating func configs() throws(DecodeError) -> [String: String] {
        let n = try count(max: limits.configEntriesPerTopicMax)
        var configs: [String: String] = [:]
        for _ in 0..<n {
            let key = try string()
            let value = try string()
            if configs.updateValue(value, forKey: key) != nil { throw DecodeError("config \(key) twice") }
        }
        return configs
    }
    mutating func broker() throws(DecodeError) -> BrokerInfo {
        let id = try nodeID()
        let rack = try optionalString()
        let publicAddress = try string()
        let internalAddress = try string()
        let status = try status()
        let epoch = try reader.int64()
        guard epoch >= 1, epoch < MetadataCodec.counterMax else { throw DecodeError("registration epoch \(epoch) out of range") }
        return BrokerInfo(id: id, rack: rack, publicAddress: publicAddress, internalAddress: internalAddress, status: status, registrationEpoch: epoch)
    }
}

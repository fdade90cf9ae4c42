import BrokerModel

/// Binary encodings of ``MetadataCommand`` (an admin command forwarded to the controller) and of
/// ``MetadataError`` (its refusal, sent back so the forwarding broker answers with the same error).
///
/// Layout, in the style of ``MetadataCodec`` (big-endian fixed ints, zig-zag varints):
///
///     version: u8 = 1 | tag: u8 | fields of the case, in declaration order
///
/// - string: varint byte count, UTF-8 bytes; optional string: u8 0 (absent) or 1, then the string
/// - topic name: a string that must be a valid ``TopicName``; node id, partition: int32
/// - optional replication factor: u8 0 or 1, then a varint
/// - configs: varint count, then (key, value) strings sorted by key; key list: varint count, strings
/// - reassignment targets: varint count, then (int32 partition, varint count, int32 node ids) sorted
///   by partition
///
/// Decoding never traps: counts and string lengths are bounded by ``MetadataLimits`` and the bytes
/// left, tags and topic names are validated, duplicate keys are refused, trailing bytes are an error.
public enum MetadataCommandCodec {
    public static let version: UInt8 = 1

    enum CommandTag: UInt8 {
        case registerBroker = 1, unregisterBroker, fenceBroker, unfenceBroker, createTopic, deleteTopic
        case alterConfigs, createPartitions, reassignPartitions, completeReassignment, cancelReassignment
        case decommissionBroker, balanceReplicas
    }

    enum ErrorTag: UInt8 {
        case unknownBroker = 1, brokerDecommissioned, brokerHostsReplicas, topicExists, unknownTopic, unknownPartition
        case invalidPartitionCount, invalidReplicationFactor, invalidReplicas, invalidConfig, invalidBroker
        case reassignmentInProgress, noReassignmentInProgress, cannotMoveReplicas, limitExceeded
    }

    // MARK: commands

    public static func encode(_ command: MetadataCommand) -> [UInt8] {
        var w = CommandWriter()
        w.w.int8(Int8(bitPattern: version))
        switch command {
        case .registerBroker(let id, let rack, let publicAddress, let internalAddress):
            w.tag(CommandTag.registerBroker.rawValue)
            w.node(id)
            w.optionalString(rack)
            w.string(publicAddress)
            w.string(internalAddress)
        case .unregisterBroker(let id):
            w.tag(CommandTag.unregisterBroker.rawValue)
            w.node(id)
        case .fenceBroker(let id):
            w.tag(CommandTag.fenceBroker.rawValue)
            w.node(id)
        case .unfenceBroker(let id):
            w.tag(CommandTag.unfenceBroker.rawValue)
            w.node(id)
        case .createTopic(let name, let partitions, let replicationFactor, let configs):
            w.tag(CommandTag.createTopic.rawValue)
            w.topic(name)
            w.w.int32(partitions)
            if let replicationFactor {
                w.w.int8(1)
                w.w.varint(Int64(replicationFactor))
            } else {
                w.w.int8(0)
            }
            w.configs(configs)
        case .deleteTopic(let name):
            w.tag(CommandTag.deleteTopic.rawValue)
            w.topic(name)
        case .alterConfigs(let name, let set, let remove):
            w.tag(CommandTag.alterConfigs.rawValue)
            w.topic(name)
            w.configs(set)
            w.w.varint(Int64(remove.count))
            for key in remove { w.string(key) }
        case .createPartitions(let name, let totalCount):
            w.tag(CommandTag.createPartitions.rawValue)
            w.topic(name)
            w.w.int32(totalCount)
        case .reassignPartitions(let name, let targets):
            w.tag(CommandTag.reassignPartitions.rawValue)
            w.topic(name)
            w.w.varint(Int64(targets.count))
            for (partition, replicas) in targets.sorted(by: { $0.key < $1.key }) {
                w.w.int32(partition.rawValue)
                w.w.varint(Int64(replicas.count))
                for id in replicas { w.node(id) }
            }
        case .completeReassignment(let name, let partition):
            w.tag(CommandTag.completeReassignment.rawValue)
            w.topic(name)
            w.w.int32(partition.rawValue)
        case .cancelReassignment(let name, let partition):
            w.tag(CommandTag.cancelReassignment.rawValue)
            w.topic(name)
            w.w.int32(partition.rawValue)
        case .decommissionBroker(let id):
            w.tag(CommandTag.decommissionBroker.rawValue)
            w.node(id)
        case .balanceReplicas:
            w.tag(CommandTag.balanceReplicas.rawValue)
        }
        return w.w.bytes
    }

    public static func decodeCommand(_ bytes: [UInt8], limits: MetadataLimits = .defaults) throws(DecodeError) -> MetadataCommand {
        try withBytes(bytes) { (raw) throws(DecodeError) in
            var r = CommandReader(r: ByteReader(raw), limits: limits)
            try r.version()
            let rawTag = try r.byte()
            guard let tag = CommandTag(rawValue: rawTag) else { throw DecodeError("unknown metadata command tag \(rawTag)") }
            let command: MetadataCommand
            switch tag {
            case .registerBroker:
                command = .registerBroker(
                    id: try r.node(), rack: try r.optionalString(), publicAddress: try r.string(), internalAddress: try r.string())
            case .unregisterBroker: command = .unregisterBroker(try r.node())
            case .fenceBroker: command = .fenceBroker(try r.node())
            case .unfenceBroker: command = .unfenceBroker(try r.node())
            case .createTopic:
                let name = try r.topic()
                let partitions = try r.r.int32()
                var replicationFactor: Int?
                switch try r.byte() {
                case 0: replicationFactor = nil
                case 1: replicationFactor = Int(try r.r.varint())
                case let b: throw DecodeError("optional marker \(b) is neither 0 nor 1")
                }
                command = .createTopic(name: name, partitions: partitions, replicationFactor: replicationFactor, configs: try r.configs())
            case .deleteTopic: command = .deleteTopic(try r.topic())
            case .alterConfigs:
                let name = try r.topic()
                let set = try r.configs()
                let n = try r.count(max: limits.configEntriesPerTopicMax)
                var remove: [String] = []
                for _ in 0..<n { remove.append(try r.string()) }
                command = .alterConfigs(topic: name, set: set, remove: remove)
            case .createPartitions: command = .createPartitions(topic: try r.topic(), totalCount: try r.r.int32())
            case .reassignPartitions:
                let name = try r.topic()
                let n = try r.count(max: Int(limits.partitionsPerTopicMax))
                var targets: [PartitionID: [NodeID]] = [:]
                for _ in 0..<n {
                    let partition = PartitionID(try r.r.int32())
                    let m = try r.count(max: limits.replicasPerPartitionMax)
                    var replicas: [NodeID] = []
                    for _ in 0..<m { replicas.append(try r.node()) }
                    guard targets.updateValue(replicas, forKey: partition) == nil else {
                        throw DecodeError("partition \(partition) listed twice in a reassignment")
                    }
                }
                command = .reassignPartitions(topic: name, targets: targets)
            case .completeReassignment:
                command = .completeReassignment(topic: try r.topic(), partition: PartitionID(try r.r.int32()))
            case .cancelReassignment:
                command = .cancelReassignment(topic: try r.topic(), partition: PartitionID(try r.r.int32()))
            case .decommissionBroker: command = .decommissionBroker(try r.node())
            case .balanceReplicas: command = .balanceReplicas
            }
            try r.end()
            return command
        }
    }

    // MARK: errors

    public static func encode(_ error: MetadataError) -> [UInt8] {
        var w = CommandWriter()
        w.w.int8(Int8(bitPattern: version))
        func text(_ tag: ErrorTag, _ s: String) {
            w.tag(tag.rawValue)
            w.string(s)
        }
        switch error {
        case .unknownBroker(let id):
            w.tag(ErrorTag.unknownBroker.rawValue)
            w.node(id)
        case .brokerDecommissioned(let id):
            w.tag(ErrorTag.brokerDecommissioned.rawValue)
            w.node(id)
        case .brokerHostsReplicas(let id):
            w.tag(ErrorTag.brokerHostsReplicas.rawValue)
            w.node(id)
        case .topicExists(let name):
            w.tag(ErrorTag.topicExists.rawValue)
            w.topic(name)
        case .unknownTopic(let name):
            w.tag(ErrorTag.unknownTopic.rawValue)
            w.topic(name)
        case .unknownPartition(let topic, let partition):
            w.tag(ErrorTag.unknownPartition.rawValue)
            w.topic(topic)
            w.w.int32(partition.rawValue)
        case .invalidPartitionCount(let m): text(.invalidPartitionCount, m)
        case .invalidReplicationFactor(let m): text(.invalidReplicationFactor, m)
        case .invalidReplicas(let m): text(.invalidReplicas, m)
        case .invalidConfig(let m): text(.invalidConfig, m)
        case .invalidBroker(let m): text(.invalidBroker, m)
        case .reassignmentInProgress(let topic, let partition):
            w.tag(ErrorTag.reassignmentInProgress.rawValue)
            w.topic(topic)
            w.w.int32(partition.rawValue)
        case .noReassignmentInProgress(let topic, let partition):
            w.tag(ErrorTag.noReassignmentInProgress.rawValue)
            w.topic(topic)
            w.w.int32(partition.rawValue)
        case .cannotMoveReplicas(let m): text(.cannotMoveReplicas, m)
        case .limitExceeded(let m): text(.limitExceeded, m)
        }
        return w.w.bytes
    }

    /// Messages of errors are free text: they are bounded by `limits.stringBytesMax` like every string.
    public static func decodeError(_ bytes: [UInt8], limits: MetadataLimits = .defaults) throws(DecodeError) -> MetadataError {
        try withBytes(bytes) { (raw) throws(DecodeError) in
            var r = CommandReader(r: ByteReader(raw), limits: limits)
            try r.version()
            let rawTag = try r.byte()
            guard let tag = ErrorTag(rawValue: rawTag) else { throw DecodeError("unknown metadata error tag \(rawTag)") }
            let error: MetadataError
            switch tag {
            case .unknownBroker: error = .unknownBroker(try r.node())
            case .brokerDecommissioned: error = .brokerDecommissioned(try r.node())
            case .brokerHostsReplicas: error = .brokerHostsReplicas(try r.node())
            case .topicExists: error = .topicExists(try r.topic())
            case .unknownTopic: error = .unknownTopic(try r.topic())
            case .unknownPartition: error = .unknownPartition(topic: try r.topic(), partition: PartitionID(try r.r.int32()))
            case .invalidPartitionCount: error = .invalidPartitionCount(try r.string())
            case .invalidReplicationFactor: error = .invalidReplicationFactor(try r.string())
            case .invalidReplicas: error = .invalidReplicas(try r.string())
            case .invalidConfig: error = .invalidConfig(try r.string())
            case .invalidBroker: error = .invalidBroker(try r.string())
            case .reassignmentInProgress:
                error = .reassignmentInProgress(topic: try r.topic(), partition: PartitionID(try r.r.int32()))
            case .noReassignmentInProgress:
                error = .noReassignmentInProgress(topic: try r.topic(), partition: PartitionID(try r.r.int32()))
            case .cannotMoveReplicas: error = .cannotMoveReplicas(try r.string())
            case .limitExceeded: error = .limitExceeded(try r.string())
            }
            try r.end()
            return error
        }
    }
}

private struct CommandWriter {
    var w = ByteWriter(capacity: 64)
    mutating func tag(_ t: UInt8) { w.int8(Int8(bitPattern: t)) }
    mutating func string(_ s: String) {
        let utf8 = Array(s.utf8)
        w.varint(Int64(utf8.count))
        w.append(utf8)
    }
    mutating func optionalString(_ s: String?) {
        if let s {
            w.int8(1)
            string(s)
        } else {
            w.int8(0)
        }
    }
    mutating func node(_ id: NodeID) { w.int32(id.rawValue) }
    mutating func topic(_ name: TopicName) { string(name.rawValue) }
    mutating func configs(_ configs: [String: String]) {
        w.varint(Int64(configs.count))
        for (key, value) in configs.sorted(by: { $0.key < $1.key }) {
            string(key)
            string(value)
        }
    }
}

private struct CommandReader {
    var r: ByteReader
    let limits: MetadataLimits

    mutating func byte() throws(DecodeError) -> UInt8 { UInt8(bitPattern: try r.int8()) }
    mutating func version() throws(DecodeError) {
        let v = try byte()
        guard v == MetadataCommandCodec.version else { throw DecodeError("unsupported metadata command version \(v)") }
    }
    mutating func end() throws(DecodeError) {
        guard r.remaining == 0 else { throw DecodeError("\(r.remaining) trailing bytes") }
    }
    mutating func count(max: Int) throws(DecodeError) -> Int {
        let n = try r.varint()
        guard n >= 0, n <= Int64(max) else { throw DecodeError("count \(n) out of range 0...\(max)") }
        return Int(n)
    }
    mutating func string() throws(DecodeError) -> String {
        let n = try count(max: limits.stringBytesMax)
        return String(decoding: try r.bytes(n), as: UTF8.self)
    }
    mutating func optionalString() throws(DecodeError) -> String? {
        switch try byte() {
        case 0: return nil
        case 1: return try string()
        case let b: throw DecodeError("optional marker \(b) is neither 0 nor 1")
        }
    }
    mutating func node() throws(DecodeError) -> NodeID { NodeID(try r.int32()) }
    mutating func topic() throws(DecodeError) -> TopicName {
        guard let name = TopicName(try string()) else { throw DecodeError("invalid topic name") }
        return name
    }
    mutating func configs() throws(DecodeError) -> [String: String] {
        let n = try count(max: limits.configEntriesPerTopicMax)
        var configs: [String: String] = [:]
        for _ in 0..<n {
            let key = try string()
            guard configs.updateValue(try string(), forKey: key) == nil else { throw DecodeError("config key \(key) repeated") }
        }
        return configs
    }
}

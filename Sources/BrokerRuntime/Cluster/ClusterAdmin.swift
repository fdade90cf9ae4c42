import BrokerModel
import ClusterState
import Consensus
import Dispatch
import Foundation

/// Topic administration and descriptions in a cluster. Changes go to the controller as metadata
/// commands (any broker forwards them); descriptions are answered from this broker's copy of the
/// metadata plus the leaders' reports, so every broker gives the same answer.
extension ClusterNode {
    func createTopic(name: TopicName, partitions: Int32, replicationFactor: Int?, configs: [(String, String)],
                     completion: @escaping @Sendable (Result<TopicDescription, BrokerError>) -> Void) {
        do throws(BrokerError) {
            if name.isInternal { throw .invalidTopicName("topic names starting with '__' are reserved for internal topics") }
            guard partitions >= 1 && partitions <= configuration.limits.partitionsPerTopicMax else {
                throw .invalidConfig("partitions must be in 1...\(configuration.limits.partitionsPerTopicMax), got \(partitions)")
            }
            // The log settings are validated here (the controller treats configs as opaque, except
            // min.insync.replicas, which it checks against the replica count).
            _ = try configuration.topicDefaults.applying(configs.filter { $0.0 != Topic.minInSyncReplicasKey })
            var dictionary: [String: String] = [:]
            for (k, v) in configs { dictionary[k] = v }
            let command = MetadataCommand.createTopic(name: name, partitions: partitions, replicationFactor: replicationFactor, configs: dictionary)
            submit(command) { [self] result in
                switch result {
                case .failure(let e): completion(.failure(e))
                case .success:
                    // Wait (bounded) for every partition to elect a leader, so the next produce works.
                    whenLeadersKnown(name, attempt: 0) { completion(Result { () throws(BrokerError) in try self.describeTopic(name) }) }
                }
            }
        } catch {
            completion(.failure(error))
        }
    }

    func whenLeadersKnown(_ name: TopicName, attempt: Int, then: @escaping @Sendable () -> Void) {
        let known = (try? describeTopic(name))?.partitions.allSatisfy { $0.leader.rawValue >= 0 } ?? true
        if known || attempt >= 100 { return then() }
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(50)) { self.whenLeadersKnown(name, attempt: attempt + 1, then: then) }
    }

    func alterTopic(_ name: TopicName, configs: [(String, String)], partitions newCount: Int32?,
                    completion: @escaping @Sendable (Result<TopicDescription, BrokerError>) -> Void) {
        do throws(BrokerError) {
            guard let topic = state.withLock({ $0.metadata.topics[name] }) else { throw unknownTopic(name) }
            _ = try topicConfig(topic).applying(configs.filter { $0.0 != Topic.minInSyncReplicasKey })
            var commands: [MetadataCommand] = []
            if !configs.isEmpty {
                var set: [String: String] = [:]
                for (k, v) in configs { set[k] = v }
                commands.append(.alterConfigs(topic: name, set: set, remove: []))
            }
            if let newCount {
                guard newCount >= topic.partitions.count else {
                    throw .invalidConfig("partitions can only grow: topic '\(name)' has \(topic.partitions.count), asked for \(newCount)")
                }
                guard newCount <= configuration.limits.partitionsPerTopicMax else {
                    throw .invalidConfig("partitions must be at most \(configuration.limits.partitionsPerTopicMax), got \(newCount)")
                }
                if newCount > topic.partitions.count { commands.append(.createPartitions(topic: name, totalCount: newCount)) }
            }
            runCommands(commands) { [self] result in
                switch result {
                case .failure(let e): completion(.failure(e))
                case .success: whenLeadersKnown(name, attempt: 0) { completion(Result { () throws(BrokerError) in try self.describeTopic(name) }) }
                }
            }
        } catch {
            completion(.failure(error))
        }
    }

    func runCommands(_ commands: [MetadataCommand], completion: @escaping @Sendable (Result<Void, BrokerError>) -> Void) {
        guard let first = commands.first else { return completion(.success(())) }
        submit(first) { [self] result in
            if case .failure = result { return completion(result) }
            runCommands(Array(commands.dropFirst()), completion: completion)
        }
    }

    func deleteTopic(_ name: TopicName, completion: @escaping @Sendable (Result<Void, BrokerError>) -> Void) {
        guard state.withLock({ $0.metadata.topics[name] != nil }) else { return completion(.failure(unknownTopic(name))) }
        if name.isInternal { return completion(.failure(.invalidTopicName("internal topics cannot be deleted"))) }
        submit(.deleteTopic(name), completion: completion)
    }

    func listTopics(includeInternal: Bool) -> [TopicName] {
        state.withLock { s in s.metadata.topics.keys.filter { includeInternal || !$0.isInternal }.sorted() }
    }

    func describeTopic(_ name: TopicName) throws(BrokerError) -> TopicDescription {
        let now = monotonicMilliseconds()
        let (topic, reports, replicas) = state.withLock { s in (s.metadata.topics[name], s.reports, s.replicas) }
        guard let topic else { throw unknownTopic(name) }
        var partitions: [PartitionDescription] = []
        for a in topic.partitions {
            let group = TopicPartition(name, a.partition)
            var d = PartitionDescription(partition: a.partition, leader: NodeID(-1), replicas: a.replicas, inSyncReplicas: [],
                                         offsets: PartitionOffsets(logStartOffset: Offset(0), highWatermark: Offset(0), logEndOffset: Offset(0)),
                                         sizeBytes: 0, segmentCount: 0)
            d.addingReplicas = a.addingReplicas
            d.removingReplicas = a.removingReplicas
            var local = false
            if let r = replicas[group] {
                r.state.withLock { s in
                    guard s.closedReason == nil else { return }
                    d.sizeBytes = s.log.sizeBytes
                    d.segmentCount = s.log.segmentCount
                    if s.role == .leader {
                        local = true
                        d.leader = nodeID
                        d.offsets = s.offsets
                        d.inSyncReplicas = s.inSyncReplicas(now: clock())
                        d.replicaStates = s.replicaStates()
                    }
                }
            }
            if !local, let r = reports[group], now - r.receivedMilliseconds < 3_000 {
                d.leader = r.report.leader
                d.offsets = r.report.offsets
                d.inSyncReplicas = r.report.inSyncReplicas
                d.replicaStates = r.report.replicaStates
            }
            partitions.append(d)
        }
        return TopicDescription(name: name, partitions: partitions, replicationFactor: topic.replicationFactor, config: topicConfig(topic), isInternal: name.isInternal)
    }

    /// The cluster id: derived from the initial member list, so every member shows the same one
    /// without a record for it.
    var clusterID: String {
        let text = cluster.members.keys.sorted().map { "\($0.rawValue)@\(cluster.members[$0]!)" }.joined(separator: ",")
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in text.utf8 { hash = (hash ^ UInt64(b)) &* 0x100_0000_01b3 }
        return "petrel-" + String(hash, radix: 16)
    }

    func describeCluster(version: String) -> ClusterDescription {
        let controller = metadataReplica.state.withLock { $0.leader } ?? NodeID(-1)
        let (metadata, replicas) = state.withLock { ($0.metadata, $0.replicas.count) }
        var brokers: [BrokerInfo] = []
        for b in metadata.sortedBrokers where b.status != .decommissioned {
            let (host, port) = Self.split(b.publicAddress)
            brokers.append(BrokerInfo(id: b.id, host: host, port: port, rack: b.rack, isAlive: b.status == .alive || b.status == .decommissioning))
        }
        _ = replicas
        let partitionCount = metadata.topics.values.filter { !$0.name.isInternal }.reduce(0) { $0 + $1.partitions.count }
        return ClusterDescription(clusterID: clusterID, controller: controller, brokers: brokers, version: version,
                                  topicCount: metadata.topics.keys.filter { !$0.isInternal }.count, partitionCount: partitionCount)
    }

    static func split(_ address: String) -> (String, Int) {
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]) else { return (address, 0) }
        return (String(address[..<colon]), port)
    }
}

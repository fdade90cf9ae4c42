import BrokerModel

/// One change to the cluster metadata: the unit the `__cluster` Raft group replicates.
///
/// Records carry decisions, never intentions: placement, the new topic's id, the registration epoch,
/// the planned replica moves — all were chosen by ``decide(_:state:seed:limits:)`` and are replayed verbatim.
/// Replaying the same records from an empty state therefore reproduces the same state on every
/// controller and after every restart, whatever seed or dictionary order the decider saw.
public enum MetadataRecord: Equatable, Sendable {
    /// A broker (re-)registered: it is `alive` (or stays `decommissioning`) with this epoch.
    case brokerRegistered(BrokerInfo)
    /// A broker's registration is removed. It hosts no replicas.
    case brokerUnregistered(NodeID)
    /// Liveness or life-cycle change decided by the controller.
    case brokerStatusChanged(NodeID, BrokerStatus)
    /// A topic exists, with no partitions yet (``partitionCreated(topic:assignment:)`` follows).
    case topicCreated(name: TopicName, id: TopicID, replicationFactor: Int, configs: [String: String])
    /// Partition `assignment.partition` of `topic` exists; it is the next partition number.
    case partitionCreated(topic: TopicName, assignment: PartitionAssignment)
    /// One config key set (`value` non-nil) or removed (`value` nil).
    case topicConfigChanged(topic: TopicName, key: String, value: String?)
    /// A partition's replica set, order, or reassignment sets changed (start or end of a reassignment,
    /// or a preferred-leader reordering).
    case partitionReplicasChanged(topic: TopicName, assignment: PartitionAssignment)
    /// The topic and all its partitions are gone.
    case topicDeleted(TopicName)
}

extension MetadataState {
    /// Applies the record written at the next offset in the current epoch.
    public mutating func apply(_ record: MetadataRecord) {
        apply(record, offset: lastAppliedOffset + 1, epoch: lastAppliedEpoch)
    }

    /// Applies one record. Never fails on a record that ``decide(_:state:seed:limits:)`` produced for this
    /// state; a record that cannot apply (unknown topic, duplicate id, ...) means the log and the state
    /// disagree — a broken invariant, so it traps rather than diverge silently from the other voters.
    /// A caller holding records of doubtful origin asks ``problem(applying:)`` first.
    public mutating func apply(_ record: MetadataRecord, offset: Offset, epoch: Term) {
        precondition(offset > lastAppliedOffset, "metadata record offset \(offset) not after \(lastAppliedOffset)")
        precondition(epoch >= lastAppliedEpoch, "metadata epoch \(epoch) before \(lastAppliedEpoch)")
        if let problem = problem(applying: record) { preconditionFailure(problem) }
        switch record {
        case .brokerRegistered(let info):
            brokers[info.id] = info
            nextRegistrationEpoch = info.registrationEpoch + 1
        case .brokerUnregistered(let id):
            brokers[id] = nil
        case .brokerStatusChanged(let id, let status):
            brokers[id]!.status = status
        case .topicCreated(let name, let id, let replicationFactor, let configs):
            topics[name] = Topic(name: name, id: id, replicationFactor: replicationFactor, configs: configs, partitions: [])
            nextTopicID = TopicID(id.rawValue + 1)
        case .partitionCreated(let name, let assignment):
            topics[name]!.partitions.append(assignment)
        case .topicConfigChanged(let name, let key, let value):
            topics[name]!.configs[key] = value
        case .partitionReplicasChanged(let name, let assignment):
            topics[name]!.partitions[Int(assignment.partition.rawValue)] = assignment
        case .topicDeleted(let name):
            topics[name] = nil
        }
        lastAppliedOffset = offset
        lastAppliedEpoch = epoch
    }

    /// Why `record` cannot apply to this state, or nil when it can. Records that `decide` produced
    /// for this state always can; the runtime may ask before applying records read from disk or a
    /// peer, to report a corrupt or diverged log as an error instead of a trap.
    public func problem(applying record: MetadataRecord) -> String? {
        switch record {
        case .brokerRegistered(let info):
            if info.registrationEpoch < nextRegistrationEpoch || info.registrationEpoch >= MetadataCodec.counterMax {
                return "registration epoch \(info.registrationEpoch) reused or out of range"
            }
            if brokers[info.id]?.status == .decommissioned { return "decommissioned broker \(info.id) registered again" }
        case .brokerUnregistered(let id):
            if brokers[id] == nil { return "unregistering unknown broker \(id)" }
            if hostsReplicas(id) { return "unregistering broker \(id) that still hosts replicas" }
        case .brokerStatusChanged(let id, _):
            if brokers[id] == nil { return "status change for unknown broker \(id)" }
        case .topicCreated(let name, let id, let replicationFactor, _):
            if topics[name] != nil { return "topic \(name) created twice" }
            if id < nextTopicID || id.rawValue >= UInt64(MetadataCodec.counterMax) { return "topic id \(id) reused or out of range" }
            if replicationFactor < 1 { return "replication factor \(replicationFactor)" }
        case .partitionCreated(let name, let assignment):
            guard let topic = topics[name] else { return "partition for unknown topic \(name)" }
            if Int(assignment.partition.rawValue) != topic.partitions.count { return "partition \(name)-\(assignment.partition) out of order" }
            return MetadataState.assignmentProblem(assignment, brokers: brokers)
        case .topicConfigChanged(let name, _, _):
            if topics[name] == nil { return "config change for unknown topic \(name)" }
        case .partitionReplicasChanged(let name, let assignment):
            guard let topic = topics[name] else { return "replica change for unknown topic \(name)" }
            let index = Int(assignment.partition.rawValue)
            if index < 0 || index >= topic.partitions.count { return "replica change for unknown partition \(name)-\(assignment.partition)" }
            return MetadataState.assignmentProblem(assignment, brokers: brokers)
        case .topicDeleted(let name):
            if topics[name] == nil { return "deleting unknown topic \(name)" }
        }
        return nil
    }

    /// The shape every assignment must have (decide guarantees it; snapshot decoding checks it).
    /// `brokers` nil skips the check that every replica is a registered broker.
    static func assignmentProblem(_ a: PartitionAssignment, brokers: [NodeID: BrokerInfo]?) -> String? {
        if a.replicas.isEmpty { return "partition \(a.partition) has no replicas" }
        if Set(a.replicas).count != a.replicas.count { return "partition \(a.partition) lists a replica twice" }
        if Set(a.addingReplicas).count != a.addingReplicas.count || Set(a.removingReplicas).count != a.removingReplicas.count {
            return "partition \(a.partition) lists a moving replica twice"
        }
        if !a.addingReplicas.allSatisfy(a.replicas.contains) || !a.removingReplicas.allSatisfy(a.replicas.contains) {
            return "partition \(a.partition) moves a replica it does not have"
        }
        if !Set(a.addingReplicas).isDisjoint(with: a.removingReplicas) { return "partition \(a.partition) adds and removes one replica" }
        if a.targetReplicas.isEmpty { return "partition \(a.partition) removes every replica" }
        if let brokers, let unknown = a.replicas.first(where: { brokers[$0] == nil }) { return "partition \(a.partition) on unknown broker \(unknown)" }
        return nil
    }

}

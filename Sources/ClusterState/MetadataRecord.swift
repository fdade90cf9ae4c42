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
    public mutating func apply(_ record: MetadataRecord, offset: Offset, epoch: Term) {
        precondition(offset > lastAppliedOffset, "metadata record offset \(offset) not after \(lastAppliedOffset)")
        precondition(epoch >= lastAppliedEpoch, "metadata epoch \(epoch) before \(lastAppliedEpoch)")
        switch record {
        case .brokerRegistered(let info):
            precondition(info.registrationEpoch >= nextRegistrationEpoch, "registration epoch \(info.registrationEpoch) reused")
            if let old = brokers[info.id] {
                precondition(old.status != .decommissioned, "decommissioned broker \(info.id) registered again")
            }
            brokers[info.id] = info
            nextRegistrationEpoch = info.registrationEpoch + 1
        case .brokerUnregistered(let id):
            precondition(brokers[id] != nil, "unregistering unknown broker \(id)")
            precondition(!hostsReplicas(id), "unregistering broker \(id) that still hosts replicas")
            brokers[id] = nil
        case .brokerStatusChanged(let id, let status):
            precondition(brokers[id] != nil, "status change for unknown broker \(id)")
            brokers[id]!.status = status
        case .topicCreated(let name, let id, let replicationFactor, let configs):
            precondition(topics[name] == nil, "topic \(name) created twice")
            precondition(id >= nextTopicID, "topic id \(id) reused")
            precondition(replicationFactor >= 1, "replication factor \(replicationFactor)")
            topics[name] = Topic(name: name, id: id, replicationFactor: replicationFactor, configs: configs, partitions: [])
            nextTopicID = TopicID(id.rawValue + 1)
        case .partitionCreated(let name, let assignment):
            precondition(topics[name] != nil, "partition for unknown topic \(name)")
            precondition(Int(assignment.partition.rawValue) == topics[name]!.partitions.count, "partition \(assignment.partition) out of order")
            MetadataState.checkAssignment(assignment, brokers: brokers)
            topics[name]!.partitions.append(assignment)
        case .topicConfigChanged(let name, let key, let value):
            precondition(topics[name] != nil, "config change for unknown topic \(name)")
            topics[name]!.configs[key] = value
        case .partitionReplicasChanged(let name, let assignment):
            precondition(topics[name] != nil, "replica change for unknown topic \(name)")
            let index = Int(assignment.partition.rawValue)
            precondition(index >= 0 && index < topics[name]!.partitions.count, "replica change for unknown partition \(name)-\(assignment.partition)")
            MetadataState.checkAssignment(assignment, brokers: brokers)
            topics[name]!.partitions[index] = assignment
        case .topicDeleted(let name):
            precondition(topics[name] != nil, "deleting unknown topic \(name)")
            topics[name] = nil
        }
        lastAppliedOffset = offset
        lastAppliedEpoch = epoch
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

    static func checkAssignment(_ a: PartitionAssignment, brokers: [NodeID: BrokerInfo]) {
        if let problem = assignmentProblem(a, brokers: brokers) { preconditionFailure(problem) }
    }
}

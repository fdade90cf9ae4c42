import BrokerModel

extension GroupsState {
    /// Applies the record read at `offset` of the coordinator partition and remembers the offset.
    public mutating func apply(_ record: GroupRecord, offset: Offset) {
        precondition(offset > appliedOffset, "group record offset \(offset) not after \(appliedOffset)")
        apply(record)
        appliedOffset = offset
    }

    /// Applies one record. Chooses nothing: every id, generation and assignment is in the record, so
    /// replaying the records from an empty state reproduces the state exactly. Never traps on a
    /// record ``decideGroup(_:state:context:)`` produced for this state; a record that cannot apply
    /// means the log and the state disagree — a broken invariant, so it traps. A caller holding
    /// records of doubtful origin asks ``problem(applying:)`` first.
    ///
    /// Derived effects (the only ones): a manual member's assignment entry is its `manualPartitions`;
    /// a dynamic member has an empty entry until the next `rebalanced`; `offsetCommitted` to an
    /// unknown group creates it (assign-mode commits) with the default `sticky` assignor, which the
    /// first `memberJoined` replaces.
    public mutating func apply(_ record: GroupRecord) {
        if let problem = problem(applying: record) { preconditionFailure(problem) }
        switch record {
        case .memberJoined(let id, let member, let assignor, let nextMemberNumber):
            var group = groups[id] ?? ConsumerGroup(id: id, assignor: assignor)
            group.assignor = assignor
            group.members[member.id] = member
            group.assignment[member.id] = member.manualPartitions ?? []
            group.nextMemberNumber = nextMemberNumber
            groups[id] = group
        case .memberUpdated(let id, let member):
            let wasManual = groups[id]!.members[member.id]!.manualPartitions != nil
            groups[id]!.members[member.id] = member
            if let manual = member.manualPartitions {
                groups[id]!.assignment[member.id] = manual
            } else if wasManual {
                groups[id]!.assignment[member.id] = []
            }
        case .memberRemoved(let id, let member):
            groups[id]!.members[member] = nil
            groups[id]!.assignment[member] = nil
        case .rebalanced(let id, let generation, let assignment):
            groups[id]!.generation = generation
            groups[id]!.assignment = assignment
        case .offsetCommitted(let id, let partition, let offset):
            if groups[id] == nil { groups[id] = ConsumerGroup(id: id, assignor: .sticky) }
            groups[id]!.offsets[partition] = offset
        case .groupDeleted(let id):
            groups[id] = nil
        }
    }

    /// Why `record` cannot apply to this state, or nil when it can. Records that `decideGroup`
    /// produced for this state always can; the runtime asks before applying records read from disk
    /// or a peer, to report a corrupt or diverged log instead of trapping.
    public func problem(applying record: GroupRecord) -> String? {
        switch record {
        case .memberJoined(let id, let member, let assignor, let nextMemberNumber):
            if let problem = GroupsState.memberProblem(member) { return problem }
            if nextMemberNumber < (groups[id]?.nextMemberNumber ?? 1) { return "group \(id): member counter goes back to \(nextMemberNumber)" }
            guard let group = groups[id] else { return nil }
            if group.members[member.id] != nil { return "group \(id): member \(member.id) joined twice" }
            if !group.members.isEmpty, group.assignor != assignor {
                return "group \(id): assignor \(assignor.rawValue) while members use \(group.assignor.rawValue)"
            }
        case .memberUpdated(let id, let member):
            guard let group = groups[id] else { return "update of a member of unknown group \(id)" }
            if group.members[member.id] == nil { return "group \(id): update of unknown member \(member.id)" }
            return GroupsState.memberProblem(member)
        case .memberRemoved(let id, let member):
            guard let group = groups[id] else { return "removal of a member of unknown group \(id)" }
            if group.members[member] == nil { return "group \(id): removal of unknown member \(member)" }
        case .rebalanced(let id, let generation, let assignment):
            guard let group = groups[id] else { return "rebalance of unknown group \(id)" }
            return GroupsState.rebalanceProblem(group, generation: generation, assignment: assignment)
        case .offsetCommitted(let id, let partition, let offset):
            if offset.offset.rawValue < 0 { return "group \(id): negative offset \(offset.offset) for \(partition)" }
            if partition.partition.rawValue < 0 { return "group \(id): negative partition \(partition)" }
        case .groupDeleted(let id):
            guard let group = groups[id] else { return "deleting unknown group \(id)" }
            if !group.members.isEmpty { return "deleting group \(id) that has members" }
        }
        return nil
    }

    /// The shape every replicated member has (decide guarantees it).
    static func memberProblem(_ member: GroupMember) -> String? {
        if let manual = member.manualPartitions {
            if !member.topics.isEmpty { return "member \(member.id) has both topics and manual partitions" }
            if !PartitionOrder.isStrictlySorted(manual) { return "member \(member.id): manual partitions not sorted or repeated" }
            if manual.contains(where: { $0.partition.rawValue < 0 }) { return "member \(member.id): negative partition" }
        } else if !zip(member.topics, member.topics.dropFirst()).allSatisfy({ $0 < $1 }) {
            return "member \(member.id): topics not sorted or repeated"
        }
        return nil
    }

    /// A rebalance names every member, keeps manual members' own partitions, gives dynamic members
    /// only partitions of topics they subscribe to, never one partition to two dynamic members, and
    /// moves the generation forward.
    static func rebalanceProblem(_ group: ConsumerGroup, generation: Int32, assignment: [MemberID: [TopicPartition]]) -> String? {
        if generation <= group.generation { return "group \(group.id): generation \(generation) not after \(group.generation)" }
        if Set(assignment.keys) != Set(group.members.keys) { return "group \(group.id): the assignment does not name exactly the members" }
        var taken: Set<TopicPartition> = []
        for id in assignment.keys.sorted() {
            let member = group.members[id]!
            let partitions = assignment[id]!
            if !PartitionOrder.isStrictlySorted(partitions) { return "group \(group.id): partitions of \(id) not sorted or repeated" }
            if let manual = member.manualPartitions {
                if partitions != manual { return "group \(group.id): manual member \(id) given other partitions" }
                continue
            }
            for partition in partitions {
                if !member.topics.contains(partition.topic) { return "group \(group.id): \(id) given \(partition) it does not subscribe to" }
                if partition.partition.rawValue < 0 { return "group \(group.id): negative partition \(partition)" }
                if !taken.insert(partition).inserted { return "group \(group.id): \(partition) given to two members" }
            }
        }
        return nil
    }
}

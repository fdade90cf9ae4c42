import BrokerModel

/// Validates `command` against `state` and returns the records that carry it out and the reply, or
/// why it was refused (then nothing changes). Pure: the same (command, state, context) always gives
/// the same answer. Applying the returned records in order to `state` never traps.
///
/// Choices beyond ``GroupCommand``'s doc comments:
///
/// - **Records of a join**: `memberJoined` (with the group's assignor and the member counter after
///   this join — it advances only for a generated id), then, for a dynamic member, one `rebalanced`
///   with generation + 1 and the whole assignment. A manual member's join is only `memberJoined`:
///   its assignment entry is its `manualPartitions` and the generation does not change.
/// - **Generated member ids**: `<client>-<n>-<hex>`: the client id reduced to `[A-Za-z0-9._-]` and cut
///   to 64 bytes (`member` when nothing is left), the group's member counter, and the low 32 bits of
///   `nonce` as 8 lowercase hex digits. Should a named member already hold that id, the counter
///   advances until the id is free.
/// - **A rebalance** is one `rebalanced` record naming every member (manual members with their own
///   partitions). It is written whenever dynamic membership changes (join, leave, expiry, a
///   subscription change that involves a dynamic member) — the generation moves even if no partition
///   does — and for `refreshAssignment` only when the recomputed assignment differs.
/// - **The last member leaving** (leave or expiry): a group with committed offsets stays, Empty, with
///   a `rebalanced` to the next generation and an empty assignment if a dynamic member left; a group
///   without offsets is deleted with an explicit `groupDeleted` record (a tombstone for the
///   `g\0<group>` key, see ``GroupCodec/key(of:)``).
/// - **Repeats are no-ops**: `updateSubscription` to the current subscription, `expireMembers` of
///   members no longer present, and `expireMembers` of an unknown group (deleted after its last
///   member left) give no records and `.updated(generation:)` (0 for an unknown group).
/// - **Commits and resets** validate every entry first (400-class errors before 409-class ones):
///   offset ≥ 0, the partition exists in `context`, metadata bytes, no partition twice, count. Their
///   `offsetCommitted` records are sorted by (topic, partition). An empty list commits nothing.
/// - **Limits are uniform**: a rebalance over more than `assignmentPartitionsMax` partitions is
///   refused whatever caused it — a leave or expiry too, if topics grew past the limit since the
///   last rebalance (records beyond the limits would not decode).
public func decideGroup(
    _ command: GroupCommand, state: GroupsState, context: GroupContext
) -> Result<(records: [GroupRecord], reply: GroupReply), GroupError> {
    do throws(GroupError) {
        return .success(try GroupDecider(state: state, context: context).decide(command))
    } catch {
        return .failure(error)
    }
}

/// Records decided so far, applied at once to a working copy of the state so later steps of the
/// same command (the rebalance after a join) see their effect.
private struct Draft {
    var state: GroupsState
    var records: [GroupRecord] = []

    mutating func add(_ record: GroupRecord) {
        state.apply(record)
        records.append(record)
    }

    /// Recomputes the group's assignment; writes a `rebalanced` when `force` or when it changed.
    mutating func rebalance(_ id: GroupID, context: GroupContext, force: Bool) throws(GroupError) {
        let group = state.groups[id]!
        let assignment = try GroupAssignors.assignment(for: group, partitionCounts: context.partitionCounts, limits: context.limits)
        guard force || assignment != group.assignment else { return }
        guard group.generation < Int32.max else { throw .limitExceeded("group \(id) has used every generation number") }
        add(.rebalanced(group: id, generation: group.generation + 1, assignment: assignment))
    }
}

private struct GroupDecider {
    let state: GroupsState
    let context: GroupContext
    var limits: GroupLimits { context.limits }

    /// Member counters stay far below overflow (the codec refuses larger values too).
    static let memberNumberMax: Int64 = 1 << 62
    static let clientIDPrefixBytesMax = 64

    func decide(_ command: GroupCommand) throws(GroupError) -> (records: [GroupRecord], reply: GroupReply) {
        switch command {
        case .join(let group, let memberName, let nonce, let clientID, let topics, let manualPartitions, let sessionTimeout,
            let autoOffsetReset, let autoCommit, let assignor, let properties):
            return try join(
                group, memberName: memberName, nonce: nonce, clientID: clientID, topics: topics, manualPartitions: manualPartitions,
                sessionTimeoutMilliseconds: sessionTimeout, autoOffsetReset: autoOffsetReset, autoCommit: autoCommit, assignor: assignor,
                properties: properties)
        case .leave(let group, let member):
            let current = try existing(group)
            guard current.members[member] != nil else { throw .unknownMember(group: group, member: member) }
            return try remove([member], from: current)
        case .expireMembers(let group, let members):
            guard let current = state.groups[group] else { return ([], .updated(generation: 0)) }
            let present = Set(members).filter { current.members[$0] != nil }.sorted()
            if present.isEmpty { return ([], .updated(generation: current.generation)) }
            return try remove(present, from: current)
        case .updateSubscription(let group, let member, let topics, let manualPartitions):
            return try updateSubscription(group, member: member, topics: topics, manualPartitions: manualPartitions)
        case .commit(let group, let member, let generation, let offsets, let now):
            return try commit(group, member: member, generation: generation, offsets: offsets, nowMilliseconds: now)
        case .resetOffsets(let group, let offsets, let now):
            let entries = try validated(offsets)
            if let current = state.groups[group], !current.members.isEmpty { throw .groupNotEmpty(group) }
            return try committed(entries, to: group, nowMilliseconds: now)
        case .deleteGroup(let group):
            let current = try existing(group)
            guard current.members.isEmpty else { throw .groupNotEmpty(group) }
            return ([.groupDeleted(group)], .deleted)
        case .refreshAssignment(let group):
            _ = try existing(group)
            var draft = Draft(state: state)
            try draft.rebalance(group, context: context, force: false)
            return (draft.records, .updated(generation: draft.state.groups[group]!.generation))
        }
    }

    func existing(_ id: GroupID) throws(GroupError) -> ConsumerGroup {
        guard let group = state.groups[id] else { throw .unknownGroup(id) }
        return group
    }

    // MARK: Membership

    func join(
        _ id: GroupID, memberName: MemberID?, nonce: UInt64, clientID: String, topics: [TopicName], manualPartitions: [TopicPartition]?,
        sessionTimeoutMilliseconds: Int64, autoOffsetReset: AutoOffsetReset, autoCommit: Bool, assignor: GroupAssignor,
        properties: [String: String]
    ) throws(GroupError) -> (records: [GroupRecord], reply: GroupReply) {
        if clientID.utf8.count > limits.clientIDBytesMax {
            throw .limitExceeded("client id is \(clientID.utf8.count) bytes; at most \(limits.clientIDBytesMax) are allowed")
        }
        let (topics, manual) = try subscription(topics: topics, manualPartitions: manualPartitions)
        if !limits.sessionTimeoutMillisecondsRange.contains(sessionTimeoutMilliseconds) {
            let range = limits.sessionTimeoutMillisecondsRange
            throw .invalid("session timeout \(sessionTimeoutMilliseconds) ms is outside \(range.lowerBound)...\(range.upperBound) ms")
        }
        try check(properties)
        if state.groups[id] == nil, state.groups.count >= limits.groupsMax {
            throw .limitExceeded("this coordinator holds \(state.groups.count) groups; at most \(limits.groupsMax) are allowed")
        }
        let group = state.groups[id] ?? ConsumerGroup(id: id, assignor: assignor)
        if !group.members.isEmpty, group.assignor != assignor {
            throw .inconsistentAssignor(group: id, current: group.assignor, given: assignor)
        }
        if group.members.count >= limits.membersPerGroupMax {
            throw .limitExceeded("group \(id) has \(group.members.count) members; at most \(limits.membersPerGroupMax) are allowed")
        }
        let memberID: MemberID
        var next = group.nextMemberNumber
        if let memberName {
            if group.members[memberName] != nil { throw .memberExists(group: id, member: memberName) }
            memberID = memberName
        } else {
            var candidate: MemberID
            repeat {
                if next >= Self.memberNumberMax { throw .limitExceeded("group \(id) has used every member number") }
                candidate = Self.generatedID(clientID: clientID, number: next, nonce: nonce)
                next += 1
            } while group.members[candidate] != nil
            memberID = candidate
        }
        let member = GroupMember(
            id: memberID, clientID: clientID, topics: topics, manualPartitions: manual, sessionTimeoutMilliseconds: sessionTimeoutMilliseconds,
            autoOffsetReset: autoOffsetReset, autoCommit: autoCommit, properties: properties)
        var draft = Draft(state: state)
        draft.add(.memberJoined(group: id, member: member, assignor: assignor, nextMemberNumber: next))
        if manual == nil { try draft.rebalance(id, context: context, force: true) }
        let joined = draft.state.groups[id]!
        return (draft.records, .joined(member: memberID, generation: joined.generation, assignment: joined.assignment[memberID] ?? []))
    }

    /// Removes present members (sorted); rebalances if a dynamic one left; deletes a group left with
    /// neither members nor offsets.
    func remove(_ members: [MemberID], from group: ConsumerGroup) throws(GroupError) -> (records: [GroupRecord], reply: GroupReply) {
        var draft = Draft(state: state)
        for member in members { draft.add(.memberRemoved(group: group.id, member: member)) }
        let after = draft.state.groups[group.id]!
        if after.members.isEmpty, after.offsets.isEmpty {
            draft.add(.groupDeleted(group.id))
            return (draft.records, .updated(generation: after.generation))
        }
        let dynamicLeft = members.contains { group.members[$0]!.manualPartitions == nil }
        try draft.rebalance(group.id, context: context, force: dynamicLeft)
        return (draft.records, .updated(generation: draft.state.groups[group.id]!.generation))
    }

    func updateSubscription(
        _ id: GroupID, member memberID: MemberID, topics: [TopicName], manualPartitions: [TopicPartition]?
    ) throws(GroupError) -> (records: [GroupRecord], reply: GroupReply) {
        let (topics, manual) = try subscription(topics: topics, manualPartitions: manualPartitions)
        let group = try existing(id)
        guard let old = group.members[memberID] else { throw .unknownMember(group: id, member: memberID) }
        var member = old
        member.topics = topics
        member.manualPartitions = manual
        if member == old { return ([], .updated(generation: group.generation)) }
        var draft = Draft(state: state)
        draft.add(.memberUpdated(group: id, member: member))
        let dynamicChanged = old.manualPartitions == nil || manual == nil
        try draft.rebalance(id, context: context, force: dynamicChanged)
        return (draft.records, .updated(generation: draft.state.groups[id]!.generation))
    }

    /// Sorted, deduplicated topics of a dynamic member, or checked manual partitions (topics empty).
    func subscription(topics: [TopicName], manualPartitions: [TopicPartition]?) throws(GroupError) -> ([TopicName], [TopicPartition]?) {
        if let manualPartitions {
            if !topics.isEmpty { throw .invalid("a member either subscribes to topics or is assigned partitions, not both") }
            let unique = PartitionOrder.sorted(Set(manualPartitions))
            if unique.count > limits.assignmentPartitionsMax {
                throw .limitExceeded("\(unique.count) assigned partitions; at most \(limits.assignmentPartitionsMax) are allowed")
            }
            for partition in unique where !exists(partition) { throw .unknownTopicPartition(partition) }
            return ([], unique)
        }
        let unique = Set(topics).sorted()
        if unique.isEmpty { throw .invalid("a subscription needs at least one topic") }
        if unique.count > limits.topicsPerMemberMax {
            throw .limitExceeded("subscription to \(unique.count) topics; at most \(limits.topicsPerMemberMax) are allowed")
        }
        return (unique, nil)
    }

    func check(_ properties: [String: String]) throws(GroupError) {
        if properties.count > limits.propertiesMax {
            throw .limitExceeded("\(properties.count) member properties; at most \(limits.propertiesMax) are allowed")
        }
        for key in properties.keys.sorted() {
            let value = properties[key]!
            if key.utf8.count > limits.propertyBytesMax || value.utf8.count > limits.propertyBytesMax {
                throw .limitExceeded("member property \(key.prefix(40)) is longer than \(limits.propertyBytesMax) bytes")
            }
        }
    }

    func exists(_ partition: TopicPartition) -> Bool {
        partition.partition.rawValue >= 0 && partition.partition.rawValue < context.partitionCounts[partition.topic] ?? 0
    }

    static func generatedID(clientID: String, number: Int64, nonce: UInt64) -> MemberID {
        var prefix = String(decoding: clientID.utf8.filter(isIdentifierByte).prefix(clientIDPrefixBytesMax), as: UTF8.self)
        if prefix.isEmpty { prefix = "member" }
        let hex = String(UInt32(truncatingIfNeeded: nonce), radix: 16)
        let text = "\(prefix)-\(number)-\(String(repeating: "0", count: 8 - hex.count))\(hex)"
        // At most 64 + 1 + 19 + 1 + 8 bytes of the allowed alphabet: always a valid id.
        return MemberID(text)!
    }

    /// `[A-Za-z0-9._-]`, the alphabet of `MemberID`.
    static func isIdentifierByte(_ b: UInt8) -> Bool {
        (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x2E || b == 0x5F || b == 0x2D
    }

    // MARK: Offsets

    func commit(
        _ id: GroupID, member: MemberID?, generation: Int32?, offsets: [CommittedOffsetEntry], nowMilliseconds: Int64
    ) throws(GroupError) -> (records: [GroupRecord], reply: GroupReply) {
        let entries = try validated(offsets)
        guard let member else {
            if let group = state.groups[id], group.members.values.contains(where: { $0.manualPartitions == nil }) {
                throw .groupHasMembers(id)
            }
            return try committed(entries, to: id, nowMilliseconds: nowMilliseconds)
        }
        let group = try existing(id)
        guard group.members[member] != nil else { throw .unknownMember(group: id, member: member) }
        if let generation {
            if generation != group.generation { throw .staleGeneration(group: id, given: generation, current: group.generation) }
        } else {
            let assigned = Set(group.assignment[member] ?? [])
            if let stray = entries.first(where: { !assigned.contains($0.partition) }) {
                throw .notAssigned(group: id, member: member, partition: stray.partition)
            }
        }
        return try committed(entries, to: id, nowMilliseconds: nowMilliseconds)
    }

    /// Entries checked and sorted by partition.
    func validated(_ offsets: [CommittedOffsetEntry]) throws(GroupError) -> [CommittedOffsetEntry] {
        if offsets.count > limits.commitOffsetsMax {
            throw .limitExceeded("\(offsets.count) offsets in one commit; at most \(limits.commitOffsetsMax) are allowed")
        }
        var seen: Set<TopicPartition> = []
        for entry in offsets {
            if entry.offset.rawValue < 0 { throw .invalid("offset \(entry.offset) for \(entry.partition) is negative") }
            if !exists(entry.partition) { throw .unknownTopicPartition(entry.partition) }
            if entry.metadata.utf8.count > limits.metadataBytesMax {
                throw .limitExceeded("commit metadata for \(entry.partition) is \(entry.metadata.utf8.count) bytes; at most \(limits.metadataBytesMax) are allowed")
            }
            if !seen.insert(entry.partition).inserted { throw .invalid("partition \(entry.partition) is committed twice") }
        }
        return offsets.sorted { PartitionOrder.precedes($0.partition, $1.partition) }
    }

    /// One `offsetCommitted` per entry; creates the group when it does not exist (within `groupsMax`).
    func committed(_ entries: [CommittedOffsetEntry], to id: GroupID, nowMilliseconds: Int64) throws(GroupError) -> (
        records: [GroupRecord], reply: GroupReply
    ) {
        if !entries.isEmpty, state.groups[id] == nil, state.groups.count >= limits.groupsMax {
            throw .limitExceeded("this coordinator holds \(state.groups.count) groups; at most \(limits.groupsMax) are allowed")
        }
        let records = entries.map { entry in
            GroupRecord.offsetCommitted(
                group: id, partition: entry.partition,
                offset: CommittedOffset(offset: entry.offset, metadata: entry.metadata, commitMilliseconds: nowMilliseconds))
        }
        return (records, .committed(count: records.count))
    }
}

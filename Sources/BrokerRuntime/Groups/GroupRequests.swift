import BrokerModel
import ClusterState
import Dispatch
import Synchronization

/// Group requests served by the coordinator of the group (this broker leads its partition).
extension GroupCoordinator {
    typealias Answer = @Sendable (Result<GroupAnswer, BrokerError>) -> Void

    /// Serves `call` here, or refuses with `notLeader` (naming the leader when known) so that the
    /// forwarder retries at the coordinator.
    func handle(_ call: GroupCall, completion: @escaping Answer) {
        if case .list(let p) = call {
            guard p >= 0 && p < partitionCount else { return completion(.failure(.badRequest("no coordinator partition \(p)"))) }
            return whenReady(p, completion) { [self] in completion(.success(.list(summaries(p)))) }
        }
        guard let group = call.group else { return completion(.failure(.badRequest("group call without a group"))) }
        let p = partition(of: group)
        whenReady(p, completion) { [self] in
            switch call {
            case .join(let r): join(r, p, completion)
            case .leave(let g, let m): leave(g, m, p, completion)
            case .heartbeat(let g, let m):
                completion(partitions.withLock { all -> Result<GroupAnswer, BrokerError> in
                    guard let view = membership(all[p]!.groups, g, m) else { return .failure(unknownMember(g, m)) }
                    touch(p, g, m, in: &all)
                    return .success(.membership(view))
                })
            case .poll(let r): poll(r, p, completion)
            case .commit(let r): commit(r, p, completion)
            case .fetchOffsets(let g, let m, let tps): completion(fetchOffsets(g, m, tps, p))
            case .describe(let g): completion(describe(g, p))
            case .delete(let g):
                submit(.deleteGroup(g), group: g) { completion($0.map { _ in .done }) }
            case .reset(let g, let topics, let target): reset(g, topics, target, completion)
            case .subscribe(let g, let m, let topics, let manual):
                submit(.updateSubscription(group: g, member: m, topics: topics, manualPartitions: manual), group: g) { [self] result in
                    completion(result.flatMap { _ in
                        partitions.withLock { all in membership(all[p]!.groups, g, m) }.map { .success(.membership($0)) } ?? .failure(unknownMember(g, m))
                    })
                }
            case .seek(let g, let m, let positions): seek(g, m, positions, p, completion)
            case .positions(let g, let m):
                completion(partitions.withLock { all -> Result<GroupAnswer, BrokerError> in
                    guard let s = all[p]!.sessions[g]?[m], all[p]!.groups.groups[g]?.members[m] != nil else { return .failure(unknownMember(g, m)) }
                    return .success(.offsets(s.positions.sorted { ($0.key.topic, $0.key.partition) < ($1.key.topic, $1.key.partition) }
                        .map { GroupOffset(partition: $0.key, offset: $0.value, metadata: "") }))
                })
            case .list: break
            }
        }
    }

    private func whenReady(_ p: Int32, _ completion: @escaping Answer, _ body: @escaping @Sendable () -> Void) {
        switch status(p) {
        case .ready: whenConfirmed(p, failure: { completion(.failure($0)) }, body)
        case .loading: completion(.failure(.notLeader("the group coordinator is loading its state; retry", leader: nil)))
        case .notLeader(let leader): completion(.failure(.notLeader("this broker does not coordinate the group", leader: leader)))
        }
    }

    func unknownMember(_ g: GroupID, _ m: MemberID) -> BrokerError {
        .unknownMember("unknown member \(m) of group \(g) (it left, or its session expired: join again)")
    }

    func membership(_ state: GroupsState, _ g: GroupID, _ m: MemberID) -> GroupMembership? {
        guard let group = state.groups[g], let member = group.members[m] else { return nil }
        return GroupMembership(group: g, member: m, generation: group.generation, assignment: group.assignment[m] ?? [],
                               topics: member.topics, manualPartitions: member.manualPartitions,
                               sessionTimeoutMilliseconds: member.sessionTimeoutMilliseconds, autoCommit: member.autoCommit,
                               properties: member.properties)
    }

    // MARK: - membership

    private func join(_ r: JoinGroupRequest, _ p: Int32, _ completion: @escaping Answer) {
        let command = GroupCommand.join(group: r.group, memberName: r.memberName, nonce: UInt64.random(in: 0...UInt64.max), clientID: r.clientID,
                                        topics: r.topics, manualPartitions: r.manualPartitions, sessionTimeoutMilliseconds: r.sessionTimeoutMilliseconds,
                                        autoOffsetReset: r.autoOffsetReset, autoCommit: r.autoCommit, assignor: r.assignor, properties: r.properties)
        submit(command, group: r.group) { [self] result in
            completion(result.flatMap { reply in
                guard case .joined(let m, _, _) = reply else { return .failure(.unavailable("unexpected reply to a join")) }
                return partitions.withLock { all in
                    touch(p, r.group, m, in: &all)
                    return membership(all[p]!.groups, r.group, m).map { .success(.membership($0)) } ?? .failure(unknownMember(r.group, m))
                }
            })
        }
    }

    private func leave(_ g: GroupID, _ m: MemberID, _ p: Int32, _ completion: @escaping Answer) {
        // Kafka's consumer commits what it consumed when it closes with auto-commit on.
        let pending = autoCommitEntries(g, m, p)
        let leaveNow: @Sendable () -> Void = { [self] in
            submit(.leave(group: g, member: m), group: g) { completion($0.map { _ in .done }) }
        }
        guard let (generation, entries) = pending else { return leaveNow() }
        submit(.commit(group: g, member: m, generation: generation, offsets: entries, nowMilliseconds: host.wallMilliseconds()), group: g) { _ in leaveNow() }
    }

    /// The member's delivered-but-uncommitted positions, when it auto-commits.
    func autoCommitEntries(_ g: GroupID, _ m: MemberID, _ p: Int32) -> (Int32, [CommittedOffsetEntry])? {
        partitions.withLock { all -> (Int32, [CommittedOffsetEntry])? in
            guard let group = all[p]!.groups.groups[g], let member = group.members[m], member.autoCommit,
                  let s = all[p]!.sessions[g]?[m], !s.delivered.isEmpty else { return nil }
            let entries = s.delivered.filter { tp, o in (group.offsets[tp]?.offset).map { $0 < o } ?? true }
                .sorted { ($0.key.topic, $0.key.partition) < ($1.key.topic, $1.key.partition) }
                .map { CommittedOffsetEntry(partition: $0.key, offset: $0.value) }
            return entries.isEmpty ? nil : (group.generation, entries)
        }
    }

    // MARK: - offsets

    private func commit(_ r: GroupCommitRequest, _ p: Int32, _ completion: @escaping Answer) {
        var offsets = r.offsets
        var generation = r.generation
        if offsets.isEmpty, let m = r.member {
            // REST Proxy v2: an empty commit stores everything delivered to the instance so far.
            let positions = partitions.withLock { all -> (Int32, [CommittedOffsetEntry])? in
                guard let group = all[p]!.groups.groups[r.group], group.members[m] != nil else { return nil }
                let s = all[p]!.sessions[r.group]?[m]
                let entries = (s?.positions ?? [:]).sorted { ($0.key.topic, $0.key.partition) < ($1.key.topic, $1.key.partition) }
                    .map { CommittedOffsetEntry(partition: $0.key, offset: $0.value) }
                return (group.generation, entries)
            }
            guard let (current, entries) = positions else { return completion(.failure(unknownMember(r.group, m))) }
            if entries.isEmpty { return completion(.success(.committed(0))) }
            offsets = entries
            generation = generation ?? current
        }
        let committed = offsets
        let command = GroupCommand.commit(group: r.group, member: r.member, generation: generation, offsets: committed, nowMilliseconds: host.wallMilliseconds())
        submit(command, group: r.group) { [self] result in
            if case .success = result, let m = r.member {
                partitions.withLock { all in
                    for e in committed where (all[p]!.sessions[r.group]?[m]?.delivered[e.partition]).map({ $0 <= e.offset }) ?? false {
                        all[p]!.sessions[r.group]?[m]?.delivered[e.partition] = nil
                    }
                }
            }
            completion(result.map { reply in
                if case .committed(let n) = reply { return .committed(n) }
                return .committed(committed.count)
            })
        }
    }

    private func fetchOffsets(_ g: GroupID, _ m: MemberID?, _ tps: [TopicPartition]?, _ p: Int32) -> Result<GroupAnswer, BrokerError> {
        partitions.withLock { all -> Result<GroupAnswer, BrokerError> in
            let group = all[p]!.groups.groups[g]
            var wanted: [TopicPartition]
            if let tps {
                wanted = tps
            } else if let m {
                guard let a = group?.assignment[m], group?.members[m] != nil else { return .failure(unknownMember(g, m)) }
                wanted = a
            } else {
                guard let group else { return .failure(.unknownGroup("unknown consumer group \(g)")) }
                wanted = Array(group.offsets.keys)
            }
            wanted.sort { ($0.topic, $0.partition) < ($1.topic, $1.partition) }
            return .success(.offsets(wanted.map { tp in
                let c = group?.offsets[tp]
                return GroupOffset(partition: tp, offset: c?.offset, metadata: c?.metadata ?? "")
            }))
        }
    }

    private func reset(_ g: GroupID, _ topics: [TopicName], _ target: OffsetResetTarget, _ completion: @escaping Answer) {
        var entries: [CommittedOffsetEntry] = []
        do throws(BrokerError) {
            if case .exact(let given) = target {
                entries = given
            } else {
                for t in topics {
                    guard let n = host.partitionCount(t) else { throw .unknownTopic(t.rawValue) }
                    for i in 0..<n {
                        let tp = TopicPartition(t, PartitionID(i))
                        let o = try host.partitionOffsets(tp)
                        let offset: Offset
                        switch target {
                        case .earliest: offset = o.logStartOffset
                        case .latest, .exact: offset = o.highWatermark
                        case .timestamp(let ms): offset = try host.offset(tp, forTimestamp: ms) ?? o.highWatermark
                        }
                        entries.append(CommittedOffsetEntry(partition: tp, offset: offset))
                    }
                }
            }
        } catch {
            return completion(.failure(error))
        }
        let chosen = entries
        submit(.resetOffsets(group: g, offsets: chosen, nowMilliseconds: host.wallMilliseconds()), group: g) { result in
            completion(result.map { _ in .offsets(chosen.map { GroupOffset(partition: $0.partition, offset: $0.offset, metadata: $0.metadata) }) })
        }
    }

    private func seek(_ g: GroupID, _ m: MemberID, _ positions: [MemberSeek], _ p: Int32, _ completion: @escaping Answer) {
        var resolved: [(TopicPartition, Offset)] = []
        do throws(BrokerError) {
            let owned = partitions.withLock { all in all[p]!.groups.groups[g]?.members[m] == nil ? nil : Set(all[p]!.groups.groups[g]?.assignment[m] ?? []) }
            guard let owned else { throw unknownMember(g, m) }
            for s in positions {
                guard owned.contains(s.partition) else { throw .illegalState("partition \(s.partition) is not assigned to \(m); positions can only be set on assigned partitions") }
                let o = try host.partitionOffsets(s.partition)
                switch s.position {
                case .beginning: resolved.append((s.partition, o.logStartOffset))
                case .end: resolved.append((s.partition, o.highWatermark))
                case .offset(let x):
                    guard x.rawValue >= 0 else { throw .badRequest("offset must be ≥ 0, got \(x)") }
                    resolved.append((s.partition, x))
                case .timestamp(let ms): resolved.append((s.partition, try host.offset(s.partition, forTimestamp: ms) ?? o.highWatermark))
                }
            }
        } catch {
            return completion(.failure(error))
        }
        partitions.withLock { all in
            touch(p, g, m, in: &all)
            for (tp, o) in resolved { all[p]!.sessions[g]?[m]?.positions[tp] = o }
        }
        completion(.success(.done))
    }

    // MARK: - views

    private func describe(_ g: GroupID, _ p: Int32) -> Result<GroupAnswer, BrokerError> {
        let now = host.monotonicMilliseconds()
        let snapshot = partitions.withLock { all -> (ConsumerGroup, [MemberID: MemberSession])? in
            guard let group = all[p]!.groups.groups[g] else { return nil }
            return (group, all[p]!.sessions[g] ?? [:])
        }
        guard let (group, sessions) = snapshot else { return .failure(.unknownGroup("unknown consumer group \(g)")) }
        var owners: [TopicPartition: MemberID] = [:]
        for (m, tps) in group.assignment { for tp in tps { owners[tp] = m } }
        let members = group.members.values.sorted { $0.id < $1.id }.map { m in
            GroupMemberDescription(member: m.id, clientID: m.clientID, topics: m.topics, isManual: m.manualPartitions != nil,
                                   assignment: group.assignment[m.id] ?? [], sessionTimeoutMilliseconds: m.sessionTimeoutMilliseconds,
                                   idleMilliseconds: sessions[m.id].map { $0.activePolls > 0 ? 0 : now - $0.lastSeenMilliseconds })
        }
        let all = Set(owners.keys).union(group.offsets.keys).sorted { ($0.topic, $0.partition) < ($1.topic, $1.partition) }
        let parts = all.map { tp in
            let hw = (try? host.partitionOffsets(tp))?.highWatermark
            let committed = group.offsets[tp]?.offset
            var lag: Int64?
            if let hw, let committed { lag = max(0, hw - committed) }
            return GroupPartitionDescription(partition: tp, owner: owners[tp], committedOffset: committed, highWatermark: hw, lag: lag)
        }
        return .success(.description(GroupDescription(group: g, state: group.stateName, generation: group.generation, assignor: group.assignor,
                                                      coordinator: host.nodeID, members: members, partitions: parts)))
    }

    private func summaries(_ p: Int32) -> [GroupSummary] {
        partitions.withLock { all in
            all[p]!.groups.groups.values.sorted { $0.id < $1.id }.map {
                GroupSummary(group: $0.id, state: $0.stateName, memberCount: $0.members.count, coordinator: host.nodeID)
            }
        }
    }
}

import BrokerModel
import ClusterState
import Testing

/// Consumer-group invariants over seeded random command streams. Every failure names its seed;
/// `GroupSimulation(seed:)` replays it.
@Suite struct GroupPropertyTests {
    static let seeds: [UInt64] = Array(1...200)

    /// After every command: every partition of the subscribed topics is assigned to exactly one
    /// dynamic member that subscribes to it (and nothing else is assigned); manual members hold
    /// their own partitions; sticky groups are balanced among eligible members; generations never
    /// go back; committed offsets change only by commit or reset (and vanish only by deleteGroup).
    /// At the end, replaying every record from empty gives the state.
    @Test func randomCommandStreamsKeepTheInvariants() {
        var kinds: [String: Int] = [:]
        for seed in Self.seeds {
            var sim = GroupSimulation(seed: seed)
            var generations: [GroupID: Int32] = [:]
            for step in 0..<150 {
                let before = sim.state
                let command: GroupCommand?
                if sim.chance(5) {
                    sim.changeTopic()
                    command = nil
                } else {
                    let next = sim.randomCommand()
                    sim.run(next)
                    command = next
                }
                let label = "seed \(seed) step \(step) \(command.map { "\($0)" } ?? "topic change")"
                for problem in Self.assignmentProblems(sim.state, partitionCounts: sim.partitionCounts) {
                    Issue.record("\(label): \(problem)")
                }
                for id in sim.state.groups.keys.sorted() {
                    let generation = sim.state.groups[id]!.generation
                    if let last = generations[id], generation < last { Issue.record("\(label): \(id) generation \(last) → \(generation)") }
                    generations[id] = generation
                }
                for id in generations.keys where sim.state.groups[id] == nil { generations[id] = nil }
                for problem in Self.offsetProblems(before: before, after: sim.state, command: command) {
                    Issue.record("\(label): \(problem)")
                }
            }
            #expect(sim.failures.isEmpty, "\(sim.failures)")
            for record in sim.log { kinds[String("\(record)".prefix { $0 != " " }), default: 0] += 1 }
            var replayed = GroupsState()
            for record in sim.log { replayed.apply(record) }
            #expect(replayed == sim.state, "seed \(seed): replaying \(sim.log.count) records does not reproduce the state")
        }
        // The streams must exercise every record kind, or the invariants above hold vacuously.
        for kind in ["member-joined", "member-updated", "member-removed", "rebalanced", "offset-committed", "group-deleted"] {
            #expect(kinds[kind, default: 0] >= 200, "only \(kinds[kind, default: 0]) \(kind) records over all seeds: \(kinds)")
        }
    }

    /// Sticky in a group with one subscription: a newcomer takes exactly ⌊P/n⌋ partitions and only
    /// those move; after a leave only the leaver's partitions move; counts stay within one.
    @Test func stickyMovesOnlyWhatItMust() {
        for seed in Self.seeds {
            var sim = GroupSimulation(seed: seed)
            let topic = TopicName("p")!
            let partitionCount = sim.int(1...30)
            sim.partitionCounts = [topic: Int32(partitionCount)]
            let group = GroupID("s")!
            var names: [MemberID] = []
            for index in 0..<sim.int(1...6) {
                let before = sim.state.groups[group]?.assignment ?? [:]
                let name = MemberID("m\(sim.int(0...99))-\(index)")!
                guard case .success = sim.run(.join(group: group, memberName: name, nonce: 0, clientID: "", topics: [topic], manualPartitions: nil,
                    sessionTimeoutMilliseconds: 10_000, autoOffsetReset: .latest, autoCommit: false, assignor: .sticky, properties: [:]))
                else {
                    Issue.record("seed \(seed): join refused")
                    break
                }
                names.append(name)
                let after = sim.state.groups[group]!.assignment
                #expect(after[name]!.count == partitionCount / names.count, "seed \(seed): newcomer got \(after[name]!.count) of \(partitionCount)")
                for (member, old) in before {
                    #expect(Set(after[member]!).isSubset(of: old), "seed \(seed): \(member) gained partitions when \(name) joined")
                }
                Self.expectBalanced(after, seed: seed)
            }
            while names.count > 1 {
                let leaver = names.remove(at: sim.int(0...(names.count - 1)))
                let before = sim.state.groups[group]!.assignment
                sim.run(.leave(group: group, member: leaver))
                let after = sim.state.groups[group]!.assignment
                for member in names {
                    #expect(Set(after[member]!).isSuperset(of: before[member]!), "seed \(seed): \(member) lost partitions when \(leaver) left")
                }
                Self.expectBalanced(after, seed: seed)
            }
            #expect(sim.failures.isEmpty, "\(sim.failures)")
        }
    }

    static func expectBalanced(_ assignment: [MemberID: [TopicPartition]], seed: UInt64) {
        let counts = assignment.values.map(\.count)
        #expect(counts.max()! - counts.min()! <= 1, "seed \(seed): counts \(counts)")
    }

    static func assignmentProblems(_ state: GroupsState, partitionCounts: [TopicName: Int32]) -> [String] {
        var problems: [String] = []
        for id in state.groups.keys.sorted() {
            let group = state.groups[id]!
            if Set(group.assignment.keys) != Set(group.members.keys) { problems.append("\(id): assignment keys are not the members") }
            let dynamic = group.members.values.filter { $0.manualPartitions == nil }
            var owners: [TopicPartition: [MemberID]] = [:]
            for member in group.members.values {
                let assigned = group.assignment[member.id] ?? []
                if let manual = member.manualPartitions {
                    if assigned != manual { problems.append("\(id): manual member \(member.id) holds \(assigned), not \(manual)") }
                    continue
                }
                for partition in assigned {
                    owners[partition, default: []].append(member.id)
                    if !member.topics.contains(partition.topic) { problems.append("\(id): \(member.id) holds \(partition) without subscribing") }
                }
            }
            var expected: Set<TopicPartition> = []
            for topic in Set(dynamic.flatMap(\.topics)) {
                for p in 0..<Int(max(0, partitionCounts[topic] ?? 0)) { expected.insert(TopicPartition(topic, PartitionID(Int32(p)))) }
            }
            if Set(owners.keys) != expected { problems.append("\(id): assigned \(owners.keys.count) partitions, expected \(expected.count)") }
            for (partition, holders) in owners where holders.count != 1 { problems.append("\(id): \(partition) held by \(holders)") }
            if group.assignor == .sticky {
                let load = Dictionary(uniqueKeysWithValues: dynamic.map { ($0.id, group.assignment[$0.id]?.count ?? 0) })
                for (partition, holders) in owners {
                    for peer in dynamic where peer.topics.contains(partition.topic) && load[peer.id]! + 2 <= load[holders[0]]! {
                        problems.append("\(id): sticky left \(holders[0]) with \(load[holders[0]]!) while \(peer.id) has \(load[peer.id]!)")
                    }
                }
            }
        }
        return problems
    }

    static func offsetProblems(before: GroupsState, after: GroupsState, command: GroupCommand?) -> [String] {
        var problems: [String] = []
        var changing: (group: GroupID, partitions: Set<TopicPartition>)?
        var deleting: GroupID?
        switch command {
        case .commit(let group, _, _, let offsets, _), .resetOffsets(let group, let offsets, _):
            changing = (group, Set(offsets.map(\.partition)))
        case .deleteGroup(let group): deleting = group
        default: break
        }
        for id in Set(before.groups.keys).union(after.groups.keys).sorted() {
            let old = before.groups[id]?.offsets ?? [:]
            let new = after.groups[id]?.offsets ?? [:]
            if old == new { continue }
            if id == deleting, new.isEmpty, after.groups[id] == nil { continue }
            if let changing, changing.group == id {
                let touched = Set(old.keys).union(new.keys).filter { old[$0] != new[$0] }
                if touched.isSubset(of: changing.partitions), touched.allSatisfy({ new[$0] != nil }) { continue }
            }
            problems.append("offsets of \(id) changed by \(command.map { "\($0)" } ?? "a topic change")")
        }
        return problems
    }
}

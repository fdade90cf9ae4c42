import BrokerModel
import ClusterState

/// Seeded random consumer-group command streams for property tests. Every failure message carries
/// the seed; `GroupSimulation(seed:)` with that seed replays the exact run (STYLE.md #18).
struct GroupSimulation {
    let seed: UInt64
    var random: SeededGenerator
    var state = GroupsState()
    var log: [GroupRecord] = []
    var partitionCounts: [TopicName: Int32] = [:]
    var limits = GroupLimits(membersPerGroupMax: 6, groupsMax: 3)
    var failures: [String] = []
    var nowMilliseconds: Int64 = 0

    static let groupIDs = ["g0", "g1", "g2", "g3"].map { GroupID($0)! }
    static let topicNames = ["t0", "t1", "t2"].map { TopicName($0)! }
    static let memberNames = (0..<8).map { MemberID("m\($0)")! }

    init(seed: UInt64) {
        self.seed = seed
        random = SeededGenerator(seed: seed)
        for topic in Self.topicNames { partitionCounts[topic] = Int32(Int.random(in: 0...6, using: &random)) }
    }

    var context: GroupContext { GroupContext(partitionCounts: partitionCounts, limits: limits) }

    mutating func int(_ range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &random) }
    mutating func chance(_ percent: Int) -> Bool { int(1...100) <= percent }
    mutating func pick<T>(_ items: [T]) -> T { items.randomElement(using: &random)! }

    /// Decides and applies; records a failure (with the seed) if a record does not survive the
    /// codec or `problem(applying:)` refuses it.
    @discardableResult
    mutating func run(_ command: GroupCommand) -> Result<(records: [GroupRecord], reply: GroupReply), GroupError> {
        let result = decideGroup(command, state: state, context: context)
        if case .success(let outcome) = result {
            for record in outcome.records {
                if (try? GroupCodec.decodeRecord(GroupCodec.encode(record), limits: limits)) != record {
                    failures.append("seed \(seed): codec changed \(record)")
                }
                if let problem = state.problem(applying: record) {
                    failures.append("seed \(seed): \(command) decided \(record), which cannot apply: \(problem)")
                    return result
                }
                state.apply(record)
                log.append(record)
            }
        }
        return result
    }

    /// Grows or shrinks a topic, then refreshes every group (as the runtime does when metadata changes).
    mutating func changeTopic() {
        let topic = pick(Self.topicNames)
        partitionCounts[topic] = Int32(int(0...8))
        for id in state.groups.keys.sorted() { run(.refreshAssignment(group: id)) }
    }

    mutating func randomTopics() -> [TopicName] {
        Self.topicNames.filter { _ in chance(50) } + (chance(5) ? [] : [pick(Self.topicNames)])
    }

    mutating func randomPartition() -> TopicPartition {
        TopicPartition(pick(Self.topicNames), PartitionID(Int32(int(-1...7))))
    }

    mutating func randomManual() -> [TopicPartition]? {
        guard chance(20) else { return nil }
        return (0..<int(0...4)).map { _ in randomPartition() }
    }

    mutating func existingMember(of group: GroupID) -> MemberID {
        let members = state.groups[group]?.members.keys.sorted() ?? []
        return members.isEmpty || chance(10) ? pick(Self.memberNames) : pick(members)
    }

    mutating func randomCommand() -> GroupCommand {
        let group = pick(Self.groupIDs)
        let current = state.groups[group]
        nowMilliseconds += Int64(int(0...100))
        switch int(0...99) {
        case 0..<30:
            let manual = randomManual()
            let assignor = current.map { chance(90) ? $0.assignor : pick(GroupAssignor.allCases) } ?? pick(GroupAssignor.allCases)
            return .join(
                group: group, memberName: chance(50) ? nil : pick(Self.memberNames), nonce: random.next(), clientID: pick(["", "app", "ü/x"]),
                topics: manual == nil ? randomTopics() : [], manualPartitions: manual, sessionTimeoutMilliseconds: 10_000,
                autoOffsetReset: pick(AutoOffsetReset.allCases), autoCommit: chance(50), assignor: assignor,
                properties: chance(20) ? ["format": "json"] : [:])
        case 30..<40: return .leave(group: group, member: existingMember(of: group))
        case 40..<48:
            return .expireMembers(group: group, members: (0..<int(0...3)).map { _ in existingMember(of: group) })
        case 48..<58:
            let manual = randomManual()
            return .updateSubscription(group: group, member: existingMember(of: group), topics: manual == nil ? randomTopics() : [], manualPartitions: manual)
        case 58..<80:
            let member: MemberID? = chance(30) ? nil : existingMember(of: group)
            let generation: Int32? =
                switch int(0...9) {
                case 0..<5: current?.generation
                case 5..<7: (current?.generation ?? 1) - 1
                default: nil
                }
            var partitions: [TopicPartition] = []
            if let member, let assigned = current?.assignment[member], !assigned.isEmpty, chance(70) {
                partitions = (0..<int(1...3)).map { _ in pick(assigned) }
            } else {
                partitions = (0..<int(0...3)).map { _ in randomPartition() }
            }
            let offsets = partitions.map { CommittedOffsetEntry(partition: $0, offset: Offset(Int64(int(-1...1_000)))) }
            return .commit(group: group, member: member, generation: generation, offsets: offsets, nowMilliseconds: nowMilliseconds)
        case 80..<86:
            let offsets = (0..<int(0...3)).map { _ in CommittedOffsetEntry(partition: randomPartition(), offset: Offset(Int64(int(0...1_000)))) }
            return .resetOffsets(group: group, offsets: offsets, nowMilliseconds: nowMilliseconds)
        case 86..<92: return .deleteGroup(group)
        default: return .refreshAssignment(group: group)
        }
    }
}

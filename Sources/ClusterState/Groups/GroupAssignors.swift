import BrokerModel

/// The total order on partitions used everywhere in groups: topic name, then partition number.
/// (`TopicPartition` lives in BrokerModel and is not `Comparable`; a retroactive conformance here
/// could clash with one added there later.)
enum PartitionOrder {
    static func precedes(_ a: TopicPartition, _ b: TopicPartition) -> Bool {
        a.topic != b.topic ? a.topic < b.topic : a.partition < b.partition
    }

    static func sorted<S: Sequence<TopicPartition>>(_ partitions: S) -> [TopicPartition] {
        partitions.sorted(by: precedes)
    }

    /// Sorted with no element twice (the shape of every replicated partition list).
    static func isStrictlySorted(_ partitions: [TopicPartition]) -> Bool {
        zip(partitions, partitions.dropFirst()).allSatisfy { precedes($0, $1) }
    }
}

/// Computes a group's whole assignment: the group's assignor over its dynamic members, plus each
/// manual member's own partitions. Pure and deterministic: members are visited in id order and
/// partitions in (topic, partition) order; no dictionary is iterated in its own order.
enum GroupAssignors {
    /// The assignment the group should have under `partitionCounts` (a topic missing = 0 partitions).
    /// Every partition of the union of the dynamic members' topics goes to exactly one dynamic member
    /// that subscribes to its topic; every list is sorted. Refused when that union holds more than
    /// `limits.assignmentPartitionsMax` partitions.
    static func assignment(
        for group: ConsumerGroup, partitionCounts: [TopicName: Int32], limits: GroupLimits
    ) throws(GroupError) -> [MemberID: [TopicPartition]] {
        let members = group.members.keys.sorted().map { group.members[$0]! }
        let dynamic = members.filter { $0.manualPartitions == nil }
        let topics = Set(dynamic.flatMap(\.topics)).sorted()
        var counts: [TopicName: Int] = [:]
        var total = 0
        for topic in topics {
            let count = max(0, Int(partitionCounts[topic] ?? 0))
            counts[topic] = count
            total += count
        }
        if total > limits.assignmentPartitionsMax {
            throw .limitExceeded(
                "group \(group.id) subscribes to \(total) partitions; at most \(limits.assignmentPartitionsMax) are allowed")
        }
        let input = Input(members: dynamic, topics: topics, counts: counts)
        var result: [MemberID: [TopicPartition]]
        switch group.assignor {
        case .range: result = range(input)
        case .roundrobin: result = roundRobin(input)
        case .sticky: result = sticky(input, previous: group.assignment)
        }
        for member in members {
            if let manual = member.manualPartitions {
                result[member.id] = manual
            } else {
                result[member.id] = PartitionOrder.sorted(result[member.id] ?? [])
            }
        }
        return result
    }

    /// Dynamic members sorted by id, the union of their topics sorted, and each topic's partition count.
    struct Input {
        let members: [GroupMember]
        let topics: [TopicName]
        let counts: [TopicName: Int]

        /// Members subscribing to `topic`, by id.
        func subscribers(of topic: TopicName) -> [MemberID] {
            members.filter { $0.topics.contains(topic) }.map(\.id)
        }

        var allPartitions: [TopicPartition] {
            topics.flatMap { topic in (0..<counts[topic]!).map { TopicPartition(topic, PartitionID(Int32($0))) } }
        }
    }

    /// Kafka's RangeAssignor: per topic, the subscribers in id order take consecutive ranges; the
    /// first `partitions % subscribers` of them take one extra.
    static func range(_ input: Input) -> [MemberID: [TopicPartition]] {
        var result: [MemberID: [TopicPartition]] = [:]
        for topic in input.topics {
            let subscribers = input.subscribers(of: topic)
            let count = input.counts[topic]!
            guard !subscribers.isEmpty else { continue }
            let share = count / subscribers.count
            let extra = count % subscribers.count
            var next = 0
            for (index, member) in subscribers.enumerated() {
                let size = share + (index < extra ? 1 : 0)
                result[member, default: []] += (next..<next + size).map { TopicPartition(topic, PartitionID(Int32($0))) }
                next += size
            }
        }
        return result
    }

    /// Kafka's RoundRobinAssignor: partitions in (topic, partition) order dealt over a ring of the
    /// members in id order; a member that does not subscribe to the partition's topic is skipped.
    static func roundRobin(_ input: Input) -> [MemberID: [TopicPartition]] {
        var result: [MemberID: [TopicPartition]] = [:]
        let ring = input.members
        guard !ring.isEmpty else { return result }
        var cursor = 0
        for partition in input.allPartitions {
            // Some member subscribes to every topic in the union, so this finds one within a lap.
            while !ring[cursor].topics.contains(partition.topic) { cursor = (cursor + 1) % ring.count }
            result[ring[cursor].id, default: []].append(partition)
            cursor = (cursor + 1) % ring.count
        }
        return result
    }

    /// Sticky: keep what is still valid, hand out what is unowned, then move as few partitions as
    /// needed until no partition's owner holds two or more partitions more than another member that
    /// subscribes to that partition's topic.
    ///
    /// 1. Each member keeps the partitions of its previous assignment that still exist and whose
    ///    topic it still subscribes to (members in id order; a partition listed twice goes to the
    ///    first).
    /// 2. Unowned partitions, in (topic, partition) order, go to the least loaded subscriber (ties by id).
    /// 3. While some owner A and subscriber B have load(A) ≥ load(B) + 2, one partition moves from
    ///    A to B: A the most loaded such owner, B its least loaded eligible peer (ties by id), the
    ///    partition the last of A's in (topic, partition) order. Each move lowers the sum of squared
    ///    loads, so this ends; after a join or a leave in a group with one subscription it moves
    ///    exactly the partitions the newcomer needs, or none.
    static func sticky(_ input: Input, previous: [MemberID: [TopicPartition]]) -> [MemberID: [TopicPartition]] {
        var owned: [MemberID: [TopicPartition]] = [:]
        var owner: [TopicPartition: MemberID] = [:]
        var subscribers: [TopicName: [MemberID]] = [:]
        for topic in input.topics { subscribers[topic] = input.subscribers(of: topic) }
        for member in input.members {
            owned[member.id] = []
            for partition in previous[member.id] ?? [] {
                guard member.topics.contains(partition.topic), partition.partition.rawValue >= 0,
                    Int(partition.partition.rawValue) < input.counts[partition.topic] ?? 0, owner[partition] == nil
                else { continue }
                owner[partition] = member.id
                owned[member.id]!.append(partition)
            }
        }
        func leastLoaded(_ candidates: [MemberID], excluding: MemberID? = nil) -> MemberID? {
            var best: MemberID?
            for candidate in candidates where candidate != excluding {
                if let current = best, owned[current]!.count <= owned[candidate]!.count { continue }
                best = candidate
            }
            return best
        }
        for partition in input.allPartitions where owner[partition] == nil {
            let target = leastLoaded(subscribers[partition.topic]!)!
            owner[partition] = target
            owned[target]!.append(partition)
        }
        while true {
            let byLoad = input.members.map(\.id).sorted { a, b in
                owned[a]!.count != owned[b]!.count ? owned[a]!.count > owned[b]!.count : a < b
            }
            var move: (partition: TopicPartition, from: MemberID, to: MemberID)?
            search: for from in byLoad {
                let load = owned[from]!.count
                var peers: [TopicName: MemberID?] = [:]
                for partition in PartitionOrder.sorted(owned[from]!).reversed() {
                    if peers[partition.topic] == nil { peers[partition.topic] = leastLoaded(subscribers[partition.topic]!, excluding: from) }
                    if let to = peers[partition.topic]!, owned[to]!.count + 2 <= load {
                        move = (partition, from, to)
                        break search
                    }
                }
            }
            guard let move else { break }
            owned[move.from]!.removeAll { $0 == move.partition }
            owned[move.to]!.append(move.partition)
        }
        return owned
    }
}

import BrokerModel

/// The only randomness in ClusterState; callers pass the seed, so a decision is a pure function of
/// (command, state, seed).
public typealias SeededGenerator = SplitMix64

/// Replica placement: pure functions over brokers and current load. Nothing here reads a dictionary
/// in iteration order; every choice has a total order (load, then ring distance or id) so the same
/// inputs always give the same answer.
enum Placement {
    /// The failure domain of a broker. A broker without a rack is its own domain: we cannot know what
    /// it shares with others, so spreading over "racks" then means spreading over brokers.
    static func domain(_ broker: BrokerInfo) -> String {
        if let rack = broker.rack { return "rack:" + rack }
        return "broker:\(broker.id)"
    }

    static func distinctDomains(_ replicas: [NodeID], brokers: [NodeID: BrokerInfo]) -> Int {
        Set(replicas.map { id in brokers[id].map(domain) ?? "broker:\(id)" }).count
    }

    /// Places `count` new partitions with `replicationFactor` replicas each on `eligible` brokers.
    ///
    /// - Preferred leaders (first replicas) go round-robin over a ring of the brokers — Kafka's scheme —
    ///   so within one call leader counts differ by at most one. The ring is ordered by current
    ///   leaderships, then replicas, then id from a seeded start, so the leftover partial round lands
    ///   on the least-loaded brokers: this spreads leaders across topics too, and towards a newly
    ///   added broker.
    /// - Each follower is the candidate that (1) adds a failure domain not yet used by this partition,
    ///   (2) holds the fewest replicas so far, (3) shares the fewest partitions of this call with the
    ///   replicas already chosen, (4) is nearest after the leader on the ring, rotated one step more
    ///   each time the leader ring wraps (Kafka's replica shift). Rule (1) alone makes the spread
    ///   maximal: while an unused domain exists, one of its brokers is a candidate, so a partition
    ///   covers min(replicationFactor, domains) domains.
    ///
    /// `replicaCounts` and `leaderCounts` carry the cluster's current load in and the new load out.
    static func place(
        count: Int, replicationFactor: Int, eligible: [BrokerInfo], replicaCounts: inout [NodeID: Int],
        leaderCounts: inout [NodeID: Int], seed: UInt64
    ) -> [[NodeID]] {
        precondition(replicationFactor >= 1 && replicationFactor <= eligible.count, "placement needs enough brokers")
        let n = eligible.count
        var generator = SeededGenerator(seed: seed)
        let tieBreak = Int(generator.next() % UInt64(n))
        // The ring: least-leading brokers first, then least-loaded, then by id rotated by the seed
        // (Kafka's random per-topic start). Every full round of the ring gives each broker one
        // leadership; the last, partial round therefore goes to the brokers that need it most.
        let byID = eligible.sorted { $0.id < $1.id }
        let ring = byID.indices.map { index in
            (broker: byID[index], key: (leaderCounts[byID[index].id, default: 0], replicaCounts[byID[index].id, default: 0], (index - tieBreak + n) % n))
        }.sorted { $0.key < $1.key }.map(\.broker)
        let start = 0
        // Leaders are fixed by the ring, so count their load first: followers then fill the brokers
        // that lead least, and the totals come out even rather than skewed toward early leaders.
        for index in 0..<count {
            let leader = ring[(start + index) % n].id
            replicaCounts[leader, default: 0] += 1
            leaderCounts[leader, default: 0] += 1
        }
        var result: [[NodeID]] = []
        result.reserveCapacity(count)
        // How many partitions of this call each pair of brokers shares: among equally loaded
        // candidates, the one sharing least with the replicas already chosen wins, so that when a
        // broker fails its partitions' new leaders and catch-up traffic spread over many brokers.
        var pairs: [Pair: Int] = [:]
        for index in 0..<count {
            let leaderIndex = (start + index) % n
            // Kafka's replica shift: each time the leader ring wraps, ties among followers rotate, so
            // the same replica sets do not repeat and a failed broker's followers spread wider.
            let shift = n > 1 ? (index / n) % (n - 1) : 0
            var chosen = [ring[leaderIndex].id]
            var usedDomains: Set<String> = [domain(ring[leaderIndex])]
            while chosen.count < replicationFactor {
                var best: (key: (Int, Int, Int, Int), index: Int)? = nil
                for offset in 1..<n {
                    let candidateIndex = (leaderIndex + offset) % n
                    let candidate = ring[candidateIndex]
                    if chosen.contains(candidate.id) { continue }
                    let rotated = (offset - 1 + n - 1 - shift) % (n - 1)
                    let shared = chosen.reduce(0) { $0 + pairs[Pair($1, candidate.id), default: 0] }
                    let key = (usedDomains.contains(domain(candidate)) ? 1 : 0, replicaCounts[candidate.id, default: 0], shared, rotated)
                    if best == nil || key < best!.key { best = (key, candidateIndex) }
                }
                let picked = ring[best!.index]
                chosen.append(picked.id)
                usedDomains.insert(domain(picked))
            }
            for replica in chosen.dropFirst() { replicaCounts[replica, default: 0] += 1 }
            for i in chosen.indices { for j in chosen.indices where i < j { pairs[Pair(chosen[i], chosen[j]), default: 0] += 1 } }
            result.append(chosen)
        }
        return result
    }

    /// An unordered pair of brokers.
    struct Pair: Hashable {
        let low: NodeID
        let high: NodeID
        init(_ a: NodeID, _ b: NodeID) {
            low = min(a, b)
            high = max(a, b)
        }
    }

    /// The broker that should take `replaced`'s place in `target`: among eligible brokers not already
    /// in it, the one that keeps the most failure domains, then holds the fewest replicas, then has
    /// the lowest id. Nil when every eligible broker already holds a replica of the partition.
    static func replacement(
        for replaced: NodeID, in target: [NodeID], eligible: [BrokerInfo], brokers: [NodeID: BrokerInfo],
        replicaCounts: [NodeID: Int]
    ) -> NodeID? {
        let others = target.filter { $0 != replaced }
        var best: (key: (Int, Int, Int32), id: NodeID)? = nil
        for candidate in eligible where !target.contains(candidate.id) {
            let domains = distinctDomains(others + [candidate.id], brokers: brokers)
            let key = (-domains, replicaCounts[candidate.id, default: 0], candidate.id.rawValue)
            if best == nil || key < best!.key { best = (key, candidate.id) }
        }
        return best?.id
    }
}

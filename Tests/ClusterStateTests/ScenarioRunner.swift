import BrokerModel
import ClusterState
import Foundation

/// Runs a scenario script (STYLE.md #17): one command per line, `#` comments and blank lines kept.
/// Each command's outcome (records, error, or query answer) is written indented under it. After every
/// command the runner also checks what must always hold: records round-trip through the codec and
/// apply without trapping; at the end, replaying every record from an empty state and decoding the
/// snapshot both give the final state.
///
/// Commands:
///
///     seed N                                   tie-break seed for later commands (default 0)
///     register ID [rack=R] [public=A] [internal=A]
///     fence ID | unfence ID | unregister ID | decommission ID
///     create TOPIC partitions=N [rf=N] [config.KEY=VALUE ...]
///     delete TOPIC
///     alter TOPIC [set.KEY=VALUE ...] [remove=KEY,KEY]
///     grow TOPIC N
///     reassign TOPIC P=ID,ID,... [P=...]
///     complete TOPIC P | cancel TOPIC P
///     balance
///     leaders alive=ID,... current=TOPIC-P:ID,...   preferred-leader transfers (a query)
///     state                                    the whole state
///     load                                     replicas and preferred leaders per broker
struct ScenarioRunner {
    var state = MetadataState()
    var log: [MetadataRecord] = []
    var seed: UInt64 = 0
    var output: [String] = []
    var failures: [String] = []

    mutating func run(script: String) -> String {
        output += ScenarioFiles.transcript(of: script) { execute($0) }
        var replayed = MetadataState()
        for record in log { replayed.apply(record) }
        if replayed != state { failures.append("replaying the \(log.count) records does not reproduce the state") }
        do {
            if try MetadataCodec.decodeSnapshot(MetadataCodec.encodeSnapshot(state)) != state {
                failures.append("snapshot round trip changed the state")
            }
        } catch { failures.append("snapshot does not decode: \(error)") }
        while output.last == "" { output.removeLast() }
        return output.joined(separator: "\n") + "\n"
    }

    mutating func execute(_ words: [String]) -> [String] {
        let verb = words[0]
        let args = Array(words.dropFirst())
        let command: MetadataCommand
        switch verb {
        case "seed":
            seed = UInt64(args[0])!
            return []
        case "state": return render(state)
        case "load": return renderLoad(state)
        case "leaders":
            let options = keyed(args)
            let alive = Set((options["alive"] ?? "").split(separator: ",").map { NodeID(Int32($0)!) })
            var current: [TopicPartition: NodeID] = [:]
            for entry in (options["current"] ?? "").split(separator: ",") {
                let parts = entry.split(separator: ":")
                let dash = parts[0].lastIndex(of: "-")!
                let topic = TopicName(String(parts[0][..<dash]))!
                let partition = PartitionID(Int32(parts[0][parts[0].index(after: dash)...])!)
                current[TopicPartition(topic, partition)] = NodeID(Int32(parts[1])!)
            }
            let transfers = preferredLeaderTransfers(state: state, aliveBrokers: alive, currentLeaders: current)
            return transfers.isEmpty ? ["(no transfers)"] : transfers.map { "transfer \($0)" }
        case "register":
            let options = keyed(args.dropFirst())
            let id = Int32(args[0])!
            command = .registerBroker(
                id: NodeID(id), rack: options["rack"], publicAddress: options["public"] ?? "broker\(id):9092",
                internalAddress: options["internal"] ?? "broker\(id):9093")
        case "fence": command = .fenceBroker(node(args[0]))
        case "unfence": command = .unfenceBroker(node(args[0]))
        case "unregister": command = .unregisterBroker(node(args[0]))
        case "decommission": command = .decommissionBroker(node(args[0]))
        case "create":
            let options = keyed(args.dropFirst())
            var configs: [String: String] = [:]
            for (key, value) in options where key.hasPrefix("config.") { configs[String(key.dropFirst(7))] = value }
            command = .createTopic(
                name: topic(args[0]), partitions: Int32(options["partitions"]!)!, replicationFactor: options["rf"].map { Int($0)! },
                configs: configs)
        case "delete": command = .deleteTopic(topic(args[0]))
        case "alter":
            let options = keyed(args.dropFirst())
            var set: [String: String] = [:]
            for (key, value) in options where key.hasPrefix("set.") { set[String(key.dropFirst(4))] = value }
            command = .alterConfigs(topic: topic(args[0]), set: set, remove: (options["remove"] ?? "").split(separator: ",").map(String.init))
        case "grow": command = .createPartitions(topic: topic(args[0]), totalCount: Int32(args[1])!)
        case "reassign":
            var targets: [PartitionID: [NodeID]] = [:]
            for (key, value) in keyed(args.dropFirst()) {
                targets[PartitionID(Int32(key)!)] = value.split(separator: ",").map { NodeID(Int32($0)!) }
            }
            command = .reassignPartitions(topic: topic(args[0]), targets: targets)
        case "complete": command = .completeReassignment(topic: topic(args[0]), partition: PartitionID(Int32(args[1])!))
        case "cancel": command = .cancelReassignment(topic: topic(args[0]), partition: PartitionID(Int32(args[1])!))
        case "balance": command = .balanceReplicas
        default:
            failures.append("unknown scenario command \(verb)")
            return ["?? unknown command"]
        }
        switch decide(command, state: state, seed: seed) {
        case .failure(let error):
            return ["error: \(error)"]
        case .success(let records):
            for record in records {
                do {
                    if try MetadataCodec.decodeRecord(MetadataCodec.encode(record)) != record {
                        failures.append("record changed in a codec round trip: \(record)")
                    }
                } catch { failures.append("record does not decode: \(record): \(error)") }
                state.apply(record)
                log.append(record)
            }
            return records.isEmpty ? ["(no change)"] : records.map(\.description)
        }
    }

    func node(_ text: String) -> NodeID { NodeID(Int32(text)!) }
    func topic(_ text: String) -> TopicName { TopicName(text)! }
    func keyed<S: Sequence<String>>(_ words: S) -> [String: String] {
        var result: [String: String] = [:]
        for word in words {
            let parts = word.split(separator: "=", maxSplits: 1)
            result[String(parts[0])] = parts.count > 1 ? String(parts[1]) : ""
        }
        return result
    }
}

func render(_ state: MetadataState) -> [String] {
    var lines = ["offset=\(state.lastAppliedOffset) next-topic-id=\(state.nextTopicID) next-epoch=\(state.nextRegistrationEpoch)"]
    for b in state.sortedBrokers {
        lines.append("broker \(b.id) rack=\(b.rack ?? "-") \(b.status) epoch=\(b.registrationEpoch)")
    }
    for t in state.sortedTopics {
        let configs = t.configs.keys.sorted().map { "\($0)=\(t.configs[$0]!)" }.joined(separator: ",")
        lines.append("topic \(t.name) id=\(t.id) rf=\(t.replicationFactor) min-isr=\(t.minInSyncReplicas) configs={\(configs)}")
        for p in t.partitions { lines.append("  \(p.partition): \(p.rendered)") }
    }
    return lines
}

func renderLoad(_ state: MetadataState) -> [String] {
    let replicas = state.replicaCounts()
    let leaders = state.preferredLeaderCounts()
    return state.sortedBrokers.map { b in
        "broker \(b.id) rack=\(b.rack ?? "-") \(b.status): replicas=\(replicas[b.id, default: 0]) preferred-leaders=\(leaders[b.id, default: 0])"
    }
}

import BrokerModel
import ClusterState
import Foundation

/// Runs a consumer-group scenario script (`Scenarios/groups-*.txt`, STYLE.md #17): one command per
/// line, `#` comments and blank lines kept. Each command's records and reply (or error) are written
/// indented under it. After every command the runner checks what must always hold: each record
/// round-trips through ``GroupCodec``, `problem(applying:)` accepts it, and it applies; at the end,
/// replaying every record from an empty state gives the final state.
///
/// Commands:
///
///     topic NAME N                       partition count in the context (0 = the topic is gone)
///     limit KEY=N ...                    members groups partitions topics offsets client metadata
///                                        properties property-bytes
///     join GROUP [name=M] [nonce=N] [client=C] [topics=A,B | manual=A-0,B-1] [session=MS]
///          [reset=earliest|latest|none] [auto-commit=BOOL] [assignor=range|roundrobin|sticky] [prop.K=V ...]
///     leave GROUP MEMBER
///     expire GROUP M1,M2,...
///     subscribe GROUP MEMBER topics=A,B | manual=A-0,...
///     commit GROUP [member=M] [generation=G] [at=MS] TOPIC-P=OFFSET[:METADATA] ...
///     reset GROUP [at=MS] TOPIC-P=OFFSET ...
///     delete GROUP | refresh GROUP
///     state                              every group
///     failover                           a new coordinator replays every record so far: equal?
///
/// A join without `nonce=` uses the number of joins so far, so generated ids are stable.
struct GroupScenarioRunner {
    var state = GroupsState()
    var log: [GroupRecord] = []
    var partitionCounts: [TopicName: Int32] = [:]
    var limits = GroupLimits.defaults
    var joins: UInt64 = 0
    var output: [String] = []
    var failures: [String] = []

    mutating func run(script: String) -> String {
        output += ScenarioFiles.transcript(of: script) { execute($0) }
        if replayed() != state { failures.append("replaying the \(log.count) records does not reproduce the state") }
        while output.last == "" { output.removeLast() }
        return output.joined(separator: "\n") + "\n"
    }

    func replayed() -> GroupsState {
        var fresh = GroupsState()
        for record in log { fresh.apply(record) }
        return fresh
    }

    mutating func execute(_ words: [String]) -> [String] {
        let verb = words[0]
        let args = Array(words.dropFirst())
        let command: GroupCommand
        switch verb {
        case "topic":
            partitionCounts[TopicName(args[0])!] = Int32(args[1])! == 0 ? nil : Int32(args[1])!
            return []
        case "limit":
            for (key, value) in keyed(args) { setLimit(key, Int(value)!) }
            return []
        case "state": return renderGroups(state)
        case "failover":
            let fresh = replayed()
            if fresh != state { failures.append("failover: the replayed state differs") }
            return ["replayed \(log.count) records: " + (fresh == state ? "equal" : "DIFFERENT")]
        case "join":
            let options = keyed(args.dropFirst())
            joins += 1
            var properties: [String: String] = [:]
            for (key, value) in options where key.hasPrefix("prop.") { properties[String(key.dropFirst(5))] = value }
            command = .join(
                group: group(args[0]), memberName: options["name"].map { MemberID($0)! }, nonce: options["nonce"].map { UInt64($0)! } ?? joins,
                clientID: options["client"] ?? "", topics: topics(options["topics"]), manualPartitions: options["manual"].map(partitions),
                sessionTimeoutMilliseconds: Int64(options["session"] ?? "10000")!,
                autoOffsetReset: AutoOffsetReset(rawValue: options["reset"] ?? "latest")!, autoCommit: options["auto-commit"] == "true",
                assignor: GroupAssignor(rawValue: options["assignor"] ?? "sticky")!, properties: properties)
        case "leave": command = .leave(group: group(args[0]), member: MemberID(args[1])!)
        case "expire": command = .expireMembers(group: group(args[0]), members: args[1].split(separator: ",").map { MemberID(String($0))! })
        case "subscribe":
            let options = keyed(args.dropFirst(2))
            command = .updateSubscription(
                group: group(args[0]), member: MemberID(args[1])!, topics: topics(options["topics"]), manualPartitions: options["manual"].map(partitions))
        case "commit", "reset":
            let options = keyed(args.dropFirst())
            var entries: [CommittedOffsetEntry] = []
            // In script order, repeats kept: the core must see (and refuse) a partition given twice.
            for word in args.dropFirst() {
                let pair = word.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
                guard pair.count == 2, pair[0].contains("-") else { continue }
                let (key, value) = (pair[0], pair[1])
                let parts = value.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
                entries.append(CommittedOffsetEntry(partition: partition(key), offset: Offset(Int64(parts[0])!), metadata: parts.count > 1 ? String(parts[1]) : ""))
            }
            let now = Int64(options["at"] ?? "1000")!
            if verb == "reset" {
                command = .resetOffsets(group: group(args[0]), offsets: entries, nowMilliseconds: now)
            } else {
                command = .commit(
                    group: group(args[0]), member: options["member"].map { MemberID($0)! }, generation: options["generation"].map { Int32($0)! },
                    offsets: entries, nowMilliseconds: now)
            }
        case "delete": command = .deleteGroup(group(args[0]))
        case "refresh": command = .refreshAssignment(group: group(args[0]))
        default:
            failures.append("unknown scenario command \(verb)")
            return ["?? unknown command"]
        }
        switch decideGroup(command, state: state, context: GroupContext(partitionCounts: partitionCounts, limits: limits)) {
        case .failure(let error):
            return ["error \(errorKind(error)): \(error)"]
        case .success(let outcome):
            for record in outcome.records {
                do {
                    if try GroupCodec.decodeRecord(GroupCodec.encode(record), limits: limits) != record {
                        failures.append("record changed in a codec round trip: \(record)")
                    }
                } catch { failures.append("record does not decode: \(record): \(error)") }
                if let problem = state.problem(applying: record) {
                    failures.append("decided record cannot apply: \(record): \(problem)")
                    continue
                }
                state.apply(record)
                log.append(record)
            }
            return outcome.records.map(\.description) + ["reply: \(outcome.reply)"]
        }
    }

    mutating func setLimit(_ key: String, _ value: Int) {
        switch key {
        case "members": limits.membersPerGroupMax = value
        case "groups": limits.groupsMax = value
        case "partitions": limits.assignmentPartitionsMax = value
        case "topics": limits.topicsPerMemberMax = value
        case "offsets": limits.commitOffsetsMax = value
        case "client": limits.clientIDBytesMax = value
        case "metadata": limits.metadataBytesMax = value
        case "properties": limits.propertiesMax = value
        case "property-bytes": limits.propertyBytesMax = value
        default: failures.append("unknown limit \(key)")
        }
    }

    func group(_ text: String) -> GroupID { GroupID(text)! }
    func topics(_ text: String?) -> [TopicName] { (text ?? "").split(separator: ",").map { TopicName(String($0))! } }
    func partitions(_ text: String) -> [TopicPartition] { text.split(separator: ",").map { partition(String($0)) } }
    func partition(_ text: String) -> TopicPartition {
        let dash = text.lastIndex(of: "-")!
        return TopicPartition(TopicName(String(text[..<dash]))!, PartitionID(Int32(text[text.index(after: dash)...])!))
    }
    func keyed<S: Sequence<String>>(_ words: S) -> [String: String] {
        var result: [String: String] = [:]
        for word in words {
            let parts = word.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            result[String(parts[0])] = parts.count > 1 ? String(parts[1]) : ""
        }
        return result
    }
}

/// The error's case name (what the HTTP layer maps to a status).
func errorKind(_ error: GroupError) -> String {
    switch error {
    case .unknownGroup: "unknownGroup(404)"
    case .unknownMember: "unknownMember(404)"
    case .memberExists: "memberExists(409)"
    case .staleGeneration: "staleGeneration(409)"
    case .notAssigned: "notAssigned(409)"
    case .groupNotEmpty: "groupNotEmpty(409)"
    case .groupHasMembers: "groupHasMembers(409)"
    case .inconsistentAssignor: "inconsistentAssignor(409)"
    case .unknownTopicPartition: "unknownTopicPartition(404)"
    case .invalid: "invalid(400)"
    case .limitExceeded: "limitExceeded(413)"
    }
}

func renderGroups(_ state: GroupsState) -> [String] {
    if state.groups.isEmpty { return ["(no groups)"] }
    var lines: [String] = []
    for id in state.groups.keys.sorted() {
        let group = state.groups[id]!
        lines.append("group \(id) \(group.stateName) generation=\(group.generation) assignor=\(group.assignor.rawValue) next-member=\(group.nextMemberNumber)")
        for member in group.members.keys.sorted() {
            lines.append("  member \(group.members[member]!.rendered)")
            lines.append("    assigned \(renderPartitionList(group.assignment[member] ?? []))")
        }
        let offsets = group.offsets.keys.sorted { $0.topic != $1.topic ? $0.topic < $1.topic : $0.partition < $1.partition }
        for partition in offsets {
            let offset = group.offsets[partition]!
            lines.append("  offset \(partition)=\(offset.offset) metadata=\"\(offset.metadata)\" at=\(offset.commitMilliseconds)")
        }
    }
    return lines
}

func renderPartitionList(_ partitions: [TopicPartition]) -> String {
    "[" + partitions.map(\.description).joined(separator: ",") + "]"
}

import ArgumentParser
import BrokerClient
import BrokerHTTP
import Foundation

struct GroupCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "group", abstract: "List, describe, reset and delete consumer groups.",
        subcommands: [List.self, Describe.self, Reset.self, Delete.self])

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Every group with its state and member count.")
        @OptionGroup var options: ClientOptions
        func run() throws { try CLI.call(try options.client(), "GET", "/v1/groups") }
    }

    struct Describe: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Members, assignment, committed offsets and lag.")
        @OptionGroup var options: ClientOptions
        @Argument var group: String
        func run() throws { try CLI.call(try options.client(), "GET", "/v1/groups/\(CLI.escape(group))") }
    }

    struct Reset: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Move a group's offsets (only while it has no members).")
        @OptionGroup var options: ClientOptions
        @Argument var group: String
        @Option(name: .shortAndLong, help: "Topic whose partitions are reset (repeatable).") var topic: [String]
        @Option(help: "earliest or latest.") var to: String?
        @Option(help: "Milliseconds since the epoch: the first offset at or after it.") var timestamp: Int64?
        func run() throws {
            guard !topic.isEmpty else { throw ValidationError("give at least one --topic") }
            guard (to == nil) != (timestamp == nil) else { throw ValidationError("give --to or --timestamp") }
            var w = JSONWriter()
            w.raw("{\"topics\":[")
            for (i, t) in topic.enumerated() {
                if i > 0 { w.raw(",") }
                w.string(t)
            }
            w.raw("]")
            if let to {
                w.raw(",\"to\":")
                w.string(to)
            }
            if let timestamp {
                w.raw(",\"timestamp\":")
                w.int(timestamp)
            }
            w.raw("}")
            try CLI.call(try options.client(), "POST", "/v1/groups/\(CLI.escape(group))/offsets/reset", json: String(decoding: w.bytes, as: UTF8.self))
        }
    }

    struct Delete: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a group without members, with its offsets.")
        @OptionGroup var options: ClientOptions
        @Argument var group: String
        func run() throws { try CLI.call(try options.client(), "DELETE", "/v1/groups/\(CLI.escape(group))") }
    }
}

/// `petrel consume TOPIC --group G`: joins, long-polls with auto-commit, prints, leaves at the end.
struct GroupConsumer {
    let client: HTTPClient
    let group: String
    let topic: String
    let offset: String
    let max: Int?
    let follow: Bool
    let json: Bool

    func run() throws {
        client.timeoutMilliseconds = 60_000
        let reset = offset == "latest" ? "latest" : "earliest"
        var join = JSONWriter()
        join.raw("{\"topics\":[")
        join.string(topic)
        join.raw("],\"client_id\":\"petrel-cli\",\"auto_offset_reset\":")
        join.string(reset)
        join.raw("}")
        let joined = try CLI.call(client, "POST", "/v1/groups/\(CLI.escape(group))/members", json: String(decoding: join.bytes, as: UTF8.self), print: false)
        guard let member = (try? JSONParser.parse(joined.body))?["member_id"]?.stringValue else { throw CLIError("unexpected answer to the join: \(joined.text)") }
        let base = "/v1/groups/\(CLI.escape(group))/members/\(CLI.escape(member))"
        defer {
            // The last poll's records are committed by the leave (auto-commit).
            _ = try? client.request("DELETE", base)
        }
        var printed = 0
        var idle = 0
        while max.map({ printed < $0 }) ?? true {
            let limit = Swift.min(max.map { $0 - printed } ?? 5000, 5000)
            let response = try CLI.call(client, "GET", "\(base)/records?max_records=\(limit)&wait_ms=\(follow ? 30_000 : 1_000)", print: false)
            guard let records = (try? JSONParser.parse(response.body))?["records"]?.arrayValue else { throw CLIError("unexpected answer from the broker: \(response.text)") }
            var out: [UInt8] = []
            for record in records {
                if json {
                    out += response.body[record.range]
                } else {
                    out += Array((record["value"]?.stringValue ?? record["value_base64"]?.stringValue ?? "null").utf8)
                }
                out.append(0x0A)
            }
            FileHandle.standardOutput.write(Data(out))
            printed += records.count
            // Without --follow, stop after two empty polls (a rebalance can make one poll empty).
            idle = records.isEmpty ? idle + 1 : 0
            if idle >= 2 && !follow { break }
        }
    }
}

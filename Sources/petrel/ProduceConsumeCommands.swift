import ArgumentParser
import BrokerClient
import BrokerHTTP
import Foundation

struct ProduceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "produce", abstract: "Produce records: the VALUE arguments, or one record per line of standard input.",
        discussion: "Lines from standard input are sent in batches of --batch records. Prints partition and offset per record.")
    @OptionGroup var options: ClientOptions
    @Argument var topic: String
    @Argument(help: "Record values; without any, lines of standard input.") var values: [String] = []
    @Option(name: .shortAndLong, help: "Record key (murmur2 picks the partition).") var key: String?
    @Option(name: .shortAndLong, help: "Explicit partition.") var partition: Int32?
    @Option(help: "0, 1 or all.") var acks = "all"
    @Option(name: [.customShort("H"), .customLong("header")], help: "A header as name=value (repeatable).") var headers: [String] = []
    @Option(help: "Records per request when reading standard input.") var batch = 1000

    func run() throws {
        guard batch >= 1 else { throw ValidationError("--batch must be at least 1") }
        let client = try options.client()
        var pending: [String] = []
        func send() throws {
            guard !pending.isEmpty else { return }
            var body = JSONWriter()
            for value in pending {
                body.raw("{\"value\":")
                body.string(value)
                if let key {
                    body.raw(",\"key\":")
                    body.string(key)
                }
                if let partition {
                    body.raw(",\"partition\":")
                    body.int(Int(partition))
                }
                if !headers.isEmpty {
                    body.raw(",\"headers\":")
                    try configObject(headers, into: &body)
                }
                body.raw("}\n")
            }
            pending.removeAll()
            let response: HTTPClient.Response
            do {
                response = try client.request("POST", "/v1/topics/\(CLI.escape(topic))/records?acks=\(CLI.escape(acks))",
                                              headers: [("Content-Type", "application/x-ndjson")], body: body.bytes)
            } catch { throw CLIError("cannot reach the broker: \(error.message)") }
            guard (200..<300).contains(response.status) else {
                FileHandle.standardError.write(Data("petrel: \(response.status): \(response.text)\n".utf8))
                throw ExitCode(1)
            }
            var out = ""
            for placement in (try? JSONParser.parse(response.body))?["offsets"]?.arrayValue ?? [] {
                let p = placement["partition"]?.int64Value.map(String.init) ?? "?"
                let o = placement["offset"]?.int64Value.map(String.init) ?? "unknown"
                out += "partition \(p) offset \(o)\n"
            }
            FileHandle.standardOutput.write(Data(out.utf8))
        }
        if values.isEmpty {
            while let line = readLine(strippingNewline: true) {
                pending.append(line)
                if pending.count >= batch { try send() }
            }
        } else {
            pending = values
        }
        try send()
    }
}

struct ConsumeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "consume", abstract: "Read records of one partition and print one per line.",
        discussion: "Prints each value; --json prints each record as a JSON line (offset, timestamp, key, value, headers).")
    @OptionGroup var options: ClientOptions
    @Argument var topic: String
    @Option(name: .shortAndLong, help: "Partition.") var partition: Int32 = 0
    @Option(name: .shortAndLong, help: "earliest, latest or an offset.") var offset = "earliest"
    @Option(name: [.customShort("n"), .customLong("max")], help: "Stop after this many records.") var max: Int?
    @Flag(name: .shortAndLong, help: "Keep waiting for new records (long-poll) instead of stopping at the end.") var follow = false
    @Flag(help: "Print whole records as JSON lines.") var json = false
    @Option(name: .shortAndLong, help: "Consume as a member of this group (all partitions the group assigns; commits as it goes).") var group: String?

    func run() throws {
        let client = try options.client()
        if let group {
            return try GroupConsumer(client: client, group: group, topic: topic, offset: offset, max: max, follow: follow, json: json).run()
        }
        client.timeoutMilliseconds = 60_000
        var next = offset
        var printed = 0
        while max.map({ printed < $0 }) ?? true {
            let limit = Swift.min(max.map { $0 - printed } ?? 5000, 5000)
            let wait = follow ? 30_000 : 0
            let path = "/v1/topics/\(CLI.escape(topic))/partitions/\(partition)/records?offset=\(CLI.escape(next))&max_records=\(limit)&wait_ms=\(wait)"
            let response = try CLI.call(client, "GET", path, print: false)
            guard let root = try? JSONParser.parse(response.body), let records = root["records"]?.arrayValue,
                let nextOffset = root["next_offset"]?.int64Value
            else { throw CLIError("unexpected answer from the broker: \(response.text)") }
            var out: [UInt8] = []
            for record in records {
                if json {
                    out += response.body[record.range]
                } else if let text = record["value"]?.stringValue {
                    out += Array(text.utf8)
                } else if let b64 = record["value_base64"]?.stringValue {
                    out += Array(b64.utf8)
                } else {
                    out += Array("null".utf8)
                }
                out.append(0x0A)
            }
            FileHandle.standardOutput.write(Data(out))
            printed += records.count
            next = String(nextOffset)
            if records.isEmpty && !follow { break }
        }
    }
}

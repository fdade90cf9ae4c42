import ArgumentParser
import BrokerHTTP
import Foundation

struct ClusterCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster", abstract: "Show the cluster (brokers, controller, version); move replicas.",
        subcommands: [Show.self, Rebalance.self, Reassign.self, Decommission.self, Unregister.self], defaultSubcommand: Show.self)

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Brokers (alive, rack), controller, version.")
        @OptionGroup var options: ClientOptions
        func run() throws { try CLI.call(try options.client(), "GET", "/v1/cluster") }
    }

    struct Rebalance: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Even out replicas over the alive brokers (after adding one).")
        @OptionGroup var options: ClientOptions
        func run() throws { try CLI.call(try options.client(), "POST", "/v1/cluster/rebalance") }
    }

    struct Reassign: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Move one partition's replicas (the first is the preferred leader).")
        @OptionGroup var options: ClientOptions
        @Argument var topic: String
        @Argument var partition: Int32
        @Option(help: "Broker ids, comma-separated, e.g. 4,2,3.") var replicas: String
        func run() throws {
            let ids = replicas.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            guard !ids.isEmpty, ids.allSatisfy({ Int32($0) != nil }) else { throw ValidationError("--replicas must be broker ids, comma-separated") }
            try CLI.call(try options.client(), "PUT", "/v1/topics/\(CLI.escape(topic))/partitions/\(partition)/replicas",
                         json: "{\"replicas\":[\(ids.joined(separator: ","))]}")
        }
    }

    struct Decommission: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Move every replica off a broker before it leaves.")
        @OptionGroup var options: ClientOptions
        @Argument var broker: Int32
        func run() throws { try CLI.call(try options.client(), "POST", "/v1/brokers/\(broker)/decommission") }
    }

    struct Unregister: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Forget a broker that hosts no replicas.")
        @OptionGroup var options: ClientOptions
        @Argument var broker: Int32
        func run() throws { try CLI.call(try options.client(), "DELETE", "/v1/brokers/\(broker)") }
    }
}

struct TopicCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "topic", abstract: "Create, list, describe, change and delete topics.",
        subcommands: [List.self, Create.self, Describe.self, Alter.self, Delete.self])

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List topics.")
        @OptionGroup var options: ClientOptions
        func run() throws { try CLI.call(try options.client(), "GET", "/v1/topics") }
    }

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a topic.")
        @OptionGroup var options: ClientOptions
        @Argument var name: String
        @Option(name: .shortAndLong, help: "Partitions.") var partitions: Int32 = 1
        @Option(name: [.customShort("r"), .customLong("replication-factor")], help: "Replicas per partition.") var replicationFactor: Int?
        @Option(name: [.customShort("c"), .customLong("config")], help: "A topic config as name=value (repeatable).") var configs: [String] = []
        func run() throws {
            var w = JSONWriter()
            w.raw("{\"name\":")
            w.string(name)
            w.raw(",\"partitions\":")
            w.int(Int(partitions))
            if let replicationFactor {
                w.raw(",\"replication_factor\":")
                w.int(replicationFactor)
            }
            w.raw(",\"configs\":")
            try configObject(configs, into: &w)
            w.raw("}")
            try CLI.call(try options.client(), "POST", "/v1/topics", json: String(decoding: w.bytes, as: UTF8.self))
        }
    }

    struct Describe: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Describe a topic: partitions, offsets, configs.")
        @OptionGroup var options: ClientOptions
        @Argument var name: String
        func run() throws { try CLI.call(try options.client(), "GET", "/v1/topics/\(CLI.escape(name))") }
    }

    struct Alter: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Change configs or grow the partition count.")
        @OptionGroup var options: ClientOptions
        @Argument var name: String
        @Option(name: .shortAndLong, help: "New (larger) partition count.") var partitions: Int32?
        @Option(name: [.customShort("c"), .customLong("config")], help: "A topic config as name=value (repeatable).") var configs: [String] = []
        func run() throws {
            var w = JSONWriter()
            w.raw("{\"configs\":")
            try configObject(configs, into: &w)
            if let partitions {
                w.raw(",\"partitions\":")
                w.int(Int(partitions))
            }
            w.raw("}")
            try CLI.call(try options.client(), "PATCH", "/v1/topics/\(CLI.escape(name))", json: String(decoding: w.bytes, as: UTF8.self))
        }
    }

    struct Delete: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a topic and its data.")
        @OptionGroup var options: ClientOptions
        @Argument var name: String
        func run() throws { try CLI.call(try options.client(), "DELETE", "/v1/topics/\(CLI.escape(name))") }
    }
}

/// `["retention.ms=1000"]` → `{"retention.ms":"1000"}`.
func configObject(_ pairs: [String], into w: inout JSONWriter) throws {
    w.raw("{")
    for (i, pair) in pairs.enumerated() {
        guard let eq = pair.firstIndex(of: "=") else { throw ValidationError("config '\(pair)' must be name=value") }
        if i > 0 { w.raw(",") }
        w.string(String(pair[..<eq]))
        w.raw(":")
        w.string(String(pair[pair.index(after: eq)...]))
    }
    w.raw("}")
}

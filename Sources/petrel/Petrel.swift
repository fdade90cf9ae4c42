import ArgumentParser

@main
struct Petrel: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "petrel",
        abstract: "Petrel: a Kafka-class event broker whose whole interface is HTTP.",
        subcommands: [Serve.self, TopicCommand.self, ProduceCommand.self, ConsumeCommand.self, GroupCommand.self, ClusterCommand.self],
        defaultSubcommand: Serve.self
    )
}

import BrokerModel

/// One-line, stable renderings for logs and golden transcripts (configs sorted by key).
extension MetadataRecord: CustomStringConvertible {
    public var description: String {
        switch self {
        case .brokerRegistered(let b):
            "broker-registered \(b.id) rack=\(b.rack ?? "-") public=\(b.publicAddress) internal=\(b.internalAddress) status=\(b.status) epoch=\(b.registrationEpoch)"
        case .brokerUnregistered(let id): "broker-unregistered \(id)"
        case .brokerStatusChanged(let id, let status): "broker-status \(id) \(status)"
        case .topicCreated(let name, let id, let factor, let configs):
            "topic-created \(name) id=\(id) rf=\(factor) configs=\(renderConfigs(configs))"
        case .partitionCreated(let topic, let a): "partition-created \(topic)-\(a.partition) \(a.rendered)"
        case .topicConfigChanged(let topic, let key, let value): "config \(topic) \(key)=\(value ?? "<removed>")"
        case .partitionReplicasChanged(let topic, let a): "partition-changed \(topic)-\(a.partition) \(a.rendered)"
        case .topicDeleted(let name): "topic-deleted \(name)"
        }
    }
}

extension PartitionAssignment {
    /// `[1,2,3]`, with `+[4] -[1]` for the adding and removing replicas of a running reassignment.
    public var rendered: String {
        var text = "[" + replicas.map(\.description).joined(separator: ",") + "]"
        if !addingReplicas.isEmpty { text += " +[" + addingReplicas.map(\.description).joined(separator: ",") + "]" }
        if !removingReplicas.isEmpty { text += " -[" + removingReplicas.map(\.description).joined(separator: ",") + "]" }
        return text
    }
}

func renderConfigs(_ configs: [String: String]) -> String {
    "{" + configs.keys.sorted().map { "\($0)=\(configs[$0]!)" }.joined(separator: ",") + "}"
}

// TEMPORARY until the `peers` branch lands (deleted at merge).
import BrokerModel
import Consensus

public struct GroupEnvelope: Sendable {
    public var group: TopicPartition
    public var envelope: RaftEnvelope
    public init(group: TopicPartition, envelope: RaftEnvelope) {
        self.group = group
        self.envelope = envelope
    }
}

public enum RaftWire {
    public static func encode(_ envelopes: [GroupEnvelope]) -> [UInt8] { fatalError("stub") }
    public static func decode(_ bytes: [UInt8]) throws(DecodeError) -> [GroupEnvelope] { fatalError("stub") }
}

import ClusterState
public enum MetadataCommandCodec {
    public static func encode(_ command: MetadataCommand) -> [UInt8] { fatalError("stub") }
    public static func decode(_ bytes: [UInt8]) throws(DecodeError) -> MetadataCommand { fatalError("stub") }
}

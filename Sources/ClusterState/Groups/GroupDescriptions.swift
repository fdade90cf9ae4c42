import BrokerModel

/// One-line, stable renderings for logs and golden transcripts (maps sorted by key, partitions as
/// `topic-partition` in (topic, partition) order as stored).
extension GroupRecord: CustomStringConvertible {
    public var description: String {
        switch self {
        case .memberJoined(let group, let member, let assignor, let next):
            "member-joined \(group) \(member.rendered) assignor=\(assignor.rawValue) next-member=\(next)"
        case .memberUpdated(let group, let member): "member-updated \(group) \(member.rendered)"
        case .memberRemoved(let group, let member): "member-removed \(group) \(member)"
        case .rebalanced(let group, let generation, let assignment):
            "rebalanced \(group) generation=\(generation) " + renderAssignment(assignment)
        case .offsetCommitted(let group, let partition, let offset):
            "offset-committed \(group) \(partition)=\(offset.offset) metadata=\"\(offset.metadata)\" at=\(offset.commitMilliseconds)"
        case .groupDeleted(let group): "group-deleted \(group)"
        }
    }
}

extension GroupReply: CustomStringConvertible {
    public var description: String {
        switch self {
        case .joined(let member, let generation, let assignment):
            "joined \(member) generation=\(generation) assignment=\(renderPartitions(assignment))"
        case .updated(let generation): "updated generation=\(generation)"
        case .committed(let count): "committed \(count)"
        case .deleted: "deleted"
        }
    }
}

extension GroupMember {
    /// `id client=... topics=[...]` or `manual=[...]`, then session, reset, auto-commit, properties.
    public var rendered: String {
        let subscription =
            manualPartitions.map { "manual=\(renderPartitions($0))" } ?? "topics=[" + topics.map(\.rawValue).joined(separator: ",") + "]"
        return "\(id) client=\"\(clientID)\" \(subscription) session=\(sessionTimeoutMilliseconds)ms reset=\(autoOffsetReset.rawValue) "
            + "auto-commit=\(autoCommit) properties=\(renderConfigs(properties))"
    }
}

func renderPartitions(_ partitions: [TopicPartition]) -> String {
    "[" + partitions.map(\.description).joined(separator: ",") + "]"
}

/// `{m1=[a-0,a-1] m2=[]}`, members by id.
func renderAssignment(_ assignment: [MemberID: [TopicPartition]]) -> String {
    "{" + assignment.keys.sorted().map { "\($0)=\(renderPartitions(assignment[$0]!))" }.joined(separator: " ") + "}"
}

import BrokerModel
import ClusterState

/// Changing where replicas live: explicit reassignment, cluster-wide rebalancing after a broker
/// joins, decommissioning a broker before it leaves. The controller plans (ClusterState); each
/// partition's leader carries the plan out through Raft membership changes (`driveReassignments`).
extension ClusterNode {
    func reassign(_ group: TopicPartition, replicas: [NodeID], completion: @escaping @Sendable (Result<TopicDescription, BrokerError>) -> Void) {
        do throws(BrokerError) { try checkPartition(group) } catch { return completion(.failure(error)) }
        submit(.reassignPartitions(topic: group.topic, targets: [group.partition: replicas])) { [self] result in
            completion(result.flatMap { Result { () throws(BrokerError) in try self.describeTopic(group.topic) } })
        }
    }

    func cancelReassignment(_ group: TopicPartition, completion: @escaping @Sendable (Result<TopicDescription, BrokerError>) -> Void) {
        do throws(BrokerError) { try checkPartition(group) } catch { return completion(.failure(error)) }
        submit(.cancelReassignment(topic: group.topic, partition: group.partition)) { [self] result in
            completion(result.flatMap { Result { () throws(BrokerError) in try self.describeTopic(group.topic) } })
        }
    }

    func rebalance(completion: @escaping @Sendable (Result<Void, BrokerError>) -> Void) {
        submit(.balanceReplicas, completion: completion)
    }

    func decommission(_ broker: NodeID, completion: @escaping @Sendable (Result<Void, BrokerError>) -> Void) {
        submit(.decommissionBroker(broker), completion: completion)
    }

    func unregister(_ broker: NodeID, completion: @escaping @Sendable (Result<Void, BrokerError>) -> Void) {
        submit(.unregisterBroker(broker), completion: completion)
    }
}

import MicroHTTP

/// Every route of the public API. The `operationId` of each is the handler's name in
/// `Api/openapi.yaml`; `RouterSpecTests` fails when the spec and this table drift apart.
public enum Operation: String, CaseIterable, Sendable {
    case getHealth, getReadiness, getMetrics
    case getCluster
    case listTopics, createTopic, getTopic, updateTopic, deleteTopic
    case produceRecords
    case getPartition, readRecords, getPartitionOffsets
    // WebSocket sessions (WebSocketProduce.swift, WebSocketConsume.swift).
    case produceWebSocket, consumeWebSocket
    // Replica placement (cluster mode).
    case reassignPartition, cancelReassignment, rebalanceReplicas, decommissionBroker, unregisterBroker
    // Consumer groups (GroupHandlers.swift).
    case listGroups, describeGroup, deleteGroup, joinGroup, leaveGroup, heartbeatGroupMember, pollGroupRecords
    case commitGroupOffsets, getGroupOffsets, resetGroupOffsets
    // Kafka REST Proxy v2 consumer instances (RestProxyV2Consumers.swift).
    case v2CreateConsumer, v2DeleteConsumer, v2Subscribe, v2GetSubscription, v2Unsubscribe
    case v2Assign, v2GetAssignments, v2Records, v2CommitOffsets, v2GetOffsets
    case v2Seek, v2SeekBeginning, v2SeekEnd
    // A group member over one WebSocket (GroupWebSocket.swift).
    case groupWebSocket

    // The Kafka REST Proxy v2 dialect (RestProxyV2.swift), beside /v1.
    case v2GetRoot, v2ListBrokers, v2ListTopics, v2GetTopic, v2ListPartitions, v2GetPartition, v2GetPartitionOffsets
    case v2ProduceToTopic, v2ProduceToPartition, v2CreateTopic
}

public struct Route: Sendable {
    public var method: String
    /// Path template with `{name}` parameters, as written in the OpenAPI document.
    public var template: String
    public var operation: Operation
    /// The template split at `/`, computed once (matching runs on every request).
    let segments: [String]

    public init(method: String, template: String, operation: Operation) {
        self.method = method
        self.template = template
        self.operation = operation
        segments = template.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
    }
}

public enum Router {
    public static let routes: [Route] = [
        Route(method: "GET", template: "/healthz", operation: .getHealth),
        Route(method: "GET", template: "/readyz", operation: .getReadiness),
        Route(method: "GET", template: "/metrics", operation: .getMetrics),
        Route(method: "GET", template: "/v1/cluster", operation: .getCluster),
        Route(method: "GET", template: "/v1/topics", operation: .listTopics),
        Route(method: "POST", template: "/v1/topics", operation: .createTopic),
        Route(method: "GET", template: "/v1/topics/{topic}", operation: .getTopic),
        Route(method: "PATCH", template: "/v1/topics/{topic}", operation: .updateTopic),
        Route(method: "DELETE", template: "/v1/topics/{topic}", operation: .deleteTopic),
        Route(method: "POST", template: "/v1/topics/{topic}/records", operation: .produceRecords),
        Route(method: "GET", template: "/v1/topics/{topic}/partitions/{partition}", operation: .getPartition),
        Route(method: "GET", template: "/v1/topics/{topic}/partitions/{partition}/records", operation: .readRecords),
        Route(method: "GET", template: "/v1/topics/{topic}/partitions/{partition}/offsets", operation: .getPartitionOffsets),
        // WebSocket sessions.
        Route(method: "GET", template: "/v1/topics/{topic}/ws", operation: .produceWebSocket),
        Route(method: "GET", template: "/v1/topics/{topic}/partitions/{partition}/ws", operation: .consumeWebSocket),
        // Replica placement.
        Route(method: "PUT", template: "/v1/topics/{topic}/partitions/{partition}/replicas", operation: .reassignPartition),
        Route(method: "DELETE", template: "/v1/topics/{topic}/partitions/{partition}/reassignment", operation: .cancelReassignment),
        Route(method: "POST", template: "/v1/cluster/rebalance", operation: .rebalanceReplicas),
        Route(method: "POST", template: "/v1/brokers/{broker}/decommission", operation: .decommissionBroker),
        Route(method: "DELETE", template: "/v1/brokers/{broker}", operation: .unregisterBroker),
        // Consumer groups.
        Route(method: "GET", template: "/v1/groups", operation: .listGroups),
        Route(method: "GET", template: "/v1/groups/{group}", operation: .describeGroup),
        Route(method: "DELETE", template: "/v1/groups/{group}", operation: .deleteGroup),
        Route(method: "POST", template: "/v1/groups/{group}/members", operation: .joinGroup),
        Route(method: "DELETE", template: "/v1/groups/{group}/members/{member}", operation: .leaveGroup),
        Route(method: "POST", template: "/v1/groups/{group}/members/{member}/heartbeat", operation: .heartbeatGroupMember),
        Route(method: "GET", template: "/v1/groups/{group}/members/{member}/records", operation: .pollGroupRecords),
        Route(method: "POST", template: "/v1/groups/{group}/offsets", operation: .commitGroupOffsets),
        Route(method: "GET", template: "/v1/groups/{group}/offsets", operation: .getGroupOffsets),
        Route(method: "POST", template: "/v1/groups/{group}/offsets/reset", operation: .resetGroupOffsets),
        // Kafka REST Proxy v2 consumer instances.
        Route(method: "POST", template: "/consumers/{group}", operation: .v2CreateConsumer),
        Route(method: "DELETE", template: "/consumers/{group}/instances/{instance}", operation: .v2DeleteConsumer),
        Route(method: "POST", template: "/consumers/{group}/instances/{instance}/subscription", operation: .v2Subscribe),
        Route(method: "GET", template: "/consumers/{group}/instances/{instance}/subscription", operation: .v2GetSubscription),
        Route(method: "DELETE", template: "/consumers/{group}/instances/{instance}/subscription", operation: .v2Unsubscribe),
        Route(method: "POST", template: "/consumers/{group}/instances/{instance}/assignments", operation: .v2Assign),
        Route(method: "GET", template: "/consumers/{group}/instances/{instance}/assignments", operation: .v2GetAssignments),
        Route(method: "GET", template: "/consumers/{group}/instances/{instance}/records", operation: .v2Records),
        Route(method: "POST", template: "/consumers/{group}/instances/{instance}/offsets", operation: .v2CommitOffsets),
        Route(method: "GET", template: "/consumers/{group}/instances/{instance}/offsets", operation: .v2GetOffsets),
        Route(method: "POST", template: "/consumers/{group}/instances/{instance}/positions", operation: .v2Seek),
        Route(method: "POST", template: "/consumers/{group}/instances/{instance}/positions/beginning", operation: .v2SeekBeginning),
        Route(method: "POST", template: "/consumers/{group}/instances/{instance}/positions/end", operation: .v2SeekEnd),
        // The Kafka REST Proxy v2 dialect (Confluent REST Proxy and the Strimzi bridge).
        Route(method: "GET", template: "/", operation: .v2GetRoot),
        Route(method: "GET", template: "/brokers", operation: .v2ListBrokers),
        Route(method: "GET", template: "/topics", operation: .v2ListTopics),
        Route(method: "GET", template: "/topics/{topic}", operation: .v2GetTopic),
        Route(method: "POST", template: "/topics/{topic}", operation: .v2ProduceToTopic),
        Route(method: "GET", template: "/topics/{topic}/partitions", operation: .v2ListPartitions),
        Route(method: "GET", template: "/topics/{topic}/partitions/{partition}", operation: .v2GetPartition),
        Route(method: "POST", template: "/topics/{topic}/partitions/{partition}", operation: .v2ProduceToPartition),
        Route(method: "GET", template: "/topics/{topic}/partitions/{partition}/offsets", operation: .v2GetPartitionOffsets),
        Route(method: "POST", template: "/admin/topics", operation: .v2CreateTopic),
        Route(method: "GET", template: "/v1/groups/{group}/ws", operation: .groupWebSocket),
    ]

    public enum Match: Equatable {
        case found(Operation, [String: String])
        /// The path exists but not with this method; carries the allowed methods.
        case methodNotAllowed([String])
        case notFound
    }

    /// Matches decoded path segments (a `%2F` inside a segment stays inside it).
    public static func match(method: String, segments: [String]) -> Match {
        var allowed: [String] = []
        let method = method == "HEAD" ? "GET" : method
        for route in routes {
            let template = route.segments
            guard template.count == segments.count else { continue }
            var params: [String: String] = [:]
            var matches = true
            for (t, s) in zip(template, segments) {
                if t.hasPrefix("{") && t.hasSuffix("}") {
                    params[String(t.dropFirst().dropLast())] = s
                } else if t != s {
                    matches = false
                    break
                }
            }
            guard matches else { continue }
            if route.method == method { return .found(route.operation, params) }
            allowed.append(route.method)
        }
        return allowed.isEmpty ? .notFound : .methodNotAllowed(allowed)
    }
}

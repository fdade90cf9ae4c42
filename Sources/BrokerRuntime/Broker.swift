import BrokerModel
import Dispatch
import Foundation
import LogStorage
import Logging
import Synchronization

/// The broker façade: the only thing the HTTP layer talks to. Single-node today; the cluster work
/// puts Raft groups behind the same calls.
///
/// Thread-safety: every method may be called from any thread. Calls that wait (produce with
/// `acks=all`, long-poll reads) never block the caller: they return at once and call `completion`
/// later from a broker thread.
public final class Broker: Sendable {
    public let configuration: BrokerConfiguration
    let logger: Logger
    let fileSystem: any FileSystem
    let nowMilliseconds: @Sendable () -> Int64

    private let registry = Mutex<Registry>(Registry())
    /// Serialises topic administration (create/alter/delete), which does file I/O.
    private let adminLock = Mutex<Void>(())
    private let flusherBox = Mutex<Flusher?>(nil)
    private let parked = Atomic<Int>(0)
    private let stickyCounter = Atomic<Int>(0)
    let isStopping = Atomic<Bool>(false)
    /// The single node's group coordinator (cluster mode: the cluster node's).
    let groupsBox = Mutex<GroupCoordinator?>(nil)
    let groupTimer = DispatchQueue(label: "petrel.groups")
    var groupCoordinator: GroupCoordinator? { groupsBox.withLock { $0 } }
    private let retentionQueue = DispatchQueue(label: "petrel.retention")
    public let metrics = BrokerMetrics()
    /// The port clients reach this broker on; set once the HTTP listener is bound (it may be an ephemeral port).
    public let advertisedPort: Atomic<Int>
    /// Cluster mode (configuration.cluster set): every call below is answered by the cluster node.
    private let clusterBox = Mutex<ClusterNode?>(nil)
    private let transport: (any PeerTransport)?
    var clusterNode: ClusterNode? { clusterBox.withLock { $0 } }

    struct Registry: Sendable {
        var clusterID = ""
        var topics: [TopicName: TopicEntry] = [:]
        var isOpen = false
    }

    struct TopicEntry: Sendable {
        var name: TopicName
        var config: TopicConfig
        var partitions: [Partition]
        var createdMilliseconds: Int64
        var stored: StoredTopic {
            StoredTopic(name: name.rawValue, partitionCount: Int32(partitions.count), config: config, createdMilliseconds: createdMilliseconds)
        }
    }

    public init(
        configuration: BrokerConfiguration, fileSystem: any FileSystem = PosixFileSystem(),
        logger: Logger = Logger(label: "petrel.broker"),
        nowMilliseconds: @escaping @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970 * 1000) },
        transport: (any PeerTransport)? = nil
    ) {
        self.transport = transport
        self.configuration = configuration
        self.fileSystem = fileSystem
        self.logger = logger
        self.nowMilliseconds = nowMilliseconds
        self.advertisedPort = Atomic(configuration.advertisedPort)
    }

    /// Throws when `partitions` partitions in total would not fit the open-file budget.
    func checkOpenFiles(partitions: Int) throws(BrokerError) {
        guard let max = configuration.openFilesMax else { return }
        let needed = partitions * 3 + configuration.limits.connectionsMax + 64
        if needed > max {
            throw .overloaded("\(partitions) partitions need about \(needed) open files with \(configuration.limits.connectionsMax) connections, more than this process may open (\(max)); raise the open-file limit (ulimit -n) or use fewer partitions")
        }
    }

    var metadataStore: MetadataStore { MetadataStore(directory: configuration.dataDirectory, fileSystem: fileSystem) }
    var topicsDirectory: String { configuration.dataDirectory + "/topics" }
    func partitionDirectory(_ topic: TopicName, _ partition: PartitionID) -> String {
        "\(topicsDirectory)/\(topic.rawValue)/\(partition.rawValue)"
    }

    // MARK: - lifecycle

    /// Loads metadata, recovers every partition log, starts the flusher and the retention timer.
    public func start() throws(BrokerError) {
        if let cluster = configuration.cluster {
            guard let transport else { throw .invalidConfig("cluster mode needs a peer transport") }
            let node = try ClusterNode(configuration: configuration, cluster: cluster, transport: transport, fileSystem: fileSystem,
                                       logger: logger, metrics: metrics, clock: nowMilliseconds, advertisedPort: { [weak self] in self?.advertisedPort.load(ordering: .relaxed) ?? 0 })
            try node.start()
            clusterBox.withLock { $0 = node }
            return
        }
        do {
            try fileSystem.createDirectory(topicsDirectory)
        } catch {
            throw .storage("cannot create data directory \(configuration.dataDirectory): \(error)")
        }
        let loaded = try metadataStore.load()
        let stored = loaded ?? StoredMetadata(clusterID: UUID().uuidString.lowercased(), topics: [])
        if loaded == nil { try metadataStore.save(stored) }
        var topics: [TopicName: TopicEntry] = [:]
        for t in stored.topics {
            guard let name = TopicName(t.name) else { throw .storage("meta.json holds an invalid topic name '\(t.name)'") }
            var partitions: [Partition] = []
            for p in 0..<t.partitionCount {
                partitions.append(try openPartition(name, PartitionID(p), config: t.config))
            }
            topics[name] = TopicEntry(name: name, config: t.config, partitions: partitions, createdMilliseconds: t.createdMilliseconds)
        }
        removeOrphanDirectories(keeping: Set(topics.keys.map(\.rawValue)))
        let flusher = Flusher { [weak self] partition, waiter in self?.serve(waiter, on: partition) }
        flusher.start()
        flusherBox.withLock { $0 = flusher }
        registry.withLock {
            $0.clusterID = stored.clusterID
            $0.topics = topics
            $0.isOpen = true
        }
        startRetentionTimer()
        try startGroupCoordinator()
        logger.info("broker started", metadata: ["data": "\(configuration.dataDirectory)", "topics": "\(topics.count)"])
    }

    /// Orderly stop: refuse new work, make every appended record durable and answer its producer,
    /// answer every parked reader with what is there, close the logs. No acknowledged data is lost.
    public func shutdown() {
        if let c = clusterNode { return c.shutdown() }
        guard !isStopping.exchange(true, ordering: .acquiringAndReleasing) else { return }
        // The coordinator holds its host, which holds this broker: let go of it.
        groupsBox.withLock { $0 = nil }
        let partitions = registry.withLock { r -> [Partition] in
            r.isOpen = false
            return r.topics.values.flatMap(\.partitions)
        }
        let flusher = flusherBox.withLock { $0 }
        for p in partitions {
            // A producer may be running a flush round inline right now: let it finish (bounded) so
            // this final round covers everything and no log is closed under a running fsync.
            for _ in 0..<10_000 where p.state.withLock({ $0.isFlushing }) { usleep(500) }
            flusher?.flush(p)
        }
        flusher?.stop()
        for p in partitions { close(p, reason: .shuttingDown, delete: false) }
        logger.info("broker stopped")
    }

    private func openPartition(_ topic: TopicName, _ id: PartitionID, config: TopicConfig) throws(BrokerError) -> Partition {
        let directory = partitionDirectory(topic, id)
        do {
            let log = try PartitionLog.open(directory: directory, config: config.logConfig, fileSystem: fileSystem, nowMilliseconds: nowMilliseconds())
            return Partition(topic: topic, id: id, log: log)
        } catch {
            throw .storage("cannot open log \(directory): \(error)")
        }
    }

    /// Closes a partition: answers everyone waiting on it with `reason`, closes (or deletes) its log.
    private func close(_ partition: Partition, reason: BrokerError, delete: Bool) {
        let (acks, readers) = partition.state.withLock { s -> ([AckWaiter], [ReadWaiter]) in
            if s.closedReason == nil || delete {
                do {
                    if delete { try s.log.delete() } else { try s.log.close() }
                } catch {
                    logger.error("closing \(partition.topicPartition) failed: \(error)")
                }
            }
            s.closedReason = reason
            defer {
                s.ackWaiters.removeAll()
                s.readWaiters.removeAll()
            }
            return (s.ackWaiters, s.readWaiters)
        }
        for a in acks { a.tracker.fail(reason) }
        // Parked readers get an ordinary (empty) answer on shutdown: their wait simply ended.
        for r in readers { serve(r, on: partition, closing: reason) }
    }

    private func removeOrphanDirectories(keeping names: Set<String>) {
        guard let entries = try? fileSystem.listDirectory(topicsDirectory) else { return }
        for entry in entries where !names.contains(entry) {
            // A topic whose deletion was recorded in meta.json but whose files were not yet removed
            // (or whose creation never reached meta.json).
            logger.info("removing files of deleted topic", metadata: ["topic": "\(entry)"])
            try? fileSystem.removeDirectory(fileSystem.join(topicsDirectory, entry))
        }
    }

    /// Runs retention every `retentionCheckIntervalMilliseconds` until shutdown (re-arming itself,
    /// so nothing non-Sendable has to be stored to cancel it).
    private func startRetentionTimer() {
        let interval = Int(max(configuration.retentionCheckIntervalMilliseconds, 10))
        retentionQueue.asyncAfter(deadline: .now() + .milliseconds(interval)) { [weak self] in
            guard let self, !self.isStopping.load(ordering: .relaxed) else { return }
            self.enforceRetention()
            self.startRetentionTimer()
        }
    }

    /// Deletes old segments of every partition by `retention.ms` / `retention.bytes`.
    public func enforceRetention() {
        if clusterNode != nil { return }
        let partitions = registry.withLock { $0.topics.values.flatMap(\.partitions) }
        let now = nowMilliseconds()
        for p in partitions {
            p.state.withLock { s in
                guard s.closedReason == nil else { return }
                do {
                    let deleted = try s.log.enforceRetention(nowMilliseconds: now)
                    if deleted > 0 {
                        logger.info("retention deleted segments", metadata: ["partition": "\(p.topicPartition)", "segments": "\(deleted)", "log_start_offset": "\(s.log.logStartOffset)"])
                    }
                } catch {
                    logger.error("retention on \(p.topicPartition) failed: \(error)")
                }
            }
        }
    }

    // MARK: - lookups

    private func entry(_ topic: TopicName) throws(BrokerError) -> TopicEntry {
        let result = registry.withLock { r -> Result<TopicEntry, BrokerError> in
            guard r.isOpen else { return .failure(.shuttingDown) }
            guard let e = r.topics[topic] else { return .failure(.unknownTopic(topic.rawValue)) }
            return .success(e)
        }
        return try result.get()
    }

    private func partition(_ topic: TopicName, _ id: PartitionID) throws(BrokerError) -> Partition {
        let e = try entry(topic)
        guard id.rawValue >= 0 && Int(id.rawValue) < e.partitions.count else {
            throw .unknownPartition(topic: topic.rawValue, partition: id.rawValue, partitionCount: Int32(e.partitions.count))
        }
        return e.partitions[Int(id.rawValue)]
    }

    public var clusterID: String { clusterNode?.clusterID ?? registry.withLock { $0.clusterID } }

    // MARK: - topic administration

    public func createTopic(name: TopicName, partitions: Int32, replicationFactor: Int?, configs: [(String, String)]) throws(BrokerError) -> TopicDescription {
        precondition(clusterNode == nil, "in cluster mode use the completion form (it waits for the controller)")
        if name.isInternal { throw .invalidTopicName("topic names starting with '__' are reserved for internal topics") }
        return try createTopicUnchecked(name: name, partitions: partitions, replicationFactor: replicationFactor, configs: configs)
    }

    /// `createTopic` without the reserved-name check: the broker's own internal topics.
    func createTopicUnchecked(name: TopicName, partitions: Int32, replicationFactor: Int? = nil, configs: [(String, String)]) throws(BrokerError) -> TopicDescription {
        guard partitions >= 1 && partitions <= configuration.limits.partitionsPerTopicMax else {
            throw .invalidConfig("partitions must be in 1...\(configuration.limits.partitionsPerTopicMax), got \(partitions)")
        }
        if let replicationFactor, replicationFactor != 1 {
            throw .invalidConfig("replication_factor must be 1 on a single-node broker (1 broker available), got \(replicationFactor)")
        }
        let config = try configuration.topicDefaults.applying(configs)
        let result: Result<Void, BrokerError> = adminLock.withLock { _ in
            do throws(BrokerError) {
                let (exists, topicCount, partitionCount) = registry.withLock { r in
                    (r.topics[name] != nil, r.topics.count, r.topics.values.reduce(0) { $0 + $1.partitions.count })
                }
                if exists { throw .topicExists(name.rawValue) }
                if topicCount >= configuration.limits.topicsMax { throw .overloaded("this broker already holds \(topicCount) topics (the limit)") }
                if partitionCount + Int(partitions) > configuration.limits.partitionsMax {
                    throw .overloaded("this broker holds \(partitionCount) partitions; \(partitions) more would pass the limit of \(configuration.limits.partitionsMax)")
                }
                try checkOpenFiles(partitions: partitionCount + Int(partitions))
                // Files first, then the metadata: a crash in between leaves only orphan directories,
                // which start-up removes.
                try? fileSystem.removeDirectory(fileSystem.join(topicsDirectory, name.rawValue))
                var opened: [Partition] = []
                for p in 0..<partitions { opened.append(try openPartition(name, PartitionID(p), config: config)) }
                let entry = TopicEntry(name: name, config: config, partitions: opened, createdMilliseconds: nowMilliseconds())
                try persist { $0.topics[name] = entry }
                logger.info("topic created", metadata: ["topic": "\(name)", "partitions": "\(partitions)"])
                return .success(())
            } catch {
                return .failure(error)
            }
        }
        try result.get()
        return try describeTopic(name)
    }

    /// Applies `change` to a copy of the registry, writes meta.json, then installs the copy.
    /// Caller holds `adminLock`.
    private func persist(_ change: (inout Registry) -> Void) throws(BrokerError) {
        var copy = registry.withLock { r in Registry(clusterID: r.clusterID, topics: r.topics, isOpen: r.isOpen) }
        guard copy.isOpen else { throw .shuttingDown }
        change(&copy)
        let stored = StoredMetadata(clusterID: copy.clusterID, topics: copy.topics.values.map(\.stored).sorted { $0.name < $1.name })
        try metadataStore.save(stored)
        let topics = copy.topics
        registry.withLock { $0.topics = topics }
    }

    public func listTopics(includeInternal: Bool = false) -> [TopicName] {
        if let c = clusterNode { return c.listTopics(includeInternal: includeInternal) }
        return registry.withLock { r in r.topics.keys.filter { includeInternal || !$0.isInternal }.sorted() }
    }

    public func describeTopic(_ name: TopicName) throws(BrokerError) -> TopicDescription {
        if let c = clusterNode { return try c.describeTopic(name) }
        let e = try entry(name)
        let node = configuration.nodeID
        let partitions = e.partitions.map { p in
            p.state.withLock { s in
                PartitionDescription(
                    partition: p.id, leader: node, replicas: [node], inSyncReplicas: s.closedReason == nil ? [node] : [],
                    offsets: s.offsets, sizeBytes: s.closedReason == nil ? s.log.sizeBytes : 0,
                    segmentCount: s.closedReason == nil ? s.log.segmentCount : 0)
            }
        }
        return TopicDescription(name: name, partitions: partitions, replicationFactor: 1, config: e.config, isInternal: name.isInternal)
    }

    /// Changes configs and/or grows the partition count (never shrinks: keyed records would move).
    public func alterTopic(_ name: TopicName, configs: [(String, String)], partitions newCount: Int32?) throws(BrokerError) -> TopicDescription {
        precondition(clusterNode == nil, "in cluster mode use the completion form (it waits for the controller)")
        let result: Result<Void, BrokerError> = adminLock.withLock { _ in
            do throws(BrokerError) {
                var e = try entry(name)
                let config = try e.config.applying(configs)
                if let newCount {
                    guard newCount >= e.partitions.count else {
                        throw .invalidConfig("partitions can only grow: topic '\(name)' has \(e.partitions.count), asked for \(newCount)")
                    }
                    guard newCount <= configuration.limits.partitionsPerTopicMax else {
                        throw .invalidConfig("partitions must be at most \(configuration.limits.partitionsPerTopicMax), got \(newCount)")
                    }
                    let total = registry.withLock { $0.topics.values.reduce(0) { $0 + $1.partitions.count } }
                    if total + Int(newCount) - e.partitions.count > configuration.limits.partitionsMax {
                        throw .overloaded("growing '\(name)' to \(newCount) partitions would pass the broker's limit of \(configuration.limits.partitionsMax)")
                    }
                    try checkOpenFiles(partitions: total + Int(newCount) - e.partitions.count)
                    for p in Int32(e.partitions.count)..<newCount {
                        e.partitions.append(try openPartition(name, PartitionID(p), config: config))
                    }
                }
                if config != e.config {
                    e.config = config
                    for p in e.partitions { p.state.withLock { $0.log.config = config.logConfig } }
                }
                let updated = e
                try persist { $0.topics[name] = updated }
                logger.info("topic altered", metadata: ["topic": "\(name)", "partitions": "\(e.partitions.count)"])
                return .success(())
            } catch {
                return .failure(error)
            }
        }
        try result.get()
        return try describeTopic(name)
    }

    /// Deletes the topic and its data. Waiting producers and readers get 404.
    public func deleteTopic(_ name: TopicName) throws(BrokerError) {
        precondition(clusterNode == nil, "in cluster mode use the completion form (it waits for the controller)")
        if name.isInternal { throw .invalidTopicName("internal topics cannot be deleted") }
        // The files go while the admin lock is held: a create of the same name waits until they are
        // gone, instead of racing the removal and losing its own new directory. A crash after the
        // metadata write leaves orphan directories, which start-up removes.
        let result: Result<Void, BrokerError> = adminLock.withLock { _ in
            do throws(BrokerError) {
                let e = try entry(name)
                try persist { $0.topics[name] = nil }
                for p in e.partitions { close(p, reason: .unknownTopic(name.rawValue), delete: true) }
                try? fileSystem.removeDirectory(fileSystem.join(topicsDirectory, name.rawValue))
                return .success(())
            } catch {
                return .failure(error)
            }
        }
        try result.get()
        logger.info("topic deleted", metadata: ["topic": "\(name)"])
    }

    // MARK: - administration with completions (the HTTP layer's form: in a cluster they wait for the controller)

    public func createTopic(name: TopicName, partitions: Int32, replicationFactor: Int?, configs: [(String, String)],
                            completion: @escaping @Sendable (Result<TopicDescription, BrokerError>) -> Void) {
        if let c = clusterNode { return c.createTopic(name: name, partitions: partitions, replicationFactor: replicationFactor, configs: configs, completion: completion) }
        completion(Result { () throws(BrokerError) in try createTopic(name: name, partitions: partitions, replicationFactor: replicationFactor, configs: configs) })
    }

    public func alterTopic(_ name: TopicName, configs: [(String, String)], partitions newCount: Int32?,
                           completion: @escaping @Sendable (Result<TopicDescription, BrokerError>) -> Void) {
        if let c = clusterNode { return c.alterTopic(name, configs: configs, partitions: newCount, completion: completion) }
        completion(Result { () throws(BrokerError) in try alterTopic(name, configs: configs, partitions: newCount) })
    }

    public func deleteTopic(_ name: TopicName, completion: @escaping @Sendable (Result<Void, BrokerError>) -> Void) {
        if let c = clusterNode { return c.deleteTopic(name, completion: completion) }
        completion(Result { () throws(BrokerError) in try deleteTopic(name) })
    }

    // MARK: - replica assignments (cluster only)

    private var notACluster: BrokerError { .unprocessable("this broker runs as a single node; replica assignments need a cluster (start brokers with --members)") }

    /// Moves `topic`-`partition` to `replicas` (order = preference; the first is the preferred leader).
    public func reassignPartition(topic: TopicName, partition: PartitionID, replicas: [NodeID],
                                  completion: @escaping @Sendable (Result<TopicDescription, BrokerError>) -> Void) {
        guard let c = clusterNode else { return completion(.failure(notACluster)) }
        c.reassign(TopicPartition(topic, partition), replicas: replicas, completion: completion)
    }

    public func cancelReassignment(topic: TopicName, partition: PartitionID, completion: @escaping @Sendable (Result<TopicDescription, BrokerError>) -> Void) {
        guard let c = clusterNode else { return completion(.failure(notACluster)) }
        c.cancelReassignment(TopicPartition(topic, partition), completion: completion)
    }

    /// Plans the fewest moves that even out replicas over the alive brokers (after adding one).
    public func rebalanceReplicas(completion: @escaping @Sendable (Result<Void, BrokerError>) -> Void) {
        guard let c = clusterNode else { return completion(.failure(notACluster)) }
        c.rebalance(completion: completion)
    }

    /// Moves every replica off `broker`; it can be unregistered (and stopped) once it hosts none.
    public func decommissionBroker(_ broker: NodeID, completion: @escaping @Sendable (Result<Void, BrokerError>) -> Void) {
        guard let c = clusterNode else { return completion(.failure(notACluster)) }
        c.decommission(broker, completion: completion)
    }

    public func unregisterBroker(_ broker: NodeID, completion: @escaping @Sendable (Result<Void, BrokerError>) -> Void) {
        guard let c = clusterNode else { return completion(.failure(notACluster)) }
        c.unregister(broker, completion: completion)
    }

    // MARK: - produce

    /// Appends `records` to `topic`. Records with an explicit partition go there; keyed records go
    /// to murmur2(key) mod partitions (Kafka's default partitioner); the rest of the request goes to
    /// one partition chosen round-robin per request (Kafka's sticky partitioner, one batch per request).
    /// `completion` runs once: at once for acks=0/1, after the fsync for acks=all.
    public func produce(
        topic: TopicName, records: [ProduceRecord], acks: Acks,
        completion: @escaping @Sendable (Result<[RecordPlacement], BrokerError>) -> Void
    ) {
        // Internal topics are written by the broker alone: a client's record in __consumer_offsets
        // would be a forged group change.
        if topic.isInternal { return completion(.failure(.invalidTopicName("topic '\(topic)' is internal; only the broker writes to it"))) }
        produceUnchecked(topic: topic, records: records, acks: acks, completion: completion)
    }

    func produceUnchecked(
        topic: TopicName, records: [ProduceRecord], acks: Acks,
        completion: @escaping @Sendable (Result<[RecordPlacement], BrokerError>) -> Void
    ) {
        if let c = clusterNode { return c.produce(topic: topic, records: records, acks: acks, completion: completion) }
        do throws(BrokerError) {
            guard !isStopping.load(ordering: .relaxed) else { throw .shuttingDown }
            try ProducePlan.checkCount(records, limits: configuration.limits)
            let e = try entry(topic)
            let partitionCount = Int32(e.partitions.count)
            let sticky = PartitionID(Int32(stickyCounter.wrappingAdd(1, ordering: .relaxed).oldValue & 0x3fff_ffff) % partitionCount)
            let now = nowMilliseconds()
            let byPartition = try ProducePlan(topic: topic, records: records, partitionCount: partitionCount, sticky: sticky,
                                              now: now, maxMessageBytes: e.config.maxMessageBytes, limits: configuration.limits).byPartition

            var placements = [RecordPlacement](repeating: RecordPlacement(partition: PartitionID(0), offset: nil, timestamp: 0), count: records.count)
            var lastOffsets: [(Partition, Offset)] = []
            // An acks=all request to one partition flushes on this thread when no flush round is
            // running: no hand-over to the flusher thread, no suspend/resume of the connection.
            let flushInline = acks == .all && byPartition.count == 1
            for (p, items) in byPartition.sorted(by: { $0.key < $1.key }) {
                let partition = e.partitions[Int(p)]
                let assigned = try append(items.map(\.record), to: partition, maxBatchBytes: e.config.maxMessageBytes, now: now, flushInline: flushInline)
                for (k, item) in items.enumerated() {
                    placements[item.index] = RecordPlacement(partition: partition.id, offset: acks == .none ? nil : assigned[k], timestamp: item.record.timestamp)
                }
                if let last = assigned.last { lastOffsets.append((partition, last)) }
            }
            metrics.recordsProduced.wrappingAdd(records.count, ordering: .relaxed)
            if acks != .all {
                completion(.success(placements))
                return
            }
            // acks=all: park until every touched partition's high watermark passes its last offset.
            guard parked.wrappingAdd(1, ordering: .relaxed).newValue <= configuration.limits.parkedRequestsMax else {
                parked.wrappingSubtract(1, ordering: .relaxed)
                // The records are appended and will be flushed; the client only loses its wait.
                throw .overloaded("too many requests are waiting (\(configuration.limits.parkedRequestsMax)); the records were appended but durability was not awaited — retry with an Idempotency-Key, or use acks=1")
            }
            let tracker = ProduceTracker(partitions: lastOffsets.count, placements: placements, onFinish: { [self] in self.parked.wrappingSubtract(1, ordering: .relaxed) }, completion: completion)
            for (partition, last) in lastOffsets {
                enum Next { case done, wait, lead }
                let state = partition.state.withLock { s -> Result<Next, BrokerError> in
                    if let reason = s.closedReason { return .failure(reason) }
                    if last < s.highWatermark { return .success(.done) }
                    s.ackWaiters.append(AckWaiter(lastOffset: last, tracker: tracker))
                    guard flushInline else { return .success(.wait) }
                    if s.isFlushing { return .success(.wait) }  // the running round hands off to the flusher
                    s.isFlushing = true
                    return .success(.lead)
                }
                switch state {
                case .failure(let error): tracker.fail(error)
                case .success(.done): tracker.partitionDurable()
                case .success(.wait): break
                case .success(.lead): flusherBox.withLock { $0 }?.flush(partition, isLeader: true)
                }
            }
        } catch {
            completion(.failure(error))
        }
    }

    /// Appends records to one partition as one or more batches (split at `maxBatchBytes`) and queues
    /// the partition for group commit. Returns each record's offset.
    /// With `flushInline`, the caller will run the flush round itself (or, if one is running, rely
    /// on its hand-off), so the partition is not queued for the flusher thread.
    private func append(_ records: [Record], to partition: Partition, maxBatchBytes: Int, now: Int64, flushInline: Bool = false) throws(BrokerError) -> [Offset] {
        // Encode outside the lock: only the offset stamping and the write happen under it.
        let batches = ProducePlan.batches(records, maxBatchBytes: maxBatchBytes)

        let result = partition.state.withLock { s -> Result<([Offset], Bool), BrokerError> in
            if let reason = s.closedReason { return .failure(reason) }
            var offsets: [Offset] = []
            offsets.reserveCapacity(records.count)
            for batch in batches {
                do {
                    let (first, last) = try s.log.append(batch, nowMilliseconds: now)
                    var o = first
                    while o <= last {
                        offsets.append(o)
                        o = o + 1
                    }
                } catch {
                    return .failure(.storage("append to \(partition.topicPartition) failed: \(error)"))
                }
            }
            if flushInline { return .success((offsets, false)) }
            let enqueue = !s.isQueuedForFlush
            s.isQueuedForFlush = true
            return .success((offsets, enqueue))
        }
        let (offsets, enqueue) = try result.get()
        if enqueue { flusherBox.withLock { $0 }?.enqueue(partition) }
        return offsets
    }

    // MARK: - read

    /// Reads records from one partition. With `waitMilliseconds > 0` and nothing to return yet, the
    /// request parks until a record is committed or the wait ends. `completion` runs exactly once.
    public func read(_ request: ReadRequest, completion: @escaping @Sendable (Result<ReadResult, BrokerError>) -> Void) {
        read(request, local: false, completion: completion)
    }

    /// `local`: in a cluster, read this broker's own replica (leader or follower) up to its own high
    /// watermark instead of the leader's — for checking replicas. A single node ignores it.
    public func read(_ request: ReadRequest, local: Bool, completion: @escaping @Sendable (Result<ReadResult, BrokerError>) -> Void) {
        if let c = clusterNode { return c.read(request, local: local, completion: completion) }
        do throws(BrokerError) {
            let p = try partition(request.topic, request.partition)
            let limits = configuration.limits
            let maxRecords = min(max(request.maxRecords, 1), limits.readRecordsMax)
            let maxBytes = min(max(request.maxBytes, 1), limits.readBytesMax)
            let wait = min(max(request.waitMilliseconds, 0), limits.waitMillisecondsMax)
            var normalized = request
            normalized.maxRecords = maxRecords
            normalized.maxBytes = maxBytes
            normalized.waitMilliseconds = wait

            enum Outcome { case answer(ReadResult), park(Offset) }
            let outcome = p.state.withLock { s -> Result<Outcome, BrokerError> in
                do throws(BrokerError) {
                    if let reason = s.closedReason { throw reason }
                    let from: Offset
                    switch request.offset {
                    case .earliest: from = s.log.logStartOffset
                    case .latest: from = s.highWatermark
                    case .exact(let o):
                        guard o >= s.log.logStartOffset && o <= s.log.logEndOffset else {
                            throw .offsetOutOfRange(requested: o.rawValue, logStart: s.log.logStartOffset.rawValue, logEnd: s.log.logEndOffset.rawValue)
                        }
                        from = o
                    }
                    if from < s.highWatermark || wait == 0 {
                        return .success(.answer(try s.read(from: from, maxRecords: maxRecords, maxBytes: maxBytes, topic: p.topic, partition: p.id)))
                    }
                    return .success(.park(from))
                } catch {
                    return .failure(error)
                }
            }
            switch try outcome.get() {
            case .answer(let result):
                count(result)
                completion(.success(result))
            case .park(let from):
                try park(normalized, from: from, on: p, completion: completion)
            }
        } catch {
            completion(.failure(error))
        }
    }

    private func park(_ request: ReadRequest, from: Offset, on partition: Partition, completion: @escaping @Sendable (Result<ReadResult, BrokerError>) -> Void) throws(BrokerError) {
        guard parked.wrappingAdd(1, ordering: .relaxed).newValue <= configuration.limits.parkedRequestsMax else {
            parked.wrappingSubtract(1, ordering: .relaxed)
            throw .overloaded("too many requests are waiting (\(configuration.limits.parkedRequestsMax)); retry later or with a shorter wait_ms")
        }
        let waiter = ReadWaiter(request: request, from: from) { [self] result in
            self.parked.wrappingSubtract(1, ordering: .relaxed)
            completion(result)
        }
        // Register, then re-check: a commit between the first check and the registration must not be missed.
        let alreadyThere = partition.state.withLock { s -> Bool in
            if s.closedReason != nil || from < s.highWatermark { return true }
            s.readWaiters.append(waiter)
            return false
        }
        if alreadyThere {
            serve(waiter, on: partition)
            return
        }
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(request.waitMilliseconds)) { [weak self, weak partition] in
            guard let partition else {
                waiter.claim()?(.failure(.unknownTopic(request.topic.rawValue)))
                return
            }
            partition.state.withLock { s in s.readWaiters.removeAll { $0 === waiter } }
            if let self { self.serve(waiter, on: partition) } else { waiter.claim()?(.failure(.shuttingDown)) }
        }
    }

    /// Answers a parked reader with whatever is readable now (possibly nothing).
    func serve(_ waiter: ReadWaiter, on partition: Partition, closing: BrokerError? = nil) {
        guard let completion = waiter.claim() else { return }
        let r = waiter.request
        let result = partition.state.withLock { s -> Result<ReadResult, BrokerError> in
            if let reason = closing ?? s.closedReason {
                if case .shuttingDown = reason {
                    // An ended wait, not an error: the reader retries elsewhere or after restart.
                    return .success(ReadResult(topic: r.topic, partition: r.partition, batches: [], fromOffset: waiter.from, nextOffset: waiter.from,
                                               highWatermark: s.highWatermark, logStartOffset: s.log.logStartOffset, logEndOffset: s.log.logEndOffset))
                }
                return .failure(reason)
            }
            do throws(BrokerError) {
                let from = max(waiter.from, s.log.logStartOffset)
                return .success(try s.read(from: from, maxRecords: r.maxRecords, maxBytes: r.maxBytes, topic: r.topic, partition: r.partition))
            } catch {
                return .failure(error)
            }
        }
        if case .success(let read) = result { count(read) }
        completion(result)
    }

    private func count(_ result: ReadResult) {
        metrics.recordsRead.wrappingAdd(Int(result.nextOffset - result.fromOffset), ordering: .relaxed)
    }

    // MARK: - offsets and cluster

    public func offsets(topic: TopicName, partition id: PartitionID) throws(BrokerError) -> PartitionOffsets {
        if let c = clusterNode { return try c.offsets(TopicPartition(topic, id)) }
        let p = try partition(topic, id)
        let r = p.state.withLock { s -> Result<PartitionOffsets, BrokerError> in
            if let reason = s.closedReason { return .failure(reason) }
            return .success(s.offsets)
        }
        return try r.get()
    }

    /// The earliest offset whose timestamp is at or after `timestamp` (Kafka's ListOffsets), or nil.
    public func offset(topic: TopicName, partition id: PartitionID, forTimestamp timestamp: Int64) throws(BrokerError) -> Offset? {
        if let c = clusterNode { return try c.offset(TopicPartition(topic, id), forTimestamp: timestamp) }
        let p = try partition(topic, id)
        let r = p.state.withLock { s -> Result<Offset?, BrokerError> in
            if let reason = s.closedReason { return .failure(reason) }
            do { return .success(try s.log.firstOffset(atOrAfter: timestamp, below: s.highWatermark)) } catch {
                return .failure(.storage("timestamp lookup on \(p.topicPartition) failed: \(error)"))
            }
        }
        return try r.get()
    }

    public func describeCluster() -> ClusterDescription {
        if let c = clusterNode { return c.describeCluster(version: configuration.version) }
        let (clusterID, topics, partitions) = registry.withLock { r in
            (r.clusterID, r.topics.count, r.topics.values.reduce(0) { $0 + $1.partitions.count })
        }
        let me = BrokerInfo(id: configuration.nodeID, host: configuration.advertisedHost, port: advertisedPort.load(ordering: .relaxed), rack: nil, isAlive: true)
        return ClusterDescription(clusterID: clusterID, controller: configuration.nodeID, brokers: [me], version: configuration.version, topicCount: topics, partitionCount: partitions)
    }

    public var isReady: Bool {
        if let c = clusterNode { return c.isReady }
        return registry.withLock { $0.isOpen } && !isStopping.load(ordering: .relaxed)
    }
    public var parkedRequestsInCluster: Int { clusterNode?.parked.load(ordering: .relaxed) ?? 0 }
    public var parkedRequests: Int { parked.load(ordering: .relaxed) }
}

/// Counters exported on `/metrics`.
public final class BrokerMetrics: Sendable {
    public let recordsProduced = Atomic<Int>(0)
    public let recordsRead = Atomic<Int>(0)
    public init() {}
}

import BrokerModel
import Foundation
import Synchronization
import Testing
@testable import BrokerRuntime

/// A broker on a fresh temporary data directory, stopped and removed at the end.
final class TestBroker {
    let directory: String
    let broker: Broker

    init(retentionCheckMilliseconds: Int64 = 3_600_000, limits: Limits = .defaults) throws {
        directory = NSTemporaryDirectory() + "petrel-runtime-\(UUID().uuidString)"
        var config = BrokerConfiguration()
        config.dataDirectory = directory
        config.retentionCheckIntervalMilliseconds = retentionCheckMilliseconds
        config.limits = limits
        broker = Broker(configuration: config)
        try broker.start()
    }

    func reopen() throws -> Broker {
        broker.shutdown()
        var config = broker.configuration
        config.dataDirectory = directory
        let b = Broker(configuration: config)
        try b.start()
        return b
    }

    deinit {
        broker.shutdown()
        try? FileManager.default.removeItem(atPath: directory)
    }
}

/// Waits for a completion-style call to answer (tests only; the broker itself never blocks).
func waitFor<T: Sendable>(_ call: (@escaping @Sendable (Result<T, BrokerError>) -> Void) -> Void) -> Result<T, BrokerError> {
    let box = Mutex<Result<T, BrokerError>?>(nil)
    let done = DispatchSemaphore(value: 0)
    call { result in
        box.withLock { $0 = result }
        done.signal()
    }
    done.wait()
    return box.withLock { $0! }
}

func produce(_ broker: Broker, _ topic: String, _ records: [ProduceRecord], acks: Acks = .all) -> Result<[RecordPlacement], BrokerError> {
    waitFor { broker.produce(topic: TopicName(topic)!, records: records, acks: acks, completion: $0) }
}

func read(_ broker: Broker, _ topic: String, _ partition: Int32 = 0, _ offset: OffsetSpec = .earliest, max: Int = 1000, wait: Int = 0) -> Result<ReadResult, BrokerError> {
    waitFor { broker.read(ReadRequest(topic: TopicName(topic)!, partition: PartitionID(partition), offset: offset, maxRecords: max, maxBytes: 1 << 20, waitMilliseconds: wait), completion: $0) }
}

func text(_ s: String) -> ProduceRecord { ProduceRecord(value: Array(s.utf8)) }

@Suite struct BrokerTests {
    @Test func producesAndReadsBackInOrder() throws {
        let t = try TestBroker()
        _ = try t.broker.createTopic(name: TopicName("t")!, partitions: 1, replicationFactor: nil, configs: [])
        let placements = try produce(t.broker, "t", (0..<10).map { text("v\($0)") }).get()
        #expect(placements.map(\.offset) == (0..<10).map { Offset(Int64($0)) })
        let result = try read(t.broker, "t").get()
        let records = try result.records()
        #expect(records.map { String(decoding: $0.record.value!, as: UTF8.self) } == (0..<10).map { "v\($0)" })
        #expect(result.nextOffset == Offset(10))
        #expect(result.highWatermark == Offset(10))
    }

    @Test func maxRecordsEndsTheAnswerInsideABatch() throws {
        let t = try TestBroker()
        _ = try t.broker.createTopic(name: TopicName("t")!, partitions: 1, replicationFactor: nil, configs: [])
        _ = try produce(t.broker, "t", (0..<10).map { text("v\($0)") }).get()
        let first = try read(t.broker, "t", max: 3).get()
        #expect(try first.records().map(\.offset.rawValue) == [0, 1, 2])
        #expect(first.nextOffset == Offset(3))
        let second = try read(t.broker, "t", 0, .exact(first.nextOffset), max: 100).get()
        #expect(try second.records().map(\.offset.rawValue) == Array(3..<10))
    }

    @Test func keyedRecordsFollowMurmur2AndExplicitPartitionsAreKept() throws {
        let t = try TestBroker()
        _ = try t.broker.createTopic(name: TopicName("t")!, partitions: 6, replicationFactor: nil, configs: [])
        for key in ["a", "order-17", "user-42"] {
            let p = try produce(t.broker, "t", [ProduceRecord(key: Array(key.utf8), value: [1])]).get()
            #expect(p[0].partition == Murmur2.partition(forKey: Array(key.utf8), partitionCount: 6))
        }
        let p = try produce(t.broker, "t", [ProduceRecord(partition: PartitionID(5), value: [1])]).get()
        #expect(p[0].partition == PartitionID(5))
        if case .failure(let e) = produce(t.broker, "t", [ProduceRecord(partition: PartitionID(6), value: [1])]) {
            #expect(e.httpStatus == 404)
        } else {
            Issue.record("partition 6 of 6 must be rejected")
        }
    }

    @Test func longPollReturnsWhenARecordArrives() throws {
        let t = try TestBroker()
        _ = try t.broker.createTopic(name: TopicName("t")!, partitions: 1, replicationFactor: nil, configs: [])
        let got = Mutex<ReadResult?>(nil)
        let done = DispatchSemaphore(value: 0)
        t.broker.read(ReadRequest(topic: TopicName("t")!, partition: PartitionID(0), offset: .latest, maxRecords: 10, maxBytes: 1 << 20, waitMilliseconds: 60_000)) { r in
            got.withLock { $0 = try? r.get() }
            done.signal()
        }
        #expect(t.broker.parkedRequests == 1)
        _ = try produce(t.broker, "t", [text("wake")]).get()
        done.wait()
        let result = try #require(got.withLock { $0 })
        #expect(try result.records().map(\.record.value) == [Array("wake".utf8)])
        #expect(t.broker.parkedRequests == 0)
    }

    @Test func longPollEndsEmptyAfterItsWait() throws {
        let t = try TestBroker()
        _ = try t.broker.createTopic(name: TopicName("t")!, partitions: 1, replicationFactor: nil, configs: [])
        let result = try read(t.broker, "t", 0, .latest, wait: 50).get()
        #expect(result.batches.isEmpty)
        #expect(result.nextOffset == Offset(0))
    }

    @Test func shutdownAnswersParkedReaders() throws {
        let t = try TestBroker()
        _ = try t.broker.createTopic(name: TopicName("t")!, partitions: 1, replicationFactor: nil, configs: [])
        let answered = Atomic<Int>(0)
        let group = DispatchGroup()
        for _ in 0..<20 {
            group.enter()
            t.broker.read(ReadRequest(topic: TopicName("t")!, partition: PartitionID(0), offset: .latest, maxRecords: 10, maxBytes: 1024, waitMilliseconds: 60_000)) { r in
                if case .success = r { answered.wrappingAdd(1, ordering: .relaxed) }
                group.leave()
            }
        }
        t.broker.shutdown()
        group.wait()
        #expect(answered.load(ordering: .relaxed) == 20)
    }

    @Test func offsetOutsideTheLogNamesTheRange() throws {
        let t = try TestBroker()
        _ = try t.broker.createTopic(name: TopicName("t")!, partitions: 1, replicationFactor: nil, configs: [])
        _ = try produce(t.broker, "t", [text("a"), text("b")]).get()
        guard case .failure(let e) = read(t.broker, "t", 0, .exact(Offset(3))) else {
            Issue.record("offset 3 past the end must fail")
            return
        }
        #expect(e == .offsetOutOfRange(requested: 3, logStart: 0, logEnd: 2))
        // The log end itself is valid: it is where the next record goes.
        #expect(try read(t.broker, "t", 0, .exact(Offset(2))).get().batches.isEmpty)
    }

    @Test func topicAdministration() throws {
        let t = try TestBroker()
        let name = TopicName("admin")!
        let created = try t.broker.createTopic(name: name, partitions: 2, replicationFactor: 1, configs: [("retention.ms", "1000")])
        #expect(created.partitions.count == 2)
        #expect(created.config.retentionMilliseconds == 1000)
        #expect(throws: BrokerError.topicExists("admin")) { try t.broker.createTopic(name: name, partitions: 1, replicationFactor: nil, configs: []) }
        #expect(throws: BrokerError.self) { try t.broker.createTopic(name: TopicName("x")!, partitions: 1, replicationFactor: 3, configs: []) }
        #expect(throws: BrokerError.self) { try t.broker.createTopic(name: TopicName("y")!, partitions: 1, replicationFactor: nil, configs: [("bogus", "1")]) }
        let grown = try t.broker.alterTopic(name, configs: [("segment.bytes", "2097152")], partitions: 4)
        #expect(grown.partitions.count == 4)
        #expect(grown.config.segmentBytes == 2_097_152)
        #expect(throws: BrokerError.self) { try t.broker.alterTopic(name, configs: [], partitions: 3) }
        #expect(t.broker.listTopics() == [name])
        try t.broker.deleteTopic(name)
        #expect(t.broker.listTopics().isEmpty)
        #expect(throws: BrokerError.unknownTopic("admin")) { try t.broker.describeTopic(name) }
    }

    @Test func topicsAndRecordsSurviveARestart() throws {
        let t = try TestBroker()
        _ = try t.broker.createTopic(name: TopicName("keep")!, partitions: 3, replicationFactor: nil, configs: [("retention.bytes", "123456789")])
        _ = try produce(t.broker, "keep", (0..<5).map { ProduceRecord(partition: PartitionID(1), value: [UInt8($0)]) }).get()
        let again = try t.reopen()
        defer { again.shutdown() }
        let d = try again.describeTopic(TopicName("keep")!)
        #expect(d.partitions.count == 3)
        #expect(d.config.retentionBytes == 123_456_789)
        let records = try (try waitFor { again.read(ReadRequest(topic: TopicName("keep")!, partition: PartitionID(1), offset: .earliest, maxRecords: 100, maxBytes: 1 << 20, waitMilliseconds: 0), completion: $0) }.get()).records()
        #expect(records.map(\.record.value) == (0..<5).map { [UInt8($0)] })
    }

    @Test func acksZeroAndOneAnswerWithoutWaitingForDurability() throws {
        let t = try TestBroker()
        _ = try t.broker.createTopic(name: TopicName("t")!, partitions: 1, replicationFactor: nil, configs: [])
        let zero = try produce(t.broker, "t", [text("a")], acks: .none).get()
        #expect(zero[0].offset == nil)
        let one = try produce(t.broker, "t", [text("b")], acks: .leader).get()
        #expect(one[0].offset == Offset(1))
    }

    @Test func oversizeRecordsAreRejectedAndLargeRequestsSplitIntoBatches() throws {
        let t = try TestBroker()
        _ = try t.broker.createTopic(name: TopicName("t")!, partitions: 1, replicationFactor: nil, configs: [("max.message.bytes", "10000")])
        guard case .failure(let e) = produce(t.broker, "t", [ProduceRecord(value: [UInt8](repeating: 1, count: 20_000))]) else {
            Issue.record("a record over max.message.bytes must be rejected")
            return
        }
        #expect(e.httpStatus == 413)
        let many = (0..<100).map { _ in ProduceRecord(value: [UInt8](repeating: 2, count: 500)) }
        let placements = try produce(t.broker, "t", many).get()
        #expect(placements.map(\.offset) == (0..<100).map { Offset(Int64($0)) })
        let result = try read(t.broker, "t", max: 1000).get()
        #expect(result.batches.count > 1)
        #expect(result.batches.allSatisfy { $0.sizeBytes <= 10_000 })
        #expect(try result.records().count == 100)
    }

    @Test func parkedRequestsAreLimited() throws {
        var limits = Limits.defaults
        limits.parkedRequestsMax = 2
        let t = try TestBroker(limits: limits)
        _ = try t.broker.createTopic(name: TopicName("t")!, partitions: 1, replicationFactor: nil, configs: [])
        let group = DispatchGroup()
        for _ in 0..<2 {
            group.enter()
            t.broker.read(ReadRequest(topic: TopicName("t")!, partition: PartitionID(0), offset: .latest, maxRecords: 1, maxBytes: 1024, waitMilliseconds: 60_000)) { _ in group.leave() }
        }
        guard case .failure(let e) = read(t.broker, "t", 0, .latest, wait: 60_000) else {
            Issue.record("a third parked read must be refused")
            return
        }
        #expect(e.httpStatus == 429)
        t.broker.shutdown()
        group.wait()
    }
}

import Foundation
import Glibc

/// The stream workloads' part of a repetition (issue #6): measure, record with client and broker CPU.
extension BenchmarkRun {
    /// Client CPU, broker CPU and the 1-minute load average around one measurement.
    func cpuDetails(clientBefore: Double, serverBefore: Double?, seconds: Double, units: Int, load1: Double) -> [String: Double] {
        [
            "seconds": seconds, "clientCPUPercentOfOneCore": 100 * (processCPUSeconds() - clientBefore) / seconds,
            "clientCPUMicrosecondsPerRecord": 1e6 * (processCPUSeconds() - clientBefore) / Double(max(units, 1)),
            "load1Before": load1,
        ].merging(serverCPUDetails(since: serverBefore, seconds: seconds, units: units)) { a, _ in a }
    }

    /// ws-consume and sse-consume, both reading `topic` (the W1 topic W2 read) from offset 0.
    func streamConsume(recorder: Recorder, workloads: Workloads, topic: String) throws {
        let expected = options.w1Records
        if selected("ws-consume") {
            let busy = quiet()
            let load1 = LoadGate.load1()
            let clientBefore = processCPUSeconds()
            let serverBefore = brokerCPU()
            let r = try workloads.webSocketConsume(
                topic: topic, expected: expected, maxRecords: options.streamMaxRecords, maxBytes: options.streamMaxBytes, credit: options.wsCredit)
            var details = cpuDetails(clientBefore: clientBefore, serverBefore: serverBefore, seconds: r.seconds, units: r.records, load1: load1)
            details["messages"] = Double(r.messages)
            details["records"] = Double(r.records)
            recorder.add(
                id: "ws-consume", workload: "ws-consume WebSocket read from offset 0", metric: "records/s", unit: "rec/s",
                client: "raw-socket WebSocket client, 1 socket, max_records=\(options.streamMaxRecords), credit \(options.wsCredit) topped up below half",
                notes: "\(expected) records (the W2 topic) counted and checked against next_offset; first credit to last record",
                value: r.recordsPerSecond, busy: busy, details: details)
        }
        if selected("sse-consume") {
            let busy = quiet()
            let load1 = LoadGate.load1()
            let clientBefore = processCPUSeconds()
            let serverBefore = brokerCPU()
            let r = try workloads.sseConsume(topic: topic, expected: expected, maxRecords: options.streamMaxRecords, maxBytes: options.streamMaxBytes)
            var details = cpuDetails(clientBefore: clientBefore, serverBefore: serverBefore, seconds: r.seconds, units: r.records, load1: load1)
            details["records"] = Double(r.records)
            recorder.add(
                id: "sse-consume", workload: "sse-consume SSE stream from offset 0", metric: "records/s", unit: "rec/s",
                client: "raw-socket HTTP client, 1 conn, max_records=\(options.streamMaxRecords), stream_limit=\(expected)",
                notes: "\(expected) record events (the W2 topic) counted, last id checked; request to end of stream",
                value: r.recordsPerSecond, busy: busy, details: details)
        }
    }

    func webSocketLatency(recorder: Recorder, workloads: Workloads, topic: String) throws {
        let busy = quiet()
        let load1 = LoadGate.load1()
        let clientBefore = processCPUSeconds()
        let serverBefore = brokerCPU()
        let started = monotonicNanoseconds()
        let r = try workloads.webSocketLatency(
            topic: topic, messages: options.wsLatencyMessages, intervalMilliseconds: options.wsLatencyIntervalMilliseconds, acks: options.wsLatencyAcks)
        let seconds = Double(monotonicNanoseconds() - started) / 1e9
        var details = cpuDetails(clientBefore: clientBefore, serverBefore: serverBefore, seconds: seconds, units: r.latencies.count, load1: load1)
        details["recordsMessages"] = Double(r.recordsMessages)
        details["received"] = Double(r.latencies.count)
        let client = "raw-socket WebSocket clients: producer socket (acks=\(options.wsLatencyAcks), waits for each ack), consumer socket with credit for all"
        let notes = "\(options.wsLatencyMessages) one-record messages \(format(options.wsLatencyIntervalMilliseconds)) ms apart; consumer recv - CLOCK_MONOTONIC stamp"
        let title = "ws-latency producer -> WebSocket consumer"
        recorder.add(id: "ws-latency-p50", workload: title, metric: "p50", unit: "ms", client: client, notes: notes, value: Stats.percentile(r.latencies, 50), busy: busy, details: details, samples: r.latencies)
        recorder.add(id: "ws-latency-p99", workload: title, metric: "p99", unit: "ms", client: client, notes: notes, value: Stats.percentile(r.latencies, 99), busy: busy, details: details)
        recorder.add(id: "ws-latency-max", workload: title, metric: "max", unit: "ms", client: client, notes: notes, value: r.latencies.max() ?? .nan, busy: busy, details: details)
        let ackTitle = "ws-latency producer's send -> ack (acks=\(options.wsLatencyAcks))"
        recorder.add(id: "ws-latency-ack-p50", workload: ackTitle, metric: "p50", unit: "ms", client: client, notes: notes, value: Stats.percentile(r.ackLatencies, 50), busy: .nan)
        recorder.add(id: "ws-latency-ack-p99", workload: ackTitle, metric: "p99", unit: "ms", client: client, notes: notes, value: Stats.percentile(r.ackLatencies, 99), busy: .nan)
    }

    func webSocketProduce(recorder: Recorder, workloads: Workloads, topic: String) throws {
        let busy = quiet()
        let load1 = LoadGate.load1()
        let clientBefore = processCPUSeconds()
        let serverBefore = brokerCPU()
        let r = try workloads.webSocketProduce(
            topic: topic, messages: options.wsProduceMessages, connections: options.wsProduceConnections, window: options.wsWindow,
            acks: options.wsProduceAcks)
        var details = cpuDetails(clientBefore: clientBefore, serverBefore: serverBefore, seconds: r.seconds, units: r.messages, load1: load1)
        details["messages"] = Double(r.messages)
        details["payloadMBps"] = r.messagesPerSecond * Double(recordValueBytes) / 1e6
        recorder.add(
            id: "ws-produce", workload: "ws-produce one record per message, ack per message, acks=\(options.wsProduceAcks)", metric: "messages/s",
            unit: "msg/s",
            client: "raw-socket WebSocket client, \(options.wsProduceConnections) socket(s) x \(options.wsWindow) in flight, 1 thread each",
            notes: "\(options.wsProduceMessages) x \(recordValueBytes) B records; every offset acked once; first send to last ack",
            value: r.messagesPerSecond, busy: busy, details: details)
    }
}

/// The brief's quiet-machine check before each repetition: the 1-minute load average below a bound
/// (bounded wait), with `top` logged so the record shows what else ran.
enum LoadGate {
    static func load1() -> Double { Double(MachineFacts.loadAverage()) ?? .nan }

    static func wait(below threshold: Double, maxSeconds: Double) {
        let start = monotonicNanoseconds()
        while true {
            let load = load1()
            let waited = Double(monotonicNanoseconds() - start) / 1e9
            if load < threshold || waited >= maxSeconds {
                log("load1 \(load) (threshold \(threshold), waited \(Int(waited)) s)\(load < threshold ? "" : "; still busy, measuring anyway")")
                log("top before this repetition:\n" + top())
                return
            }
            if Int(waited) % 60 < 10 { log("load1 \(load) >= \(threshold); waiting") }
            sleep(10)
        }
    }

    static func top() -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", "top -bn1 | head -15"]
        let pipe = Pipe()
        process.standardOutput = pipe
        guard (try? process.run()) != nil else { return "(top failed)" }
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return output
    }
}

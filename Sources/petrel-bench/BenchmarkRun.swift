import Foundation
import Glibc

/// One benchmark run: every repetition of every selected workload, then the summary and the JSON file.
struct BenchmarkRun {
    let options: RunOptions
    let broker: Endpoint
    let baseline: Endpoint?
    let brokerPID: Int32?
    let baselinePID: Int32?

    func selected(_ name: String) -> Bool {
        guard let only = options.only else { return true }
        return only.split(separator: ",").contains { $0.trimmingCharacters(in: .whitespaces) == name }
    }

    func quiet() -> Double {
        CPUBusy.waitQuiet(maxWaitSeconds: options.quietWaitSeconds, thresholdPercent: options.quietPercent)
    }

    func execute() throws {
        let workloads = Workloads(broker: broker)
        let recorder = Recorder()
        let runID = "\(getpid())-\(time(nil) % 1_000_000)"
        let machine = MachineFacts.collect()
        var cluster = workloads.clusterDescription()
        // A broker that has just printed its address may need a moment before it answers.
        for _ in 0..<50 where cluster.isEmpty {
            usleep(100_000)
            cluster = workloads.clusterDescription()
        }
        guard !cluster.isEmpty else { throw BenchError("no broker answers GET /v1/cluster at \(broker)") }
        log("petrel-bench: broker \(broker)\(baseline.map { ", baseline \($0)" } ?? ""); \(options.reps) repetitions; \(machine.nproc) CPUs; kernel \(machine.kernel)")
        let w1Client = "raw-socket client, \(options.w1Connections) conns x 1 NDJSON request of \(options.w1Batch) in flight"
        var topicsToDelete: [String] = []
        defer { for topic in topicsToDelete { workloads.deleteTopic(topic) } }

        for rep in 1...options.reps {
            log("repetition \(rep) of \(options.reps)")
            if let maxLoad1 = options.maxLoad1 { LoadGate.wait(below: maxLoad1, maxSeconds: options.loadWaitSeconds) }
            var readTopic: String?
            for (variant, acks) in [("w1a", "1"), ("w1b", "all")] where selected(variant) {
                let topic = "bench-\(runID)-\(variant)-\(rep)"
                try workloads.createTopic(topic)
                topicsToDelete.append(topic)
                let busy = quiet()
                let cpuBefore = processCPUSeconds()
                let serverBefore = brokerCPU()
                let r = try workloads.batchedProduce(
                    topic: topic, records: options.w1Records, batch: options.w1Batch, connections: options.w1Connections, acks: acks)
                let title = variant == "w1a" ? "W1a produce acks=1 (page cache)" : "W1b produce acks=all (fsync, group commit)"
                recorder.add(
                    id: variant, workload: title, metric: "records/s", unit: "rec/s", client: w1Client,
                    notes: "\(options.w1Records) x \(recordValueBytes) B records, 1 partition, first send to last ack",
                    value: r.recordsPerSecond, busy: busy,
                    details: [
                        "seconds": r.seconds, "records": Double(r.recordsAcked), "payloadMBps": r.recordsPerSecond * Double(recordValueBytes) / 1e6,
                        "clientCPUPercentOfOneCore": 100 * (processCPUSeconds() - cpuBefore) / r.seconds,
                    ].merging(serverCPUDetails(since: serverBefore, seconds: r.seconds, units: r.recordsAcked)) { a, _ in a })
                readTopic = topic  // W2 reads the last one written (acks=all when both run: all durable)
            }
            if selected("w2") {
                var topic = readTopic
                if topic == nil {
                    let fill = "bench-\(runID)-w2-\(rep)"
                    try workloads.createTopic(fill)
                    topicsToDelete.append(fill)
                    _ = try workloads.batchedProduce(
                        topic: fill, records: options.w1Records, batch: options.w1Batch, connections: options.w1Connections, acks: "all")
                    topic = fill
                    readTopic = fill
                }
                let busy = quiet()
                let cpuBefore = processCPUSeconds()
                let serverBefore = brokerCPU()
                let r = try workloads.readBack(topic: topic!, expected: options.w1Records, maxRecords: options.w2MaxRecords, maxBytes: options.w2MaxBytes)
                recorder.add(
                    id: "w2", workload: "W2 read back from offset 0", metric: "records/s", unit: "rec/s",
                    client: "raw-socket client, 1 conn, max_records=\(options.w2MaxRecords)",
                    notes: "\(options.w1Records) records verified (count and next_offset)", value: r.recordsPerSecond, busy: busy,
                    details: [
                        "seconds": r.seconds, "records": Double(r.records), "requests": Double(r.requests),
                        "clientCPUPercentOfOneCore": 100 * (processCPUSeconds() - cpuBefore) / r.seconds,
                    ].merging(serverCPUDetails(since: serverBefore, seconds: r.seconds, units: r.records)) { a, _ in a })
            }
            if selected("ws-consume") || selected("sse-consume") {
                if readTopic == nil {
                    let fill = "bench-\(runID)-streams-\(rep)"
                    try workloads.createTopic(fill)
                    topicsToDelete.append(fill)
                    _ = try workloads.batchedProduce(
                        topic: fill, records: options.w1Records, batch: options.w1Batch, connections: options.w1Connections, acks: "all")
                    readTopic = fill
                }
                try streamConsume(recorder: recorder, workloads: workloads, topic: readTopic!)
            }
            if selected("controls") {
                let busy = quiet()
                let fsync = try Workloads.appendFsyncLatencies(directory: options.fsyncDirectory, count: options.w3Calls)
                let notes = "\(options.w3Calls) x (4 KiB write + fdatasync) on a growing file in \(options.fsyncDirectory)"
                recorder.add(id: "fsync-p50", workload: "control: disk append+fdatasync", metric: "p50", unit: "ms", client: "in-process loop", notes: notes, value: Stats.percentile(fsync, 50), busy: busy)
                recorder.add(id: "fsync-p99", workload: "control: disk append+fdatasync", metric: "p99", unit: "ms", client: "in-process loop", notes: notes, value: Stats.percentile(fsync, 99), busy: busy)
                if let baseline {
                    let busy = quiet()
                    let rtt = try Workloads.roundTripLatencies(endpoint: baseline, count: options.w3Calls)
                    let notes = "\(options.w3Calls) sequential 100-byte POSTs to the baseline server"
                    recorder.add(id: "rtt-p50", workload: "control: HTTP round trip to the bare MHD baseline", metric: "p50", unit: "ms", client: "raw-socket client, 1 conn", notes: notes, value: Stats.percentile(rtt, 50), busy: busy)
                    recorder.add(id: "rtt-p99", workload: "control: HTTP round trip to the bare MHD baseline", metric: "p99", unit: "ms", client: "raw-socket client, 1 conn", notes: notes, value: Stats.percentile(rtt, 99), busy: busy)
                }
            }
            if selected("w3") {
                let topic = "bench-\(runID)-w3-\(rep)"
                try workloads.createTopic(topic)
                topicsToDelete.append(topic)
                let busy = quiet()
                let latencies = try workloads.singleProduceLatencies(topic: topic, calls: options.w3Calls, acks: "all")
                let client = "raw-socket client, 1 conn, text/plain body"
                let notes = "\(options.w3Calls) single-record acks=all produces, one at a time"
                recorder.add(id: "w3-p50", workload: "W3 produce latency acks=all", metric: "p50", unit: "ms", client: client, notes: notes, value: Stats.percentile(latencies, 50), busy: busy, samples: latencies)
                recorder.add(id: "w3-p99", workload: "W3 produce latency acks=all", metric: "p99", unit: "ms", client: client, notes: notes, value: Stats.percentile(latencies, 99), busy: busy)
                recorder.add(id: "w3-max", workload: "W3 produce latency acks=all", metric: "max", unit: "ms", client: client, notes: notes, value: latencies.max() ?? .nan, busy: busy)
            }
            if selected("w4") {
                let topic = "bench-\(runID)-w4-\(rep)"
                try workloads.createTopic(topic)
                topicsToDelete.append(topic)
                let busy = quiet()
                let r = try workloads.endToEnd(topic: topic, messages: options.w4Messages, intervalMilliseconds: 5, waitMilliseconds: options.w4WaitMilliseconds)
                let client = "raw-socket client; reader thread long-polls wait_ms=\(options.w4WaitMilliseconds) on its own conn"
                let notes = "\(options.w4Messages) acks=all produces 5 ms apart; receive - CLOCK_MONOTONIC stamp"
                let details = ["readRequests": Double(r.readRequests), "received": Double(r.latencies.count)]
                recorder.add(id: "w4-p50", workload: "W4 produce -> long-poll latency", metric: "p50", unit: "ms", client: client, notes: notes, value: Stats.percentile(r.latencies, 50), busy: busy, details: details, samples: r.latencies)
                recorder.add(id: "w4-p99", workload: "W4 produce -> long-poll latency", metric: "p99", unit: "ms", client: client, notes: notes, value: Stats.percentile(r.latencies, 99), busy: busy, details: details)
                recorder.add(id: "w4-max", workload: "W4 produce -> long-poll latency", metric: "max", unit: "ms", client: client, notes: notes, value: r.latencies.max() ?? .nan, busy: busy, details: details)
            }
            if selected("ws-latency") {
                let topic = "bench-\(runID)-wslat-\(rep)"
                try workloads.createTopic(topic)
                topicsToDelete.append(topic)
                try webSocketLatency(recorder: recorder, workloads: workloads, topic: topic)
            }
            if selected("rps") {
                let topic = "bench-\(runID)-rps-\(rep)"
                try workloads.createTopic(topic)
                topicsToDelete.append(topic)
                let body = [UInt8](repeating: UInt8(ascii: "x"), count: recordValueBytes)
                let brokerRequest = RequestBytes(
                    method: "POST", path: "/v1/topics/\(topic)/records?partition=0&acks=1", host: broker.description,
                    contentType: "text/plain", body: body)
                let brokerRate = try requestsPerSecond(
                    recorder: recorder, id: "rps-petrel", target: "Petrel (single-record produce acks=1)", endpoint: broker,
                    request: brokerRequest, serverPID: brokerPID)
                if let baseline {
                    let baselineRequest = RequestBytes(
                        method: "POST", path: "/v1/topics/\(topic)/records?partition=0&acks=1", host: baseline.description,
                        contentType: "text/plain", body: body)
                    let baselineRate = try requestsPerSecond(
                        recorder: recorder, id: "rps-baseline", target: "bare libmicrohttpd baseline (same request)", endpoint: baseline,
                        request: baselineRequest, serverPID: baselinePID)
                    recorder.add(
                        id: "rps-ratio", workload: "single-record produce acks=1 vs baseline", metric: "ratio", unit: "x",
                        client: "poll client", notes: "Petrel req/s / baseline req/s, same repetition", value: brokerRate / baselineRate, busy: .nan)
                }
                if options.wrk {
                    let wrkBroker = try wrkRequestsPerSecond(
                        recorder: recorder, id: "rps-petrel-wrk", target: "Petrel (single-record produce acks=1)", endpoint: broker,
                        path: "/v1/topics/\(topic)/records?partition=0&acks=1", serverPID: brokerPID)
                    if let baseline {
                        let wrkBaseline = try wrkRequestsPerSecond(
                            recorder: recorder, id: "rps-baseline-wrk", target: "bare libmicrohttpd baseline (same request)",
                            endpoint: baseline, path: "/v1/topics/\(topic)/records?partition=0&acks=1", serverPID: baselinePID)
                        recorder.add(
                            id: "rps-ratio-wrk", workload: "single-record produce acks=1 vs baseline", metric: "ratio", unit: "x",
                            client: "wrk", notes: "Petrel req/s / baseline req/s, same repetition", value: wrkBroker / wrkBaseline, busy: .nan)
                    }
                }
            }
            if selected("ws-produce") {
                let topic = "bench-\(runID)-wsprod-\(rep)"
                try workloads.createTopic(topic)
                topicsToDelete.append(topic)
                try webSocketProduce(recorder: recorder, workloads: workloads, topic: topic)
            }
            // Free the disk as we go; W2 has read what it needed.
            for topic in topicsToDelete { workloads.deleteTopic(topic) }
            topicsToDelete.removeAll()
        }

        recorder.setTarget("w1b", ">= 250,000 rec/s") { $0 >= 250_000 }
        recorder.setTarget("w2", ">= 700,000 rec/s") { $0 >= 700_000 }
        recorder.setTarget("w3-p99", "<= 0.5 ms") { $0 <= 0.5 }
        recorder.setTarget("w4-p99", "<= 1 ms") { $0 <= 1 }
        recorder.setTarget("ws-produce", ">= 100,000 msg/s") { $0 >= 100_000 }
        recorder.setTarget("ws-consume", ">= 500,000 rec/s") { $0 >= 500_000 }
        recorder.setTarget("sse-consume", ">= 500,000 rec/s") { $0 >= 500_000 }
        recorder.setTarget("ws-latency-p99", "<= 1 ms") { $0 <= 1 }
        recorder.setTarget("rps-ratio", ">= 0.5 x baseline") { $0 >= 0.5 }
        recorder.setTarget("rps-ratio-wrk", ">= 0.5 x baseline") { $0 >= 0.5 }
        let measurements = recorder.measurements()
        ReportPrinter.printSummary(measurements, reps: options.reps)
        Peers.printComparison(measurements, peers: Peers.load(directory: options.peers))
        if let jsonl = options.jsonl {
            try Peers.writeJSONL(measurements, load1: MachineFacts.loadAverage(), to: jsonl)
            log("wrote \(jsonl)")
        }

        if let out = options.out {
            var settings: [String: String] = [
                "reps": "\(options.reps)", "w1Records": "\(options.w1Records)", "w1Batch": "\(options.w1Batch)",
                "w1Connections": "\(options.w1Connections)", "w2MaxRecords": "\(options.w2MaxRecords)", "w2MaxBytes": "\(options.w2MaxBytes)",
                "w3Calls": "\(options.w3Calls)", "w4Messages": "\(options.w4Messages)", "w4WaitMs": "\(options.w4WaitMilliseconds)",
                "rpsConnections": "\(options.rpsConnections)", "rpsSeconds": "\(options.rpsSeconds)", "loadThreads": "\(options.loadThreads)",
                "valueBytes": "\(recordValueBytes)",
                "wsProduceMessages": "\(options.wsProduceMessages)", "wsProduceConnections": "\(options.wsProduceConnections)",
                "wsWindow": "\(options.wsWindow)", "wsProduceAcks": options.wsProduceAcks, "streamMaxRecords": "\(options.streamMaxRecords)",
                "streamMaxBytes": "\(options.streamMaxBytes)", "wsCredit": "\(options.wsCredit)",
                "wsLatencyMessages": "\(options.wsLatencyMessages)", "wsLatencyIntervalMs": "\(options.wsLatencyIntervalMilliseconds)",
                "wsLatencyAcks": options.wsLatencyAcks,
            ]
            if let only = options.only { settings["only"] = only }
            let report = Report(
                command: CommandLine.arguments.joined(separator: " "), machine: machine, broker: broker.description,
                baseline: baseline?.description, cluster: cluster, settings: settings, measurements: measurements,
                failures: recorder.failures, finished: ISO8601DateFormatter().string(from: Date()))
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
            try encoder.encode(report).write(to: URL(fileURLWithPath: out))
            log("wrote \(out)")
        }
    }

    func brokerCPU() -> Double? { brokerPID.flatMap(cpuSeconds(ofProcess:)) }

    /// The broker's CPU over a measurement: less sensitive to other load on the box than rates are.
    func serverCPUDetails(since before: Double?, seconds: Double, units: Int) -> [String: Double] {
        guard let before, let after = brokerCPU(), units > 0 else { return [:] }
        return [
            "serverCPUPercentOfOneCore": 100 * (after - before) / seconds,
            "serverCPUMicrosecondsPerRecord": 1e6 * (after - before) / Double(units),
        ]
    }

    /// Closed-loop req/s with our poll client; records req/s and returns it.
    func requestsPerSecond(recorder: Recorder, id: String, target: String, endpoint: Endpoint, request: RequestBytes, serverPID: Int32?) throws -> Double {
        let busy = quiet()
        let serverBefore = serverPID.flatMap(cpuSeconds(ofProcess:))
        let machineBefore = CPUBusy.times()
        let r = try LoadGenerator.run(
            endpoint: endpoint, request: request, connections: options.rpsConnections, threads: options.loadThreads, seconds: options.rpsSeconds)
        let machineBusy = CPUBusy.between(machineBefore, CPUBusy.times())
        guard r.failed == 0, r.completed > 0 else {
            throw BenchError("req/s against \(endpoint): \(r.failed) failed, \(r.completed) completed; first failure: \(r.firstFailure ?? "none")")
        }
        var details: [String: Double] = [
            "requests": Double(r.completed), "seconds": r.seconds,
            "clientCPUPercentOfOneCore": 100 * r.clientCPUSeconds / r.seconds,
            "clientCPUMicrosecondsPerRequest": 1e6 * r.clientCPUSeconds / Double(r.completed),
            "machineBusyPercentDuring": machineBusy,
            "latencyP50Ms": Stats.percentile(r.latenciesMilliseconds, 50),
            "latencyP99Ms": Stats.percentile(r.latenciesMilliseconds, 99),
        ]
        if let serverPID, let before = serverBefore, let after = cpuSeconds(ofProcess: serverPID) {
            details["serverCPUMicrosecondsPerRequest"] = 1e6 * (after - before) / Double(r.completed)
            details["serverCPUPercentOfOneCore"] = 100 * (after - before) / r.seconds
        }
        recorder.add(
            id: id, workload: "req/s: \(target)", metric: "req/s", unit: "req/s",
            client: "poll client, \(options.loadThreads) thread(s), \(options.rpsConnections) keep-alive conns",
            notes: "100-byte POST, \(options.rpsSeconds) s", value: r.requestsPerSecond, busy: busy, details: details)
        log(
            "    client CPU \(format(details["clientCPUPercentOfOneCore"]!))% of a core (\(format(details["clientCPUMicrosecondsPerRequest"]!)) us/req)"
                + (details["serverCPUMicrosecondsPerRequest"].map { ", server \(format($0)) us/req" } ?? "")
                + ", machine \(format(machineBusy))% busy, p50 \(format(details["latencyP50Ms"]!)) ms, p99 \(format(details["latencyP99Ms"]!)) ms")
        return r.requestsPerSecond
    }

    /// The same load driven by wrk (C, epoll), to show whether our client limits the rate.
    func wrkRequestsPerSecond(recorder: Recorder, id: String, target: String, endpoint: Endpoint, path: String, serverPID: Int32?) throws -> Double {
        let script = """
            wrk.method = "POST"
            wrk.body = string.rep("x", \(recordValueBytes))
            wrk.headers["Content-Type"] = "text/plain"
            """
        let scriptPath = NSTemporaryDirectory() + "petrel-bench-\(getpid()).lua"
        try script.write(toFile: scriptPath, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: scriptPath) }
        let busy = quiet()
        let serverBefore = serverPID.flatMap(cpuSeconds(ofProcess:))
        let childBefore = childrenCPUSeconds()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/wrk")
        process.arguments = [
            "-t\(options.loadThreads)", "-c\(options.rpsConnections)", "-d\(Int(options.rpsSeconds.rounded()))s", "-s", scriptPath,
            "\(endpoint)\(path)",
        ]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        let wrkCPU = childrenCPUSeconds() - childBefore
        guard process.terminationStatus == 0,
            let line = output.split(separator: "\n").first(where: { $0.hasPrefix("Requests/sec:") }),
            let rate = Double(line.dropFirst("Requests/sec:".count).trimmingCharacters(in: .whitespaces))
        else { throw BenchError("wrk failed: \(output)") }
        if let bad = output.split(separator: "\n").first(where: { $0.contains("Non-2xx") || $0.contains("Socket errors") }) {
            throw BenchError("wrk against \(endpoint): \(bad)")
        }
        var details: [String: Double] = [
            "clientCPUPercentOfOneCore": 100 * wrkCPU / options.rpsSeconds,
            "clientCPUMicrosecondsPerRequest": 1e6 * wrkCPU / (rate * options.rpsSeconds),
        ]
        if let serverPID, let before = serverBefore, let after = cpuSeconds(ofProcess: serverPID) {
            details["serverCPUMicrosecondsPerRequest"] = 1e6 * (after - before) / (rate * options.rpsSeconds)
        }
        recorder.add(
            id: id, workload: "req/s: \(target)", metric: "req/s", unit: "req/s",
            client: "wrk -t\(options.loadThreads) -c\(options.rpsConnections), Lua POST", notes: "100-byte POST, \(options.rpsSeconds) s",
            value: rate, busy: busy, details: details)
        log("    wrk CPU \(format(details["clientCPUPercentOfOneCore"]!))% of a core (\(format(details["clientCPUMicrosecondsPerRequest"]!)) us/req)")
        return rate
    }
}

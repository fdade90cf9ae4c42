import ArgumentParser
import CMicroHTTPD
import Foundation
import Glibc

@main
struct PetrelBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "petrel-bench",
        abstract: "Petrel's numbers next to the peers' (workloads W1-W4 of /work/shared/bench/peers/README.md).",
        discussion: """
            A benchmark, not a test: it prints numbers and checks only that the
            broker answered correctly. Every repetition uses fresh one-partition
            topics and 100-byte values; before each, busy% is sampled from
            /proc/stat over 0.5 s (waiting up to --quiet-wait for a quiet box).
            W1a/W1b: --w1-records records as NDJSON requests of --w1-batch,
              acks=1 / acks=all, over --w1-connections keep-alive connections
              with one request in flight each; records/s from first send to
              last ack (every ack must list every offset).
            W2: the W1b topic read from offset 0, max_records=--w2-max-records,
              one connection; records/s; count and next_offset verified.
            controls: --w3-calls x (4 KiB append + fdatasync) and sequential
              POSTs to the baseline: the disk and HTTP floors under W3/W4.
            W3: --w3-calls single-record acks=all produces, one at a time.
            W4: a reader thread long-polls (wait_ms) on its own connection
              following next_offset; --w4-messages acks=all produces 5 ms
              apart carry a CLOCK_MONOTONIC stamp; latency = receive - stamp.
            ws-consume: the W1 topic over a consume WebSocket from offset 0,
              credit --ws-credit topped up below half; records/s.
            sse-consume: the same topic as SSE (stream_limit = its records).
            ws-latency: a consume WebSocket with credit for everything; a
              produce WebSocket sends --ws-latency-messages one-record messages
              one at a time (--ws-latency-acks) with a CLOCK_MONOTONIC stamp.
            ws-produce: one-record produce messages, --ws-window in flight per
              socket, an ack per message; messages/s, every offset checked.
            req/s: single-record acks=1 produces on --rps-connections closed-
              loop connections for --rps-seconds, against the broker and the
              baseline server; their ratio per repetition.
            The client is raw sockets (TCP_NODELAY, keep-alive); its CPU per
            request is printed next to the server's, so a client bottleneck
            would show (--wrk cross-checks with wrk).
            """,
        subcommands: [Run.self, All.self, BaselineServerCommand.self])
}

/// Everything about a run except where the servers are.
struct RunOptions: ParsableArguments {
    @Option(help: "Repetitions of every measurement (the report shows median, min, max).") var reps = 3
    @Option(name: .customLong("w1-records"), help: "Records per W1 run.") var w1Records = 200_000
    @Option(name: .customLong("w1-batch"), help: "Records per W1 NDJSON request.") var w1Batch = 1_000
    @Option(name: .customLong("w1-connections"), help: "W1 keep-alive connections, one request in flight each.") var w1Connections = 4
    @Option(name: .customLong("w2-max-records"), help: "max_records of each W2 read.") var w2MaxRecords = 5_000
    @Option(name: .customLong("w2-max-bytes"), help: "max_bytes of each W2 read.") var w2MaxBytes = 64 * 1024 * 1024
    @Option(name: .customLong("w3-calls"), help: "W3 single-record produce calls.") var w3Calls = 2_000
    @Option(name: .customLong("w4-messages"), help: "W4 messages (5 ms apart).") var w4Messages = 1_000
    @Option(name: .customLong("w4-wait-ms"), help: "W4 reader's long-poll wait_ms.") var w4WaitMilliseconds = 1_000
    @Option(name: .customLong("rps-connections"), help: "Connections of the single-record req/s test.") var rpsConnections = 32
    @Option(name: .customLong("rps-seconds"), help: "Duration of each req/s run.") var rpsSeconds = 5.0
    @Option(name: .customLong("load-threads"), help: "poll-loop threads of the req/s load generator.") var loadThreads = 1
    @Flag(help: "Also drive the req/s test with wrk (-t1, a Lua script POSTing 100 bytes) to cross-check the client.") var wrk = false
    @Option(name: .customLong("ws-produce-messages"), help: "ws-produce: one-record produce messages per run.") var wsProduceMessages = 200_000
    @Option(name: .customLong("ws-produce-connections"), help: "ws-produce: WebSockets (one client thread each).") var wsProduceConnections = 1
    @Option(name: .customLong("ws-window"), help: "ws-produce: unacknowledged messages per socket (the broker allows 1,000).") var wsWindow = 1_000
    @Option(name: .customLong("ws-produce-acks"), help: "ws-produce: acks of every message.") var wsProduceAcks = "1"
    @Option(name: .customLong("stream-max-records"), help: "ws-consume/sse-consume: max_records per pushed batch.") var streamMaxRecords = 5_000
    @Option(name: .customLong("stream-max-bytes"), help: "ws-consume/sse-consume: max_bytes per pushed batch.") var streamMaxBytes = 2 * 1024 * 1024
    @Option(name: .customLong("ws-credit"), help: "ws-consume: records of credit kept granted (topped up below half).") var wsCredit = 50_000
    @Option(name: .customLong("ws-latency-messages"), help: "ws-latency: messages per run.") var wsLatencyMessages = 5_000
    @Option(name: .customLong("ws-latency-interval-ms"), help: "ws-latency: time between produce messages.") var wsLatencyIntervalMilliseconds = 2.0
    @Option(name: .customLong("ws-latency-acks"), help: "ws-latency: the producer's acks (it waits for each ack).") var wsLatencyAcks = "all"
    @Option(name: .customLong("max-load1"), help: "Before each repetition wait (up to --load-wait s) until the 1-minute load average is below this; logs it and top.")
    var maxLoad1: Double?
    @Option(name: .customLong("load-wait"), help: "Longest wait for --max-load1, in seconds.") var loadWaitSeconds = 600.0
    @Option(help: "Comma-separated subset: w1a,w1b,w2,ws-consume,sse-consume,controls,w3,w4,ws-latency,rps,ws-produce (default: all).") var only: String?
    @Option(name: .customLong("fsync-dir"), help: "Where the append+fdatasync control writes (put it on the broker's disk).")
    var fsyncDirectory = NSTemporaryDirectory()
    @Option(name: .customLong("quiet-wait"), help: "Wait up to this many seconds for a quiet machine before each repetition.") var quietWaitSeconds = 5.0
    @Option(name: .customLong("quiet-percent"), help: "Busy% below which the machine counts as quiet.") var quietPercent = 25.0
    @Option(help: "Write raw values, medians and machine facts to this JSON file.") var out: String?
    @Option(help: "Also write W1-W4 results in the peers' JSONL format (for their report.py).") var jsonl: String?
    @Option(help: "The peers' results directory, to print their medians next to ours (skipped if missing).")
    var peers = "/work/shared/bench/peers/out/results"
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the workloads against an already running broker.")

    @Option(help: "The broker, e.g. http://127.0.0.1:8082.") var url: String
    @Option(name: .customLong("baseline-url"), help: "A `petrel-bench baseline-server` for the req/s comparison.") var baselineURL: String?
    @Option(name: .customLong("broker-pid"), help: "Broker pid, to report its CPU per request.") var brokerPID: Int32?
    @Option(name: .customLong("baseline-pid"), help: "Baseline server pid, to report its CPU per request.") var baselinePID: Int32?
    @OptionGroup var options: RunOptions

    func run() throws {
        let broker = try Endpoint(url: url)
        let baseline = try baselineURL.map { try Endpoint(url: $0) }
        try BenchmarkRun(options: options, broker: broker, baseline: baseline, brokerPID: brokerPID, baselinePID: baselinePID).execute()
    }
}

struct BaselineServerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "baseline-server",
        abstract: "A bare libmicrohttpd server with the broker's settings, answering every request with a tiny 200 JSON body.")

    @Option(help: "Port; 0 picks a free one (printed on stdout).") var port = 8090
    @Option(help: "Numeric address to listen on.") var host = "127.0.0.1"
    @Option(help: "MHD thread pool size (the broker's default is 2).") var threads = 2

    func run() throws {
        guard (0...65535).contains(port) else { throw ValidationError("port must be in 0...65535") }
        // Block the stop signals before MHD starts its threads (they inherit the mask), then wait
        // for one here: a clean MHD_stop_daemon instead of dying mid-request.
        var signals = sigset_t()
        sigemptyset(&signals)
        sigaddset(&signals, SIGTERM)
        sigaddset(&signals, SIGINT)
        pthread_sigmask(SIG_BLOCK, &signals, nil)
        let (daemon, boundPort) = try BaselineServer.start(host: host, port: UInt16(port), threads: threads)
        FileHandle.standardOutput.write(Data("listening on http://\(host):\(boundPort)\n".utf8))
        var received: Int32 = 0
        sigwait(&signals, &received)
        MHD_stop_daemon(daemon)
    }
}

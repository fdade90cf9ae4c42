import ArgumentParser
import BrokerHTTP
import BrokerModel
import BrokerRuntime
import Dispatch
import Foundation
import Logging
import MicroHTTP

/// `petrel serve`: one broker. With no flags, a complete single-node broker on 127.0.0.1:8082 with
/// data in ./data. Every flag can also come from an environment variable (flag wins).
struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a broker.",
        discussion: """
            Settings come from flags, else from environment variables, else from defaults:
              --host        PETREL_HOST        127.0.0.1
              --port        PETREL_PORT        8082
              --data-dir    PETREL_DATA_DIR    ./data
              --node-id     PETREL_NODE_ID     1
              --http-threads PETREL_HTTP_THREADS 2
              --log-level   PETREL_LOG_LEVEL   info
              --advertised-host PETREL_ADVERTISED_HOST (the --host value)
            """)

    @Option(help: "Address to listen on (env PETREL_HOST).") var host: String?
    @Option(help: "Port to listen on; 0 picks a free one (env PETREL_PORT).") var port: Int?
    @Option(name: .customLong("data-dir"), help: "Data directory (env PETREL_DATA_DIR).") var dataDirectory: String?
    @Option(name: .customLong("node-id"), help: "This broker's id (env PETREL_NODE_ID).") var nodeID: Int32?
    @Option(name: .customLong("http-threads"), help: "HTTP worker threads (env PETREL_HTTP_THREADS).") var httpThreads: Int?
    @Option(name: .customLong("advertised-host"), help: "Host clients should use to reach this broker, shown in /v1/cluster; defaults to --host (env PETREL_ADVERTISED_HOST).") var advertisedHost: String?
    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error, critical (env PETREL_LOG_LEVEL).") var logLevel: String?
    @Option(name: .customLong("retention-check-interval-ms"), help: "How often retention runs (env PETREL_RETENTION_CHECK_INTERVAL_MS).") var retentionCheckIntervalMilliseconds: Int64?

    func run() throws {
        let env = ProcessInfo.processInfo.environment
        func setting<T: LosslessStringConvertible>(_ flag: T?, _ name: String, _ fallback: T) throws -> T {
            if let flag { return flag }
            guard let text = env[name], !text.isEmpty else { return fallback }
            guard let value = T(text) else { throw ValidationError("environment variable \(name)='\(text)' is not valid") }
            return value
        }
        let level = try setting(logLevel, "PETREL_LOG_LEVEL", "info")
        guard let parsedLevel = Logger.Level(rawValue: level) else { throw ValidationError("unknown log level '\(level)'") }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = parsedLevel
            return handler
        }
        let logger = Logger(label: "petrel")

        var config = BrokerConfiguration()
        config.dataDirectory = try setting(dataDirectory, "PETREL_DATA_DIR", "./data")
        config.nodeID = NodeID(try setting(nodeID, "PETREL_NODE_ID", 1))
        config.retentionCheckIntervalMilliseconds = try setting(retentionCheckIntervalMilliseconds, "PETREL_RETENTION_CHECK_INTERVAL_MS", 60_000)
        let listenHost = try setting(host, "PETREL_HOST", "127.0.0.1")
        let listenPort = try setting(port, "PETREL_PORT", 8082)
        guard (0...65535).contains(listenPort) else { throw ValidationError("port must be in 0...65535") }
        config.advertisedHost = try setting(advertisedHost, "PETREL_ADVERTISED_HOST", listenHost)

        let broker = Broker(configuration: config, logger: Logger(label: "petrel.broker"))
        do { try broker.start() } catch {
            logger.critical("cannot start broker: \(error.message)")
            throw ExitCode(1)
        }
        let service = BrokerService(broker: broker)

        var http = HTTPServerConfiguration()
        http.host = listenHost
        http.port = UInt16(listenPort)
        http.threadCount = try setting(httpThreads, "PETREL_HTTP_THREADS", 2)
        http.connectionLimit = config.limits.connectionsMax
        http.connectionMemoryBytes = config.limits.connectionMemoryBytes
        http.connectionTimeoutSeconds = config.limits.connectionIdleSecondsMax
        http.requestBodyBytesMax = config.limits.requestBodyBytesMax
        http.errorBody = BrokerService.errorBody
        let server = HTTPServer(configuration: http, handler: service.handler)
        do { try server.start() } catch {
            logger.critical("cannot listen on \(listenHost):\(listenPort): \(error)")
            broker.shutdown()
            throw ExitCode(1)
        }
        broker.advertisedPort.store(Int(server.port), ordering: .relaxed)
        logger.info("petrel listening", metadata: ["address": "http://\(listenHost):\(server.port)", "data": "\(config.dataDirectory)"])
        // Scripts and tests that pass --port 0 learn the port from this line on stdout.
        FileHandle.standardOutput.write(Data("listening on http://\(listenHost):\(server.port)\n".utf8))

        ShutdownOnSignal.install { signalName in
            logger.info("received \(signalName): shutting down")
            // Order matters (LIBMICROHTTPD.md): stop accepting, answer every parked request, then stop.
            server.quiesce()
            broker.shutdown()
            server.stop(timeoutSeconds: 5)
            logger.info("stopped")
            Foundation.exit(0)
        }
        dispatchMain()
    }
}

/// SIGTERM/SIGINT handling through Dispatch signal sources (not a C signal handler, so the shutdown
/// code may lock, log and do I/O).
enum ShutdownOnSignal {
    nonisolated(unsafe) static var sources: [any DispatchSourceSignal] = []

    static func install(_ action: @escaping @Sendable (String) -> Void) {
        let queue = DispatchQueue(label: "petrel.signals")
        for (number, name) in [(SIGTERM, "SIGTERM"), (SIGINT, "SIGINT")] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
            source.setEventHandler { action(name) }
            source.resume()
            sources.append(source)
        }
    }
}

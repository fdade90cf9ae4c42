import ArgumentParser
import BrokerHTTP
import BrokerModel
import BrokerPeers
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
            Cluster mode (all of these, or none for a single node):
              --members     PETREL_MEMBERS     id@host:internalPort,... (every initial member, this node included)
              --internal-host PETREL_INTERNAL_HOST (the --host value)
              --internal-port PETREL_INTERNAL_PORT 9082
              --cluster-secret PETREL_CLUSTER_SECRET (required in cluster mode)
              --rack        PETREL_RACK        (none)
            A config file (--config FILE or PETREL_CONFIG) may hold any of these as `key = value` lines,
            keys named like the flags without dashes (node-id = 1); flags win, then the environment, then the file.
            """)

    @Option(help: "Address to listen on (env PETREL_HOST).") var host: String?
    @Option(help: "Port to listen on; 0 picks a free one (env PETREL_PORT).") var port: Int?
    @Option(name: .customLong("data-dir"), help: "Data directory (env PETREL_DATA_DIR).") var dataDirectory: String?
    @Option(name: .customLong("node-id"), help: "This broker's id (env PETREL_NODE_ID).") var nodeID: Int32?
    @Option(name: .customLong("http-threads"), help: "HTTP worker threads (env PETREL_HTTP_THREADS).") var httpThreads: Int?
    @Option(name: .customLong("advertised-host"), help: "Host clients should use to reach this broker, shown in /v1/cluster; defaults to --host (env PETREL_ADVERTISED_HOST).") var advertisedHost: String?
    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error, critical (env PETREL_LOG_LEVEL).") var logLevel: String?
    @Option(name: .customLong("retention-check-interval-ms"), help: "How often retention runs (env PETREL_RETENTION_CHECK_INTERVAL_MS).") var retentionCheckIntervalMilliseconds: Int64?
    @Option(help: "Cluster members as id@host:internalPort, comma-separated, this node included (env PETREL_MEMBERS).") var members: String?
    @Option(name: .customLong("internal-host"), help: "Address of the internal (broker-to-broker) listener (env PETREL_INTERNAL_HOST).") var internalHost: String?
    @Option(name: .customLong("internal-port"), help: "Port of the internal listener (env PETREL_INTERNAL_PORT).") var internalPort: Int?
    @Option(name: .customLong("cluster-secret"), help: "Secret shared by every member; peers without it are refused (env PETREL_CLUSTER_SECRET).") var clusterSecret: String?
    @Option(help: "Rack (or zone) of this broker; replicas are spread over racks (env PETREL_RACK).") var rack: String?
    @Option(help: "Config file of `key = value` lines (env PETREL_CONFIG).") var config: String?

    func run() throws {
        var env = ProcessInfo.processInfo.environment
        // The config file fills in what the environment does not set (flags > environment > file).
        if let path = config ?? env["PETREL_CONFIG"], !path.isEmpty {
            for (key, value) in try ConfigFile.read(path) {
                let name = "PETREL_" + key.uppercased().replacingOccurrences(of: "-", with: "_")
                if env[name] == nil || env[name]!.isEmpty { env[name] = value }
            }
        }
        func setting<T: LosslessStringConvertible>(_ flag: T?, _ name: String, _ fallback: T) throws -> T {
            if let flag { return flag }
            guard let text = env[name], !text.isEmpty else { return fallback }
            guard let value = T(text) else { throw ValidationError("setting \(name)='\(text)' is not valid") }
            return value
        }
        func optional(_ flag: String?, _ name: String) -> String? {
            if let flag, !flag.isEmpty { return flag }
            guard let text = env[name], !text.isEmpty else { return nil }
            return text
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
        config.openFilesMax = OpenFileLimit.raiseToHardLimit()
        let listenHost = try setting(host, "PETREL_HOST", "127.0.0.1")
        let listenPort = try setting(port, "PETREL_PORT", 8082)
        guard (0...65535).contains(listenPort) else { throw ValidationError("port must be in 0...65535") }
        config.advertisedHost = try setting(advertisedHost, "PETREL_ADVERTISED_HOST", listenHost)

        var transport: HTTPPeerTransport?
        if let memberList = optional(members, "PETREL_MEMBERS") {
            let parsed = try ConfigFile.members(memberList)
            guard let secret = optional(clusterSecret, "PETREL_CLUSTER_SECRET") else {
                throw ValidationError("cluster mode (--members) needs --cluster-secret (or PETREL_CLUSTER_SECRET)")
            }
            // A node outside the list joins a running cluster: it listens on --internal-port and
            // tells the members where through its registration.
            let own = parsed[config.nodeID]
            let ownPort = own.flatMap { Int($0.split(separator: ":").last ?? "") } ?? 9082
            let internalListenHost = try setting(internalHost, "PETREL_INTERNAL_HOST", listenHost)
            let internalListenPort = try setting(internalPort, "PETREL_INTERNAL_PORT", ownPort)
            guard (0...65535).contains(internalListenPort) else { throw ValidationError("internal port must be in 0...65535") }
            let advertisedInternalHost = try setting(advertisedHost, "PETREL_ADVERTISED_HOST", internalListenHost)
            let internalAddress = own ?? "\(advertisedInternalHost):\(internalListenPort)"
            config.cluster = ClusterConfiguration(members: parsed, internalAddress: internalAddress, rack: optional(rack, "PETREL_RACK"))
            var peers = PeerTransportConfiguration(nodeID: config.nodeID, listenHost: internalListenHost, listenPort: UInt16(internalListenPort),
                                                   peers: parsed, secret: secret)
            peers.listenerThreads = 2
            transport = HTTPPeerTransport(configuration: peers, logger: Logger(label: "petrel.peers"))
        }

        let lock: DataDirectoryLock
        do { lock = try DataDirectoryLock(directory: config.dataDirectory) } catch {
            logger.critical("cannot start broker: \(error)")
            throw ExitCode(1)
        }
        let broker = Broker(configuration: config, logger: Logger(label: "petrel.broker"), transport: transport)
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
        withExtendedLifetime(lock) { dispatchMain() }
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

/// Raises the soft open-file limit to the hard limit (a broker holds files per partition and per
/// connection; distributions default the soft limit to 1,024) and returns the limit now in force.
enum OpenFileLimit {
    static func raiseToHardLimit() -> Int? {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return nil }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
        }
        return limit.rlim_cur == rlim_t.max ? nil : Int(clamping: limit.rlim_cur)
    }
}

/// `key = value` lines (`#` starts a comment), and the member list syntax.
enum ConfigFile {
    static func read(_ path: String) throws -> [(String, String)] {
        guard let data = FileManager.default.contents(atPath: path) else { throw ValidationError("cannot read config file \(path)") }
        var out: [(String, String)] = []
        for (n, raw) in String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init)?.trimmingCharacters(in: .whitespaces) ?? ""
            if line.isEmpty { continue }
            guard let eq = line.firstIndex(of: "=") else { throw ValidationError("\(path):\(n + 1): expected `key = value`") }
            let key = line[..<eq].trimmingCharacters(in: .whitespaces)
            let value = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            guard !key.isEmpty else { throw ValidationError("\(path):\(n + 1): empty key") }
            out.append((key, value))
        }
        return out
    }

    /// `1@host:9082,2@host:9083` → ids and internal addresses.
    static func members(_ text: String) throws -> [NodeID: String] {
        var out: [NodeID: String] = [:]
        for item in text.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !item.isEmpty {
            let parts = item.split(separator: "@", maxSplits: 1)
            guard parts.count == 2, let id = Int32(parts[0]), id >= 0 else { throw ValidationError("member '\(item)' is not id@host:port") }
            let address = String(parts[1])
            guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]), (1...65535).contains(port) else {
                throw ValidationError("member '\(item)' has no valid port")
            }
            guard out[NodeID(id)] == nil else { throw ValidationError("member id \(id) appears twice") }
            out[NodeID(id)] = address
        }
        guard !out.isEmpty else { throw ValidationError("--members is empty") }
        return out
    }
}

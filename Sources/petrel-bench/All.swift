import ArgumentParser
import Foundation
import Glibc

/// `petrel-bench all --broker-bin PATH`: starts a broker on a fresh data directory and a baseline
/// server (both on free ports), runs `run` against them, stops both, removes the directory.
struct All: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Start a broker and a baseline server, run the benchmark, stop both.")

    @Option(name: .customLong("broker-bin"), help: "The petrel executable (release build for real numbers).") var brokerBinary: String
    @Option(help: "Parent of the temporary data directory (put it on the data disk).") var scratch = NSTemporaryDirectory()
    @Option(name: .customLong("http-threads"), help: "Broker --http-threads and baseline MHD threads.") var httpThreads = 2
    @OptionGroup var options: RunOptions

    func run() throws {
        let template = (scratch.hasSuffix("/") ? scratch : scratch + "/") + "petrel-bench-XXXXXX"
        var templateBytes = Array(template.utf8CString)
        guard let made = mkdtemp(&templateBytes) else { throw BenchError("mkdtemp \(template): \(String(cString: strerror(errno)))") }
        let dataDirectory = String(cString: made)
        defer {
            try? FileManager.default.removeItem(atPath: dataDirectory)
            log("removed \(dataDirectory)")
        }

        let broker = try ChildServer(
            executable: brokerBinary,
            arguments: ["serve", "--port", "0", "--data-dir", dataDirectory, "--http-threads", "\(httpThreads)", "--log-level", "warning"])
        defer { broker.stop() }
        let selfPath = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        let baseline = try ChildServer(executable: selfPath, arguments: ["baseline-server", "--port", "0", "--threads", "\(httpThreads)"])
        defer { baseline.stop() }
        log("broker pid \(broker.pid) at \(broker.url) (data \(dataDirectory)); baseline pid \(baseline.pid) at \(baseline.url)")

        var runOptions = options
        runOptions.fsyncDirectory = dataDirectory  // the control measures the broker's own disk
        try BenchmarkRun(
            options: runOptions, broker: try Endpoint(url: broker.url), baseline: try Endpoint(url: baseline.url),
            brokerPID: broker.pid, baselinePID: baseline.pid
        ).execute()
    }
}

/// A server process that prints `listening on http://host:port` on stdout once it accepts.
final class ChildServer {
    let process = Process()
    let url: String
    var pid: Int32 { process.processIdentifier }

    init(executable: String, arguments: [String], startupSeconds: Double = 30) throws {
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        // Read stdout until the listening line, bounded by poll() so a silent child cannot hang us.
        let fd = pipe.fileHandleForReading.fileDescriptor
        var text = ""
        let deadline = monotonicNanoseconds() + UInt64(startupSeconds * 1e9)
        while true {
            if let range = text.range(of: "listening on "), let end = text[range.upperBound...].firstIndex(of: "\n") {
                url = String(text[range.upperBound..<end]).trimmingCharacters(in: .whitespaces)
                break
            }
            let now = monotonicNanoseconds()
            guard now < deadline, process.isRunning else {
                if process.isRunning { process.terminate() }
                throw BenchError("\(executable) \(arguments.joined(separator: " ")) did not report its address; stdout: \(text)")
            }
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&poller, 1, 200) > 0 {
                var chunk = [UInt8](repeating: 0, count: 4096)
                let n = read(fd, &chunk, chunk.count)
                if n > 0 { text += String(decoding: chunk[0..<n], as: UTF8.self) }
            }
        }
    }

    /// SIGTERM (the broker's orderly shutdown), then SIGKILL after 15 s.
    func stop() {
        guard process.isRunning else { return }
        process.terminate()
        let deadline = monotonicNanoseconds() + 15_000_000_000
        while process.isRunning && monotonicNanoseconds() < deadline { usleep(20_000) }
        if process.isRunning {
            log("pid \(pid) ignored SIGTERM for 15 s; killing it")
            kill(pid, SIGKILL)
        }
        process.waitUntilExit()
    }
}

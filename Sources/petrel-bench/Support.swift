import Foundation
import Glibc

/// CLOCK_MONOTONIC in nanoseconds: the clock the peers' harness stamps W4 payloads with, so the
/// numbers mean the same thing.
@inline(__always) func monotonicNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}

func sleepUntil(nanoseconds target: UInt64) {
    while true {
        let now = monotonicNanoseconds()
        if now >= target { return }
        let remaining = target - now
        var request = timespec(tv_sec: Int(remaining / 1_000_000_000), tv_nsec: Int(remaining % 1_000_000_000))
        _ = nanosleep(&request, nil)
    }
}

/// Failures of the benchmark itself (a broker answering 500, a socket refusing): they end the run
/// with a message instead of producing a number that means nothing.
struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

enum Stats {
    /// Nearest-rank percentile (p in 0...100), the definition `lib/benchlib.py` of the peers uses.
    static func percentile(_ values: [Double], _ p: Double) -> Double {
        guard !values.isEmpty else { return .nan }
        let sorted = values.sorted()
        let rank = Int((p / 100.0 * Double(sorted.count)).rounded(.up)) - 1
        return sorted[max(0, min(sorted.count - 1, rank))]
    }

    /// The statistics module's median: the mean of the two middle values for an even count.
    static func median(_ values: [Double]) -> Double {
        guard !values.isEmpty else { return .nan }
        let sorted = values.sorted()
        let middle = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
    }
}

/// Machine-wide CPU use, from the first line of /proc/stat (all processes, ours included).
enum CPUBusy {
    static func times() -> (total: UInt64, idle: UInt64) {
        guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
            let line = text.split(separator: "\n").first
        else { return (0, 0) }
        let fields = line.split(separator: " ").dropFirst().compactMap { UInt64($0) }
        guard fields.count >= 5 else { return (0, 0) }
        return (fields.reduce(0, +), fields[3] + fields[4])
    }

    static func between(_ before: (total: UInt64, idle: UInt64), _ after: (total: UInt64, idle: UInt64)) -> Double {
        let total = max(1, after.total &- before.total)
        let idle = after.idle &- before.idle
        return (100.0 * (1.0 - Double(idle) / Double(total)) * 10).rounded() / 10
    }

    /// Percent of all cores busy over `seconds`.
    static func sample(seconds: Double = 0.5) -> Double {
        let before = times()
        usleep(UInt32(seconds * 1_000_000))
        return between(before, times())
    }

    /// Waits (bounded) for a mostly idle machine, as the peers' `wait_quiet` does; returns the last busy%.
    static func waitQuiet(maxWaitSeconds: Double, thresholdPercent: Double) -> Double {
        let start = monotonicNanoseconds()
        while true {
            let busy = sample()
            let waited = Double(monotonicNanoseconds() - start) / 1e9
            if busy <= thresholdPercent || waited >= maxWaitSeconds {
                if busy > thresholdPercent {
                    log("machine still \(Int(busy))% busy after \(Int(maxWaitSeconds)) s of waiting; measuring anyway")
                }
                return busy
            }
            usleep(500_000)
        }
    }
}

/// CPU seconds (user + system) this process has used so far.
func processCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6
        + Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6
}

/// CPU seconds (user + system) of waited-for children (wrk).
func childrenCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_CHILDREN.rawValue, &usage)
    return Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6
        + Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6
}

/// CPU seconds (user + system) of another process, from /proc/<pid>/stat; nil when unreadable.
func cpuSeconds(ofProcess pid: Int32) -> Double? {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let close = text.lastIndex(of: ")")
    else { return nil }
    // Fields after "(comm)": state is field 3; utime and stime are fields 14 and 15.
    let fields = text[text.index(after: close)...].split(separator: " ")
    guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
    return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

func log(_ message: String) {
    var now = time(nil)
    var parts = tm()
    gmtime_r(&now, &parts)
    let stamp = String(format: "%02d:%02d:%02d", parts.tm_hour, parts.tm_min, parts.tm_sec)
    FileHandle.standardError.write(Data("[\(stamp)] \(message)\n".utf8))
}

/// What the JSON report says about the machine.
struct MachineFacts: Codable {
    var date: String
    var nproc: Int
    var kernel: String
    var cpuModel: String
    var load1: String
    var hostname: String

    static func collect() -> MachineFacts {
        var names = utsname()
        uname(&names)
        func field<T>(_ value: inout T) -> String {
            withUnsafePointer(to: &value) { $0.withMemoryRebound(to: CChar.self, capacity: MemoryLayout<T>.size) { String(cString: $0) } }
        }
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let model =
            cpuinfo.split(separator: "\n").first { $0.hasPrefix("model name") }
            .map { String($0.split(separator: ":", maxSplits: 1).last ?? "").trimmingCharacters(in: .whitespaces) } ?? "unknown"
        let formatter = ISO8601DateFormatter()
        return MachineFacts(
            date: formatter.string(from: Date()),
            nproc: Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))),
            kernel: "\(field(&names.sysname)) \(field(&names.release)) \(field(&names.machine))",
            cpuModel: model,
            load1: loadAverage(),
            hostname: field(&names.nodename))
    }

    static func loadAverage() -> String {
        let text = (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8)) ?? ""
        return String(text.split(separator: " ").first ?? "?")
    }
}

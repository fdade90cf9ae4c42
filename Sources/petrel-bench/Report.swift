import Foundation

/// One measured quantity across repetitions (e.g. "W3 p99 ms"), with every raw value.
struct Measurement: Codable {
    var id: String
    var workload: String
    var metric: String
    var unit: String
    var client: String
    var notes: String
    /// One value per repetition, in run order.
    var values: [Double] = []
    /// Machine busy% sampled (0.5 s, /proc/stat) just before each repetition.
    var busyPercentBefore: [Double] = []
    /// Per-repetition details (client CPU, request counts, server CPU, ...).
    var details: [[String: Double]] = []
    /// Per-repetition raw samples (latencies in ms) where the metric is a percentile of them.
    var samples: [[Double]]?
    var median: Double = .nan
    var min: Double = .nan
    var max: Double = .nan
    /// Target from the brief, if any, and whether the median meets it.
    var target: String?
    var meetsTarget: Bool?

    mutating func summarize() {
        median = Stats.median(values)
        min = values.min() ?? .nan
        max = values.max() ?? .nan
    }
}

struct Report: Codable {
    var command: String
    var machine: MachineFacts
    var broker: String
    var baseline: String?
    var cluster: String
    var settings: [String: String]
    var measurements: [Measurement]
    var failures: [String]
    var finished: String
}

/// Collects results in the order they are first reported.
final class Recorder {
    private(set) var order: [String] = []
    private(set) var byID: [String: Measurement] = [:]
    var failures: [String] = []

    func add(
        id: String, workload: String, metric: String, unit: String, client: String, notes: String,
        value: Double, busy: Double, details: [String: Double] = [:], samples: [Double]? = nil
    ) {
        if byID[id] == nil {
            order.append(id)
            byID[id] = Measurement(id: id, workload: workload, metric: metric, unit: unit, client: client, notes: notes)
        }
        byID[id]!.values.append(value)
        if !busy.isNaN { byID[id]!.busyPercentBefore.append(busy) }
        byID[id]!.details.append(details)
        if let samples {
            byID[id]!.samples = (byID[id]!.samples ?? []) + [samples.map { ($0 * 1000).rounded() / 1000 }]
        }
        var cpu = details["clientCPUPercentOfOneCore"].map { ", client CPU \(format($0))% of a core" } ?? ""
        if let server = details["serverCPUMicrosecondsPerRecord"] { cpu += ", broker \(format(server)) us CPU/record" }
        log("  \(workload) \(metric) = \(format(value)) \(unit)" + (busy.isNaN ? "" : "  (busy before \(busy)%\(cpu))"))
    }

    func setTarget(_ id: String, _ text: String, _ check: (Double) -> Bool) {
        guard byID[id] != nil else { return }
        byID[id]!.summarize()
        byID[id]!.target = text
        byID[id]!.meetsTarget = check(byID[id]!.median)
    }

    func measurements() -> [Measurement] {
        order.map { id in
            var m = byID[id]!
            m.summarize()
            return m
        }
    }
}

func format(_ value: Double) -> String {
    if value.isNaN { return "n/a" }
    if abs(value) >= 1000 {
        let rounded = Int(value.rounded())
        let digits = String(abs(rounded))
        var grouped = ""
        for (i, c) in digits.enumerated() {
            if i > 0 && (digits.count - i) % 3 == 0 { grouped.append(",") }
            grouped.append(c)
        }
        return (rounded < 0 ? "-" : "") + grouped
    }
    if abs(value) >= 100 { return String(format: "%.1f", value) }
    if abs(value) >= 1 { return String(format: "%.2f", value) }
    return String(format: "%.3f", value)
}

enum ReportPrinter {
    /// One RESULT line per measurement (median, min, max), then a Markdown table like RESULTS.md's.
    static func printSummary(_ measurements: [Measurement], reps: Int) {
        print("")
        for m in measurements {
            let busy = m.busyPercentBefore.isEmpty ? "" : " busy%=\(format(m.busyPercentBefore.min()!))-\(format(m.busyPercentBefore.max()!))"
            let verdict = m.target.map { " target \($0): \(m.meetsTarget == true ? "met" : "MISSED")" } ?? ""
            print(
                "RESULT petrel \(m.workload) [\(m.client)] \(m.metric): median=\(format(m.median)) min=\(format(m.min)) max=\(format(m.max)) \(m.unit) n=\(m.values.count)\(busy)\(verdict)"
            )
        }
        print("")
        print("| Workload [client] | Metric | Median | Min | Max | Target | Notes |")
        print("|---|---|---:|---:|---:|---|---|")
        for m in measurements {
            let busy = m.busyPercentBefore.isEmpty ? "" : "busy% \(format(m.busyPercentBefore.min()!))-\(format(m.busyPercentBefore.max()!))"
            let notes = [m.notes, busy].filter { !$0.isEmpty }.joined(separator: "; ")
            let target = m.target.map { "\($0) \(m.meetsTarget == true ? "met" : "**missed**")" } ?? ""
            print("| \(m.workload) [\(m.client)] | \(m.metric) (\(m.unit)) | \(format(m.median)) | \(format(m.min)) | \(format(m.max)) | \(target) | \(notes) |")
        }
    }
}

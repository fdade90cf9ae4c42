import Foundation

/// Ties to the peers' harness (/work/shared/bench/peers): our measurements in their JSONL format (so
/// `report.py` can put Petrel rows into RESULTS.md), and their recorded medians next to ours.
enum Peers {
    static let peerName = "Petrel (this build)"
    static let variant = "1 node, 1 partition, HTTP/1.1 on libmicrohttpd"

    /// Our measurement id -> (workload label in the peers' style, metric name in their files).
    static let mapping: [String: (workload: String, metric: String, key: String)] = [
        "w1a": ("W1a produce (no per-msg fsync: acks=1) [raw-socket HTTP client]", "msgs/s", "W1a"),
        "w1b": ("W1b produce (durable: acks=all, fsync before reply) [raw-socket HTTP client]", "msgs/s", "W1b"),
        "w2": ("W2 consume from start [raw-socket HTTP client]", "msgs/s", "W2"),
        "w3-p50": ("W3 produce latency acks=all [raw-socket HTTP client]", "p50", "W3"),
        "w3-p99": ("W3 produce latency acks=all [raw-socket HTTP client]", "p99", "W3"),
        "w3-max": ("W3 produce latency acks=all [raw-socket HTTP client]", "max", "W3"),
        "w4-p50": ("W4 end-to-end latency [raw-socket HTTP client, long-poll wait_ms=1000]", "p50", "W4"),
        "w4-p99": ("W4 end-to-end latency [raw-socket HTTP client, long-poll wait_ms=1000]", "p99", "W4"),
        "w4-max": ("W4 end-to-end latency [raw-socket HTTP client, long-poll wait_ms=1000]", "max", "W4"),
    ]

    /// One line per measurement and repetition, with the fields `lib/benchlib.py` writes.
    static func writeJSONL(_ measurements: [Measurement], load1: String, to path: String) throws {
        var lines: [String] = []
        for m in measurements {
            guard let map = mapping[m.id] else { continue }
            for (rep, value) in m.values.enumerated() {
                var object: [String: Any] = [
                    "peer": peerName, "variant": variant, "workload": map.workload, "metric": map.metric,
                    "value": value, "unit": map.metric == "msgs/s" ? "msgs/s" : "ms", "rep": rep + 1, "notes": "\(m.client); \(m.notes)",
                    "load1": load1, "ts": Date().timeIntervalSince1970,
                ]
                if rep < m.busyPercentBefore.count { object["busy_before"] = m.busyPercentBefore[rep] }
                if map.metric == "msgs/s" { object["mb_s"] = value * Double(recordValueBytes) / 1e6 }
                let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
                lines.append(String(decoding: data, as: UTF8.self))
            }
        }
        try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
    }

    struct PeerRow {
        var peer: String
        var variant: String
        var workload: String
        var metric: String
        var values: [Double]
    }

    /// The peers' recorded results (`out/results/*.jsonl`), medians per row.
    static func load(directory: String) -> [PeerRow] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return [] }
        var rows: [String: PeerRow] = [:]
        var order: [String] = []
        for name in names.sorted() where name.hasSuffix(".jsonl") {
            guard let text = try? String(contentsOfFile: directory + "/" + name, encoding: .utf8) else { continue }
            for line in text.split(separator: "\n") {
                guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                    let peer = object["peer"] as? String, peer != peerName,
                    let workload = object["workload"] as? String, let metric = object["metric"] as? String,
                    let value = object["value"] as? Double
                else { continue }
                let variant = object["variant"] as? String ?? ""
                let key = [peer, variant, workload, metric].joined(separator: "|")
                if rows[key] == nil {
                    order.append(key)
                    rows[key] = PeerRow(peer: peer, variant: variant, workload: workload, metric: metric, values: [])
                }
                rows[key]!.values.append(value)
            }
        }
        return order.map { rows[$0]! }
    }

    /// Ours first, then every peer row of the same workload and metric.
    static func printComparison(_ measurements: [Measurement], peers: [PeerRow]) {
        guard !peers.isEmpty else { return }
        print("")
        print("| Workload | Metric | System [client] | Median | Min | Max |")
        print("|---|---|---|---:|---:|---:|")
        for m in measurements {
            guard let map = mapping[m.id], map.metric != "max" else { continue }
            print("| \(map.key) | \(map.metric) | **Petrel** [\(m.client)] | **\(format(m.median))** | \(format(m.min)) | \(format(m.max)) |")
            for row in peers where row.metric == map.metric && row.workload.hasPrefix(map.key + " ") {
                let client = row.workload.range(of: "[").map { String(row.workload[$0.lowerBound...]) } ?? ""
                print("| \(map.key) | \(map.metric) | \(row.peer) (\(row.variant)) \(client) | \(format(Stats.median(row.values))) | \(format(row.values.min()!)) | \(format(row.values.max()!)) |")
            }
        }
    }
}

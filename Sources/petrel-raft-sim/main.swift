// petrel-raft-sim: runs the deterministic Raft simulation over a range of seeds.
//
//   petrel-raft-sim --seeds 0..<100000 [--ticks 400] [--trace]
//   petrel-raft-sim --seed 1234 --trace        replays one seed and prints its event trace
//
// Every failing seed is printed; the same seed replays the same run exactly. If the core itself
// traps (a broken `precondition`), a signal handler prints the seed that was running.
import BrokerTesting
import Foundation

nonisolated(unsafe) var currentSeed: UInt64 = 0

func usage() -> Never {
    print("usage: petrel-raft-sim (--seeds A..<B | --seed N) [--ticks N] [--trace] [--nodes 3|5]")
    exit(2)
}

var range: Range<UInt64> = 0..<1000
var options = RaftSimulationOptions()
var showTrace = false
var arguments = CommandLine.arguments.dropFirst()
while let a = arguments.popFirst() {
    switch a {
    case "--seeds":
        guard let v = arguments.popFirst() else { usage() }
        let parts = v.components(separatedBy: "..<")
        guard parts.count == 2, let lo = UInt64(parts[0]), let hi = UInt64(parts[1]), lo < hi else { usage() }
        range = lo..<hi
    case "--seed":
        guard let v = arguments.popFirst(), let s = UInt64(v) else { usage() }
        range = s..<(s + 1)
    case "--ticks":
        guard let v = arguments.popFirst(), let t = Int(v), t > 50 else { usage() }
        options.ticks = t
        options.livenessBoundTicks = min(options.livenessBoundTicks, t / 3)
    case "--nodes":
        guard let v = arguments.popFirst(), let n = Int(v), n >= 1 else { usage() }
        options.nodeCount = n
    case "--trace": showTrace = true
    case "--trace-messages":
        showTrace = true
        options.traceMessages = true
    default: usage()
    }
}

// A trapping precondition kills the process; say which seed did it so it can be replayed.
let onTrap: @convention(c) (Int32) -> Void = { signal in
    var text = Array("\npetrel-raft-sim: trapped (signal \(signal)) in seed \(currentSeed); replay with --seed \(currentSeed) --trace\n".utf8)
    _ = text.withUnsafeMutableBytes { write(2, $0.baseAddress, $0.count) }
    _exit(3)
}
signal(SIGILL, onTrap)
signal(SIGTRAP, onTrap)
signal(SIGSEGV, onTrap)
signal(SIGABRT, onTrap)

var total = RaftSimulationStats()
var failures: [UInt64] = []
let started = Date()
var lastReport = started
for seed in range {
    currentSeed = seed
    let result = RaftSimulation(seed: seed, options: options).run()
    total.add(result.stats)
    if !result.passed || showTrace {
        if showTrace { for line in result.trace { print(line) } }
        for v in result.violations { print("seed \(seed): VIOLATION \(v)") }
        if !result.passed { failures.append(seed) }
    }
    let nowDate = Date()
    if nowDate.timeIntervalSince(lastReport) > 30 {
        lastReport = nowDate
        let elapsed = nowDate.timeIntervalSince(started)
        print("... seed \(seed): \(total.seeds) seeds in \(Int(elapsed)) s (\(Int(Double(total.seeds) / elapsed)) seeds/s), \(failures.count) failing")
        fflush(nil)
    }
}
let elapsed = Date().timeIntervalSince(started)
print("seeds \(range.lowerBound)..<\(range.upperBound): \(total.seeds) run, \(failures.count) failing, \(String(format: "%.1f", elapsed)) s, \(String(format: "%.1f", Double(total.seeds) / elapsed)) seeds/s")
print(total)
if !failures.isEmpty {
    print("failing seeds: \(failures.map(String.init).joined(separator: " "))")
    exit(1)
}

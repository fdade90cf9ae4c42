/// A small, fast, seedable generator (SplitMix64). Deterministic across platforms and Swift
/// versions, so a seed replays the same run everywhere. The one generator of every core and
/// simulation (Raft elections and simulator, ClusterState placement, the simulated disk).
public struct SplitMix64: RandomNumberGenerator, Sendable {
    public var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// A value in `0..<bound` (bound > 0). The tiny modulo bias is irrelevant for simulation.
    public mutating func below(_ bound: Int) -> Int {
        precondition(bound > 0, "bound must be positive")
        return Int(next() % UInt64(bound))
    }
    /// True with probability `perMillion / 1_000_000`.
    public mutating func chance(perMillion: Int) -> Bool { below(1_000_000) < perMillion }
}

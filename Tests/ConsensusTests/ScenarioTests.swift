import Foundation
import Testing

/// Golden scenario tests: each `Scenarios/<name>.txt` script is run and its transcript compared with
/// `Scenarios/<name>.golden`. To regenerate on purpose after a deliberate behaviour change:
///
///     PETREL_REGENERATE_GOLDEN=1 swift test --filter ScenarioTests
///
/// then read the diff of the `.golden` files before committing them.
@Suite struct ScenarioTests {
    static let names = [
        "election", "split_vote", "leader_crash", "partition_heal", "divergent_logs", "prevote_disruption",
        "membership", "leadership_transfer", "behind_log_start",
    ]

    static var sourceDirectory: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Scenarios")
    }

    static var resourceDirectory: URL {
        Bundle.module.url(forResource: "Scenarios", withExtension: nil) ?? sourceDirectory
    }

    @Test(arguments: names)
    func scenario(_ name: String) throws {
        let script = try String(contentsOf: Self.resourceDirectory.appendingPathComponent("\(name).txt"), encoding: .utf8)
        let transcript = ScenarioCluster().run(script: script)
        let goldenURL = Self.resourceDirectory.appendingPathComponent("\(name).golden")
        if ProcessInfo.processInfo.environment["PETREL_REGENERATE_GOLDEN"] == "1" {
            try transcript.write(to: Self.sourceDirectory.appendingPathComponent("\(name).golden"), atomically: true, encoding: .utf8)
            return
        }
        let golden = try String(contentsOf: goldenURL, encoding: .utf8)
        #expect(transcript == golden, "transcript of \(name) differs from its golden file; regenerate on purpose if intended")
    }

    @Test func scenarioIsDeterministic() throws {
        let script = try String(contentsOf: Self.resourceDirectory.appendingPathComponent("divergent_logs.txt"), encoding: .utf8)
        #expect(ScenarioCluster().run(script: script) == ScenarioCluster().run(script: script))
    }
}

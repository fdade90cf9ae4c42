import Foundation
import Testing

/// Golden consumer-group scenarios: `Scenarios/groups-<name>.txt` and its `.golden` transcript,
/// regenerated on purpose like the metadata ones (`PETREL_REGENERATE_GOLDEN=1`, then read the diff).
@Suite struct GroupScenarioTests {
    @Test func scenariosExist() {
        #expect(ScenarioFiles.groupNames().count >= 10, "group scenario scripts missing from the test bundle")
    }

    @Test(arguments: ScenarioFiles.groupNames())
    func scenario(_ name: String) throws {
        let script = try String(contentsOf: ScenarioFiles.bundleDirectory.appendingPathComponent(name + ".txt"), encoding: .utf8)
        var runner = GroupScenarioRunner()
        let transcript = runner.run(script: script)
        #expect(runner.failures.isEmpty, "\(name): \(runner.failures)")
        try ScenarioFiles.check(name, transcript: transcript)
    }
}

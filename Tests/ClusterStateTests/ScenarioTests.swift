import ClusterState
import Foundation
import Testing

/// Golden scenarios: `Scenarios/<name>.txt` is the script, `Scenarios/<name>.golden` its transcript.
/// A change in behaviour shows up as a diff of the golden file. To accept a change on purpose:
/// `PETREL_REGENERATE_GOLDEN=1 swift test --filter ClusterStateTests`, then read the diff.
enum ScenarioFiles {
    /// Writes a script's transcript: comments and blank lines kept, each command as `> command`
    /// with its answers indented under it.
    static func transcript(of script: String, _ execute: ([String]) -> [String]) -> [String] {
        var output: [String] = []
        for line in script.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty || trimmed.hasPrefix("#") {
                output.append(line)
                continue
            }
            output.append("> " + trimmed)
            for answer in execute(trimmed.split(separator: " ").map(String.init)) { output.append("  " + answer) }
        }
        return output
    }

    /// Scripts are read from the copied resource; regenerated goldens are written to the source tree.
    static var bundleDirectory: URL { Bundle.module.resourceURL!.appendingPathComponent("Scenarios") }
    static var sourceDirectory: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Scenarios")
    }

    /// Metadata scenarios: every script except the consumer-group ones (`groups-*`).
    static func names() -> [String] { allNames().filter { !$0.hasPrefix(groupPrefix) } }
    /// Consumer-group scenarios, run by `GroupScenarioRunner`.
    static func groupNames() -> [String] { allNames().filter { $0.hasPrefix(groupPrefix) } }
    static let groupPrefix = "groups-"

    static func allNames() -> [String] {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: bundleDirectory.path)) ?? []
        return files.filter { $0.hasSuffix(".txt") }.map { String($0.dropLast(4)) }.sorted()
    }

    /// Compares `transcript` with `<name>.golden`, or rewrites the golden file when
    /// `PETREL_REGENERATE_GOLDEN=1`.
    static func check(_ name: String, transcript: String) throws {
        if ProcessInfo.processInfo.environment["PETREL_REGENERATE_GOLDEN"] == "1" {
            let url = sourceDirectory.appendingPathComponent(name + ".golden")
            try transcript.write(to: url, atomically: true, encoding: .utf8)
            return
        }
        let goldenURL = bundleDirectory.appendingPathComponent(name + ".golden")
        guard let golden = try? String(contentsOf: goldenURL, encoding: .utf8) else {
            Issue.record("\(name).golden is missing; run with PETREL_REGENERATE_GOLDEN=1 to create it")
            return
        }
        if golden != transcript {
            let expected = golden.split(separator: "\n", omittingEmptySubsequences: false)
            let actual = transcript.split(separator: "\n", omittingEmptySubsequences: false)
            let line = (0..<min(expected.count, actual.count)).first { expected[$0] != actual[$0] } ?? min(expected.count, actual.count)
            let want = line < expected.count ? String(expected[line]) : "<end>"
            let got = line < actual.count ? String(actual[line]) : "<end>"
            Issue.record("\(name): transcript differs from golden at line \(line + 1)\n  golden: \(want)\n  actual: \(got)")
        }
    }
}

@Suite struct ScenarioTests {
    @Test func scenariosExist() {
        #expect(ScenarioFiles.names().count >= 9, "scenario scripts missing from the test bundle")
    }

    @Test(arguments: ScenarioFiles.names())
    func scenario(_ name: String) throws {
        let script = try String(contentsOf: ScenarioFiles.bundleDirectory.appendingPathComponent(name + ".txt"), encoding: .utf8)
        var runner = ScenarioRunner()
        let transcript = runner.run(script: script)
        #expect(runner.failures.isEmpty, "\(name): \(runner.failures)")
        try ScenarioFiles.check(name, transcript: transcript)
    }
}

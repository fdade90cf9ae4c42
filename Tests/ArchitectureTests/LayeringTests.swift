import Foundation
import Testing

/// Layering is a test (STYLE.md #20). SwiftPM lets a target import a dependency of a dependency, so
/// nothing but this test stops `BrokerHTTP` from reaching into `LogStorage`, or a core from pulling in
/// Foundation. The rules:
///
/// 1. A target under `Sources/` imports only its *direct* dependencies as declared in Package.swift
///    (targets and products), plus system modules.
/// 2. Package.swift's dependencies point down the layers in `Layering.layers` (the arrows in the
///    comment at the top of Package.swift), so the graph cannot grow an upward or sideways arrow.
/// 3. The cores (`BrokerModel`, `Consensus`) import no Foundation (ARCHITECTURE.md: no I/O, no clock).
/// 4. Test support (`BrokerTesting`) is imported by no product code except `petrel-raft-sim`.
/// 5. Product code never uses `@testable import` (it compiles in debug builds only).
@Suite struct LayeringTests {
    @Test func sourcesImportOnlyWhatTheyMayImport() throws {
        let package = try PackageManifest.parse(try Layering.packageText())
        let files = try Layering.sourceFiles()
        // Guards against a scan that silently finds nothing (then every rule holds vacuously).
        #expect(files.count >= 20, "found only \(files.count) Swift files under Sources/")
        #expect(Set(files.map(\.target)).isSuperset(of: ["BrokerModel", "BrokerRuntime", "BrokerHTTP", "petrel"]))

        let violations = Layering.violations(files: files, rules: Layering.rules(from: package))
        #expect(violations.isEmpty, "layering violations:\n\(violations.joined(separator: "\n"))")
    }

    @Test func packageDependenciesPointDownTheLayers() throws {
        let package = try PackageManifest.parse(try Layering.packageText())
        #expect(package.targets.count >= 10, "Package.swift parse found only \(package.targets.count) targets")
        let problems = Layering.layerViolations(package)
        #expect(problems.isEmpty, "Package.swift dependencies against the layers:\n\(problems.joined(separator: "\n"))")
    }

    @Test func everySourcesFolderIsADeclaredTargetWithALayer() throws {
        let package = try PackageManifest.parse(try Layering.packageText())
        let folders = try FileManager.default.contentsOfDirectory(atPath: Layering.root.appendingPathComponent("Sources").path)
            .filter { !$0.hasPrefix(".") }
        for folder in folders {
            #expect(package.targets[folder] != nil, "Sources/\(folder) is not a target in Package.swift")
            #expect(Layering.layers[folder] != nil, "Sources/\(folder) has no layer in Layering.layers")
        }
    }

    // MARK: the checker itself can fail

    @Test func theCheckerReportsEachKindOfViolation() {
        let rules = Layering.Rules(dependencies: [
            "BrokerModel": [],
            "Consensus": ["BrokerModel"],
            "LogStorage": ["BrokerModel"],
            "BrokerRuntime": ["BrokerModel", "LogStorage", "Logging"],
            "BrokerHTTP": ["BrokerModel", "BrokerRuntime"],
            "BrokerTesting": ["BrokerModel", "Consensus", "LogStorage"],
            "petrel-raft-sim": ["BrokerTesting", "Consensus", "BrokerModel"],
        ])
        let files = [
            SourceFile(target: "BrokerModel", path: "Sources/BrokerModel/A.swift", text: "import Foundation\n"),
            SourceFile(target: "Consensus", path: "Sources/Consensus/B.swift", text: "@preconcurrency import struct FoundationEssentials.Data\nimport BrokerModel\n"),
            SourceFile(target: "LogStorage", path: "Sources/LogStorage/C.swift", text: "import BrokerModel\nimport BrokerRuntime\n"),
            SourceFile(target: "BrokerHTTP", path: "Sources/BrokerHTTP/D.swift", text: "import BrokerRuntime\n  public import LogStorage // a dependency of a dependency\n"),
            SourceFile(target: "BrokerRuntime", path: "Sources/BrokerRuntime/E.swift", text: "import Foundation\nimport BrokerTesting\n@testable import LogStorage\n"),
            SourceFile(target: "BrokerHTTP", path: "Sources/BrokerHTTP/F.swift", text: "import NIOCore\n"),
            SourceFile(target: "Mystery", path: "Sources/Mystery/G.swift", text: "import BrokerModel\n"),
        ]
        let v = Layering.violations(files: files, rules: rules)
        #expect(v.contains("Sources/BrokerModel/A.swift:1: BrokerModel is a core and must not import Foundation"))
        #expect(v.contains("Sources/Consensus/B.swift:1: Consensus is a core and must not import FoundationEssentials"))
        #expect(v.contains("Sources/LogStorage/C.swift:2: LogStorage imports BrokerRuntime, which is not among its dependencies (BrokerModel)"))
        #expect(v.contains("Sources/BrokerHTTP/D.swift:2: BrokerHTTP imports LogStorage, which is not among its dependencies (BrokerModel, BrokerRuntime)"))
        #expect(v.contains("Sources/BrokerRuntime/E.swift:2: BrokerRuntime imports test support BrokerTesting; only petrel-raft-sim may"))
        #expect(v.contains("Sources/BrokerRuntime/E.swift:3: BrokerRuntime uses @testable import, which only tests may"))
        #expect(v.contains("Sources/BrokerHTTP/F.swift:1: BrokerHTTP imports NIOCore, which is not among its dependencies (BrokerModel, BrokerRuntime)"))
        #expect(v.contains("Sources/Mystery/G.swift: target Mystery is not declared in Package.swift"))
        #expect(v.count == 8, "unexpected extra violations: \(v)")

        // The same files with allowed imports only: no violations.
        let clean = [
            SourceFile(target: "BrokerModel", path: "Sources/BrokerModel/A.swift", text: "import Synchronization\n"),
            SourceFile(target: "BrokerRuntime", path: "Sources/BrokerRuntime/E.swift", text: "import Foundation\nimport Dispatch\nimport LogStorage\nimport Logging\n"),
            SourceFile(target: "petrel-raft-sim", path: "Sources/petrel-raft-sim/main.swift", text: "import BrokerTesting\nimport Consensus\n"),
        ]
        #expect(Layering.violations(files: clean, rules: rules).isEmpty)
    }

    @Test func importsAreFoundInEveryForm() {
        let text = #"""
            import A
            @testable import B
            import struct C.Thing
            @preconcurrency import func D.run
            public import E.Submodule
            @_implementationOnly import F;
              #if canImport(Glibc)
              import G
              #endif
            // import NotThis
            /* import NorThis
               import NorThat */
            let s = """
            import InAString
            """
            let importance = 1
            """#
        let imports = ImportScanner.imports(in: text)
        #expect(imports.map(\.module) == ["A", "B", "C", "D", "E", "F", "G"])
        #expect(imports.map(\.isTestable) == [false, true, false, false, false, false, false])
        #expect(imports.map(\.line) == [1, 2, 3, 4, 5, 6, 8])
    }

    @Test func packageManifestParserReadsTargetsAndProducts() throws {
        let text = """
            let package = Package(
                targets: [
                    .target(name: "Low", swiftSettings: s),
                    .target(name: "Mid", dependencies: ["Low", .product(name: "Logging", package: "swift-log")]),
                    .executableTarget(
                        name: "tool",
                        dependencies: [
                            "Mid",
                            .product(name: "ArgumentParser", package: "swift-argument-parser"),
                        ],
                        swiftSettings: s
                    ),
                    .testTarget(name: "MidTests", dependencies: ["Mid"]),
                ]
            )
            """
        let manifest = try PackageManifest.parse(text)
        #expect(manifest.targets["Low"] == PackageManifest.Target(kind: .regular, dependencies: []))
        #expect(manifest.targets["Mid"] == PackageManifest.Target(kind: .regular, dependencies: ["Low", "Logging"]))
        #expect(manifest.targets["tool"] == PackageManifest.Target(kind: .executable, dependencies: ["Mid", "ArgumentParser"]))
        #expect(manifest.targets["MidTests"] == PackageManifest.Target(kind: .test, dependencies: ["Mid"]))
    }

    @Test func anUpwardArrowInPackageSwiftIsReported() throws {
        var manifest = try PackageManifest.parse(try Layering.packageText())
        manifest.targets["LogStorage"]?.dependencies.append("BrokerRuntime")
        manifest.targets["BrokerModel"]?.dependencies.append("Consensus")
        manifest.targets["BrokerRuntime"]?.dependencies.append("BrokerTesting")
        let problems = Layering.layerViolations(manifest)
        #expect(problems.contains("LogStorage (layer 1) depends on BrokerRuntime (layer 3); dependencies must point to a lower layer"))
        #expect(problems.contains("BrokerModel (layer 0) depends on Consensus (layer 1); dependencies must point to a lower layer"))
        #expect(problems.contains("BrokerRuntime depends on test support BrokerTesting; only petrel-raft-sim may"))
    }
}

// MARK: - the checker

struct SourceFile {
    /// The target (folder name under `Sources/`).
    var target: String
    /// Path relative to the package root, for messages.
    var path: String
    var text: String
}

enum Layering {
    /// The package root: three levels above this file (Tests/ArchitectureTests/LayeringTests.swift).
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The intended layers, lowest first (Package.swift's header comment): a target may depend only on
    /// targets of a lower layer. A new target must be given a layer here, on purpose.
    static let layers: [String: Int] = [
        // The CRC-32C instruction shim sits under the vocabulary itself.
        "CCRC32C": -1,
        "BrokerModel": 0, "CMicroHTTPD": 0, "WebSocketCodec": 0, "CCurl": 0,
        "Consensus": 1, "LogStorage": 1, "ClusterState": 1, "MicroHTTP": 1, "BrokerClient": 1,
        "BrokerTesting": 2,
        "BrokerRuntime": 3,
        "BrokerHTTP": 4, "BrokerPeers": 4,
        "petrel": 5, "petrel-raft-sim": 5,
        "petrel-bench": 5,
    ]

    /// Cores: no I/O, no clock, no threads, hence no Foundation (ARCHITECTURE.md).
    static let foundationFree: Set<String> = ["BrokerModel", "Consensus", "WebSocketCodec", "ClusterState"]
    static let foundationModules: Set<String> = [
        "Foundation", "FoundationEssentials", "FoundationInternationalization", "FoundationNetworking", "FoundationXML",
    ]
    /// Toolchain and OS modules any target may import (subject to the Foundation rule).
    static let systemModules: Set<String> = foundationModules.union([
        "Swift", "_Concurrency", "_StringProcessing", "RegexBuilder", "Synchronization", "Dispatch",
        "Glibc", "Musl", "Darwin", "WinSDK", "Android",
    ])
    /// Simulation support: tests and the simulator only.
    static let testSupport: Set<String> = ["BrokerTesting"]
    static let testSupportUsers: Set<String> = ["petrel-raft-sim"]

    struct Rules {
        /// Target → the modules it declares as direct dependencies (targets and products).
        var dependencies: [String: Set<String>]
    }

    static func rules(from manifest: PackageManifest) -> Rules {
        var deps: [String: Set<String>] = [:]
        for (name, target) in manifest.targets where target.kind != .test { deps[name] = Set(target.dependencies) }
        return Rules(dependencies: deps)
    }

    static func packageText() throws -> String {
        try String(contentsOf: root.appendingPathComponent("Package.swift"), encoding: .utf8)
    }

    /// Every `.swift` file under `Sources/<Target>/`, recursively.
    static func sourceFiles() throws -> [SourceFile] {
        let sources = root.appendingPathComponent("Sources")
        var out: [SourceFile] = []
        for target in try FileManager.default.contentsOfDirectory(atPath: sources.path).sorted() where !target.hasPrefix(".") {
            let dir = sources.appendingPathComponent(target)
            guard let walker = FileManager.default.enumerator(atPath: dir.path) else { continue }
            while let relative = walker.nextObject() as? String {
                guard relative.hasSuffix(".swift") else { continue }
                let text = try String(contentsOf: dir.appendingPathComponent(relative), encoding: .utf8)
                out.append(SourceFile(target: target, path: "Sources/\(target)/\(relative)", text: text))
            }
        }
        return out
    }

    /// Human-readable violations, `path:line: message`, sorted.
    static func violations(files: [SourceFile], rules: Rules) -> [String] {
        var out: [String] = []
        for file in files {
            guard let allowed = rules.dependencies[file.target] else {
                out.append("\(file.path): target \(file.target) is not declared in Package.swift")
                continue
            }
            for imp in ImportScanner.imports(in: file.text) {
                let at = "\(file.path):\(imp.line): \(file.target)"
                if imp.isTestable { out.append("\(at) uses @testable import, which only tests may") }
                if testSupport.contains(imp.module) {
                    if !testSupportUsers.contains(file.target) {
                        out.append("\(at) imports test support \(imp.module); only \(testSupportUsers.sorted().joined(separator: ", ")) may")
                    }
                    continue
                }
                if foundationModules.contains(imp.module) && foundationFree.contains(file.target) {
                    out.append("\(at) is a core and must not import \(imp.module)")
                    continue
                }
                if imp.module == file.target.replacingOccurrences(of: "-", with: "_") { continue }
                if !allowed.contains(imp.module) && !systemModules.contains(imp.module) {
                    out.append("\(at) imports \(imp.module), which is not among its dependencies (\(allowed.sorted().joined(separator: ", ")))")
                }
            }
        }
        return out.sorted()
    }

    /// Checks Package.swift's own arrows against `layers`.
    static func layerViolations(_ manifest: PackageManifest) -> [String] {
        var out: [String] = []
        for (name, target) in manifest.targets where target.kind != .test {
            guard let layer = layers[name] else {
                out.append("\(name) has no layer in Layering.layers")
                continue
            }
            for dep in target.dependencies {
                if testSupport.contains(dep) {
                    if !testSupportUsers.contains(name) { out.append("\(name) depends on test support \(dep); only \(testSupportUsers.sorted().joined(separator: ", ")) may") }
                    continue
                }
                // Products of other packages (Logging, ArgumentParser) sit outside the layers.
                guard manifest.targets[dep] != nil else { continue }
                guard let depLayer = layers[dep] else { continue }  // reported as "has no layer" above
                if depLayer >= layer {
                    out.append("\(name) (layer \(layer)) depends on \(dep) (layer \(depLayer)); dependencies must point to a lower layer")
                }
            }
        }
        return out.sorted()
    }
}

/// Finds `import` declarations in Swift source, line by line. Skips comments and multi-line string
/// literals; understands attributes (`@testable`, `@preconcurrency`, `@_implementationOnly`), access
/// levels (`public import`) and kinded imports (`import struct M.T`), which all name module `M`.
enum ImportScanner {
    struct Import: Equatable {
        var module: String
        var line: Int
        var isTestable: Bool
    }

    static let modifiers: Set<String> = ["public", "package", "internal", "fileprivate", "private", "open"]
    static let kinds: Set<String> = ["typealias", "struct", "class", "enum", "protocol", "let", "var", "func"]

    static func imports(in text: String) -> [Import] {
        var out: [Import] = []
        var inBlockComment = false
        var inMultilineString = false
        for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            var line = Substring(raw)
            if inBlockComment {
                guard let end = line.range(of: "*/") else { continue }
                line = line[end.upperBound...]
                inBlockComment = false
            }
            if inMultilineString {
                if line.contains("\"\"\"") { inMultilineString = false }
                continue
            }
            // A line that opens (and does not close) a multi-line string: the following lines are text.
            if line.components(separatedBy: "\"\"\"").count % 2 == 0 {
                inMultilineString = true
                continue
            }
            if let comment = line.range(of: "//") { line = line[..<comment.lowerBound] }
            if let open = line.range(of: "/*") {
                if line[open.upperBound...].range(of: "*/") == nil { inBlockComment = true }
                line = line[..<open.lowerBound]
            }
            let tokens = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == ";" }).map(String.init)
            var i = 0
            var isTestable = false
            while i < tokens.count, tokens[i].hasPrefix("@") || modifiers.contains(tokens[i]) {
                if tokens[i] == "@testable" { isTestable = true }
                i += 1
            }
            guard i < tokens.count, tokens[i] == "import" else { continue }
            i += 1
            if i < tokens.count, kinds.contains(tokens[i]) { i += 1 }
            guard i < tokens.count else { continue }
            let module = tokens[i].split(separator: ".").first.map(String.init) ?? tokens[i]
            out.append(Import(module: module, line: index + 1, isTestable: isTestable))
        }
        return out
    }
}

/// Just enough of Package.swift: each `.target`, `.executableTarget` and `.testTarget` with its
/// name and the names in its `dependencies:` (target names and `.product(name:)` names).
struct PackageManifest {
    struct Target: Equatable {
        enum Kind: Equatable { case regular, executable, test }
        var kind: Kind
        var dependencies: [String]
    }

    struct ParseError: Error, CustomStringConvertible {
        var description: String
    }

    var targets: [String: Target] = [:]

    static func parse(_ text: String) throws -> PackageManifest {
        let chars = Array(text)
        var manifest = PackageManifest()
        let markers: [(String, Target.Kind)] = [(".target(", .regular), (".executableTarget(", .executable), (".testTarget(", .test)]
        for (marker, kind) in markers {
            let pattern = Array(marker)
            var i = 0
            while let start = find(pattern, in: chars, from: i) {
                let open = start + pattern.count - 1
                guard let close = matching(chars, open: open, "(", ")") else { throw ParseError(description: "unbalanced \(marker)") }
                let body = String(chars[(open + 1)..<close])
                guard let name = firstQuoted(after: "name:", in: body) else { throw ParseError(description: "\(marker) without a name") }
                manifest.targets[name] = Target(kind: kind, dependencies: try dependencies(in: body))
                i = close
            }
        }
        return manifest
    }

    static func dependencies(in body: String) throws -> [String] {
        let chars = Array(body)
        guard let start = find(Array("dependencies:"), in: chars, from: 0) else { return [] }
        guard let open = chars[start...].firstIndex(of: "["), let close = matching(chars, open: open, "[", "]") else {
            throw ParseError(description: "dependencies without a balanced list")
        }
        var list = String(chars[(open + 1)..<close])
        // `package: "swift-log"` names the package, not a module.
        while let r = list.range(of: #"package:\s*"[^"]*""#, options: .regularExpression) { list.removeSubrange(r) }
        return list.split(separator: "\"", omittingEmptySubsequences: false).enumerated().filter { $0.offset % 2 == 1 }.map { String($0.element) }
    }

    static func find(_ pattern: [Character], in chars: [Character], from: Int) -> Int? {
        guard pattern.count <= chars.count else { return nil }
        var i = from
        while i + pattern.count <= chars.count {
            if chars[i..<(i + pattern.count)].elementsEqual(pattern) { return i }
            i += 1
        }
        return nil
    }

    static func matching(_ chars: [Character], open: Int, _ o: Character, _ c: Character) -> Int? {
        var depth = 0
        var inString = false
        for i in open..<chars.count {
            let ch = chars[i]
            if ch == "\"" { inString.toggle() }
            if inString { continue }
            if ch == o { depth += 1 }
            if ch == c {
                depth -= 1
                if depth == 0 { return i }
            }
        }
        return nil
    }

    static func firstQuoted(after key: String, in text: String) -> String? {
        guard let k = text.range(of: key) else { return nil }
        let rest = text[k.upperBound...]
        guard let q1 = rest.firstIndex(of: "\"") else { return nil }
        let afterQ1 = rest[rest.index(after: q1)...]
        guard let q2 = afterQ1.firstIndex(of: "\"") else { return nil }
        return String(afterQ1[..<q2])
    }
}

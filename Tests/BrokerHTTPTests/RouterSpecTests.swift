import BrokerHTTP
import Foundation
import Testing

/// `Api/openapi.yaml` is the contract; `Router.routes` is what the server does. These tests fail as
/// soon as the two disagree on a method, a path template or an operationId (STYLE.md #16).
@Suite struct RouterSpecTests {
    @Test func specAndRouterDescribeTheSameOperations() throws {
        let spec = try SpecOperations.parse(try SpecOperations.loadSpecText())
        let differences = SpecOperations.differences(spec: spec, routes: SpecOperations.routerOperations())
        #expect(differences.isEmpty, "Api/openapi.yaml and Router.routes disagree:\n\(differences.joined(separator: "\n"))")
        // Guards against a parser that silently finds nothing (then both sides could look "equal").
        #expect(spec.count == Router.routes.count)
    }

    @Test func everyOperationHasExactlyOneRouteAndOneSpecEntry() throws {
        let spec = try SpecOperations.parse(try SpecOperations.loadSpecText())
        for operation in BrokerHTTP.Operation.allCases {
            #expect(Router.routes.filter { $0.operation == operation }.count == 1, "Router.routes must route \(operation) once")
            #expect(spec.filter { $0.operationId == operation.rawValue }.count == 1, "Api/openapi.yaml must describe \(operation) once")
        }
    }

    @Test func routesAreUnique() {
        let keys = Router.routes.map { "\($0.method) \($0.template)" }
        #expect(Set(keys).count == keys.count)
    }

    // MARK: the checker itself can fail

    @Test func aDoctoredSpecIsReported() throws {
        let real = try SpecOperations.loadSpecText()
        let routes = SpecOperations.routerOperations()

        // A renamed operationId.
        let renamed = real.replacingOccurrences(of: "      operationId: getTopic\n", with: "      operationId: describeTopic\n")
        #expect(renamed != real)
        let renamedDiff = SpecOperations.differences(spec: try SpecOperations.parse(renamed), routes: routes)
        #expect(renamedDiff.contains("router only: GET /v1/topics/{topic} getTopic"))
        #expect(renamedDiff.contains("spec only: GET /v1/topics/{topic} describeTopic"))

        // A path the router does not have (renamed template).
        let moved = real.replacingOccurrences(of: "\n  /healthz:\n", with: "\n  /health:\n")
        #expect(moved != real)
        let movedDiff = SpecOperations.differences(spec: try SpecOperations.parse(moved), routes: routes)
        #expect(movedDiff.contains("spec only: GET /health getHealth"))
        #expect(movedDiff.contains("router only: GET /healthz getHealth"))

        // A method changed (PATCH documented as PUT).
        let method = real.replacingOccurrences(of: "\n    patch:\n      operationId: updateTopic\n", with: "\n    put:\n      operationId: updateTopic\n")
        #expect(method != real)
        let methodDiff = SpecOperations.differences(spec: try SpecOperations.parse(method), routes: routes)
        #expect(methodDiff.contains("spec only: PUT /v1/topics/{topic} updateTopic"))
    }

    @Test func aMissingOperationIdIsAnError() {
        let text = """
            paths:
              /a:
                get:
                  summary: no id
            components:
              schemas: {}
            """
        #expect(throws: SpecOperations.ParseError.self) { try SpecOperations.parse(text) }
    }

    @Test func parserReadsOnlyThePathsSection() throws {
        let text = """
            openapi: 3.0.3
            info:
              title: x
            paths:
              /a/{id}:
                parameters:
                  - name: id
                get:
                  operationId: getA
                  responses: {}
                delete:
                  operationId: deleteA
              /b:
                post:
                  operationId: postB
            components:
              schemas:
                get:
                  operationId: notAnOperation
            """
        let ops = try SpecOperations.parse(text)
        #expect(ops == [
            SpecOperation(method: "GET", template: "/a/{id}", operationId: "getA"),
            SpecOperation(method: "DELETE", template: "/a/{id}", operationId: "deleteA"),
            SpecOperation(method: "POST", template: "/b", operationId: "postB"),
        ])
    }

    // MARK: Router.match

    @Test func matchFindsPathParameters() {
        #expect(Router.match(method: "GET", segments: ["v1", "topics", "orders", "partitions", "3", "records"])
            == .found(.readRecords, ["topic": "orders", "partition": "3"]))
        #expect(Router.match(method: "POST", segments: ["v1", "topics", "orders", "records"]) == .found(.produceRecords, ["topic": "orders"]))
        #expect(Router.match(method: "GET", segments: ["v1", "topics"]) == .found(.listTopics, [:]))
        #expect(Router.match(method: "POST", segments: ["v1", "topics"]) == .found(.createTopic, [:]))
    }

    @Test func aDecodedSlashStaysInsideItsSegment() {
        // "%2F" decodes to "/" inside one segment; the router must not split it into two.
        #expect(Router.match(method: "GET", segments: ["v1", "topics", "a/b"]) == .found(.getTopic, ["topic": "a/b"]))
    }

    @Test func wrongMethodListsTheAllowedOnes() {
        #expect(Router.match(method: "PUT", segments: ["v1", "topics", "orders"]) == .methodNotAllowed(["GET", "PATCH", "DELETE"]))
        #expect(Router.match(method: "DELETE", segments: ["healthz"]) == .methodNotAllowed(["GET"]))
        #expect(Router.match(method: "GET", segments: ["v1", "topics", "orders", "records"]) == .methodNotAllowed(["POST"]))
    }

    @Test func unknownPathsAreNotFound() {
        #expect(Router.match(method: "GET", segments: ["nope"]) == .notFound)
        #expect(Router.match(method: "GET", segments: ["v2", "topics"]) == .notFound)
        #expect(Router.match(method: "GET", segments: ["v1", "topics", "orders", "partitions"]) == .notFound)
        #expect(Router.match(method: "GET", segments: ["v1", "topics", "orders", "partitions", "0", "records", "x"]) == .notFound)
    }

    @Test func restProxyV2PathsSitBesideV1() {
        #expect(Router.match(method: "GET", segments: []) == .found(.v2GetRoot, [:]))
        #expect(Router.match(method: "GET", segments: ["topics"]) == .found(.v2ListTopics, [:]))
        #expect(Router.match(method: "POST", segments: ["topics", "orders"]) == .found(.v2ProduceToTopic, ["topic": "orders"]))
        #expect(Router.match(method: "POST", segments: ["topics", "orders", "partitions", "2"])
            == .found(.v2ProduceToPartition, ["topic": "orders", "partition": "2"]))
        #expect(Router.match(method: "GET", segments: ["topics", "orders", "partitions", "2", "offsets"])
            == .found(.v2GetPartitionOffsets, ["topic": "orders", "partition": "2"]))
        #expect(Router.match(method: "DELETE", segments: ["topics", "orders"]) == .methodNotAllowed(["GET", "POST"]))
        #expect(Router.match(method: "GET", segments: ["admin", "topics"]) == .methodNotAllowed(["POST"]))
        // The v1 paths are untouched.
        #expect(Router.match(method: "GET", segments: ["v1", "topics", "orders"]) == .found(.getTopic, ["topic": "orders"]))
    }

    @Test func headIsServedAsGet() {
        #expect(Router.match(method: "HEAD", segments: ["healthz"]) == .found(.getHealth, [:]))
        #expect(Router.match(method: "HEAD", segments: ["v1", "topics", "t"]) == .found(.getTopic, ["topic": "t"]))
        // HEAD on a path without GET is still a wrong method.
        #expect(Router.match(method: "HEAD", segments: ["v1", "topics", "t", "records"]) == .methodNotAllowed(["POST"]))
    }
}

/// One (method, path template, operationId) triple, from the spec or from the router.
struct SpecOperation: Hashable, CustomStringConvertible {
    var method: String
    var template: String
    var operationId: String
    var description: String { "\(method) \(template) \(operationId)" }
}

/// Reads the operations out of `Api/openapi.yaml` without a YAML library. The file's formatting is
/// part of its contract (see its header comment): path keys at 2-space indent under `paths:`, HTTP
/// methods at 4, `operationId:` at 6.
enum SpecOperations {
    struct ParseError: Error, CustomStringConvertible {
        var description: String
    }

    static let methods: Set<String> = ["get", "put", "post", "delete", "options", "head", "patch", "trace"]

    /// The package root is three levels above this file (Tests/BrokerHTTPTests/RouterSpecTests.swift).
    static func loadSpecText(filePath: String = #filePath) throws -> String {
        let root = URL(fileURLWithPath: filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return try String(contentsOf: root.appendingPathComponent("Api/openapi.yaml"), encoding: .utf8)
    }

    static func parse(_ text: String) throws(ParseError) -> [SpecOperation] {
        var out: [SpecOperation] = []
        var inPaths = false
        var path: String?
        var pending: (method: String, line: Int)?

        func finishMethod() throws(ParseError) {
            if let pending, let path {
                throw ParseError(description: "line \(pending.line): \(pending.method) \(path) has no operationId")
            }
        }

        for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.hasSuffix("\r") ? String(raw.dropLast()) : String(raw)
            let content = line.drop { $0 == " " }
            if content.isEmpty || content.hasPrefix("#") { continue }
            let indent = line.count - content.count
            if indent == 0 {
                try finishMethod()
                pending = nil
                path = nil
                inPaths = content == "paths:"
                continue
            }
            guard inPaths else { continue }
            if indent == 2 {
                try finishMethod()
                pending = nil
                guard content.hasPrefix("/"), content.hasSuffix(":") else {
                    throw ParseError(description: "line \(index + 1): expected a path key at 2-space indent, got '\(content)'")
                }
                path = String(content.dropLast())
            } else if indent == 4 {
                try finishMethod()
                pending = nil
                guard content.hasSuffix(":") else { continue }
                let key = String(content.dropLast())
                if methods.contains(key) { pending = (key.uppercased(), index + 1) }
            } else if indent == 6, content.hasPrefix("operationId:"), let method = pending?.method, let path {
                let id = content.dropFirst("operationId:".count).trimmingCharacters(in: .whitespaces)
                out.append(SpecOperation(method: method, template: path, operationId: id.trimmingCharacters(in: CharacterSet(charactersIn: "'\""))))
                pending = nil
            }
        }
        try finishMethod()
        return out
    }

    static func routerOperations() -> [SpecOperation] {
        Router.routes.map { SpecOperation(method: $0.method, template: $0.template, operationId: $0.operation.rawValue) }
    }

    /// Human-readable differences, sorted; empty when the two agree. Duplicates count as differences.
    static func differences(spec: [SpecOperation], routes: [SpecOperation]) -> [String] {
        var out: [String] = []
        let specSet = Set(spec)
        let routeSet = Set(routes)
        for op in specSet.subtracting(routeSet) { out.append("spec only: \(op)") }
        for op in routeSet.subtracting(specSet) { out.append("router only: \(op)") }
        if specSet.count != spec.count { out.append("the spec lists an operation twice") }
        if routeSet.count != routes.count { out.append("the router lists a route twice") }
        let ids = spec.map(\.operationId)
        if Set(ids).count != ids.count { out.append("the spec repeats an operationId") }
        return out.sorted()
    }
}

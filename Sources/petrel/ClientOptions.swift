import ArgumentParser
import BrokerClient
import Foundation

/// Where the CLI finds a broker: `--url`, else `PETREL_URL`, else the embedded default.
struct ClientOptions: ParsableArguments {
    @Option(help: "Broker URL (env PETREL_URL; default http://127.0.0.1:8082).") var url: String?

    func client() throws -> HTTPClient {
        let base = url ?? ProcessInfo.processInfo.environment["PETREL_URL"] ?? "http://127.0.0.1:8082"
        do { return try HTTPClient(baseURL: base) } catch { throw CLIError(error.message) }
    }
}

struct CLIError: Error, CustomStringConvertible {
    var description: String
    init(_ message: String) { description = message }
}

enum CLI {
    /// Sends a request; prints the body of a 2xx answer (if any) to stdout, or the error message
    /// to stderr and exits 1.
    @discardableResult
    static func call(_ client: HTTPClient, _ method: String, _ path: String, json: String? = nil, print shouldPrint: Bool = true) throws -> HTTPClient.Response {
        let headers = json == nil ? [] : [("Content-Type", "application/json")]
        let response: HTTPClient.Response
        do { response = try client.request(method, path, headers: headers, body: json.map { Array($0.utf8) }) } catch {
            throw CLIError("cannot reach the broker: \(error.message)")
        }
        guard (200..<300).contains(response.status) else {
            FileHandle.standardError.write(Data("petrel: \(response.status): \(response.text)\n".utf8))
            throw ExitCode(1)
        }
        if shouldPrint && !response.body.isEmpty { FileHandle.standardOutput.write(Data(response.body + [0x0A])) }
        return response
    }

    /// Percent-encodes a query value.
    static func escape(_ s: String) -> String {
        s.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~"))) ?? s
    }
}

import CCurl
import Foundation

/// A small blocking HTTP/1.1 client over libcurl, for the CLI and end-to-end tests (and, later, for
/// forwarding between brokers). One client owns one curl easy handle, so consecutive requests reuse
/// one keep-alive connection (LIBMICROHTTPD.md: ~6x the throughput of a new handle per request).
///
/// Not thread-safe: use one client per thread.
public final class HTTPClient {
    public struct Response: Sendable {
        public var status: Int
        public var headers: [(name: String, value: String)]
        public var body: [UInt8]
        public var text: String { String(decoding: body, as: UTF8.self) }
        public func header(_ name: String) -> String? {
            headers.first { $0.name.caseInsensitiveCompare(name) == .orderedSame }?.value
        }
    }

    public struct Failure: Error, CustomStringConvertible, Sendable {
        public var message: String
        public var description: String { message }
    }

    public let baseURL: String
    private let handle: UnsafeMutableRawPointer
    public var timeoutMilliseconds: Int

    private static let globalInit: Void = { curl_global_init(Int(CURL_GLOBAL_ALL)) }()

    /// `baseURL` like `http://127.0.0.1:8082` (no trailing slash needed).
    public init(baseURL: String, timeoutMilliseconds: Int = 30_000) throws(Failure) {
        _ = HTTPClient.globalInit
        guard let handle = curl_easy_init() else { throw Failure(message: "curl_easy_init failed") }
        self.handle = handle
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.timeoutMilliseconds = timeoutMilliseconds
    }

    deinit { curl_easy_cleanup(handle) }

    /// Collects the answer while libcurl runs (its callbacks take a context pointer, never a closure).
    private final class Collector {
        var body: [UInt8] = []
        var headerLines: [String] = []
    }

    private static let onBody: ccurl_data_callback = { data, size, count, context in
        let collector = Unmanaged<Collector>.fromOpaque(context!).takeUnretainedValue()
        let n = size * count
        data!.withMemoryRebound(to: UInt8.self, capacity: n) { collector.body.append(contentsOf: UnsafeBufferPointer(start: $0, count: n)) }
        return n
    }

    private static let onHeader: ccurl_data_callback = { data, size, count, context in
        let collector = Unmanaged<Collector>.fromOpaque(context!).takeUnretainedValue()
        let n = size * count
        let line = data!.withMemoryRebound(to: UInt8.self, capacity: n) { String(decoding: UnsafeBufferPointer(start: $0, count: n), as: UTF8.self) }
        // A new status line starts a new header block (after 100 Continue or a redirect).
        if line.hasPrefix("HTTP/") { collector.headerLines.removeAll() }
        collector.headerLines.append(line.trimmingCharacters(in: .whitespacesAndNewlines))
        return n
    }

    /// Sends one request. `path` starts with `/` and may carry a query string.
    public func request(_ method: String, _ path: String, headers: [(String, String)] = [], body: [UInt8]? = nil) throws(Failure) -> Response {
        curl_easy_reset(handle)
        let collector = Collector()
        let context = Unmanaged.passUnretained(collector).toOpaque()
        var list: UnsafeMutablePointer<curl_slist>?
        // No "Expect: 100-continue" round trip on larger bodies.
        for line in headers.map({ "\($0.0): \($0.1)" }) + ["Expect:"] { list = curl_slist_append(list, line) }
        defer { curl_slist_free_all(list) }
        let url = baseURL + path
        var code = CURLE_OK
        withExtendedLifetime(collector) {
            ccurl_setopt_string(handle, CURLOPT_URL, url)
            ccurl_setopt_string(handle, CURLOPT_CUSTOMREQUEST, method)
            ccurl_setopt_long(handle, CURLOPT_NOSIGNAL, 1)
            ccurl_setopt_long(handle, CURLOPT_TIMEOUT_MS, timeoutMilliseconds)
            ccurl_setopt_long(handle, CURLOPT_TCP_NODELAY, 1)
            ccurl_setopt_headers(handle, list)
            ccurl_setopt_callback(handle, CURLOPT_WRITEFUNCTION, HTTPClient.onBody)
            ccurl_setopt_pointer(handle, CURLOPT_WRITEDATA, context)
            ccurl_setopt_callback(handle, CURLOPT_HEADERFUNCTION, HTTPClient.onHeader)
            ccurl_setopt_pointer(handle, CURLOPT_HEADERDATA, context)
            if method == "HEAD" { ccurl_setopt_long(handle, CURLOPT_NOBODY, 1) }
            if let body {
                ccurl_setopt_offset(handle, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(body.count))
                // COPYPOSTFIELDS: libcurl keeps its own copy, so the Swift array's lifetime does not matter.
                body.withUnsafeBufferPointer { buffer in
                    _ = buffer.baseAddress.map { ccurl_setopt_pointer(handle, CURLOPT_COPYPOSTFIELDS, UnsafeMutableRawPointer(mutating: $0)) }
                }
                if body.isEmpty { ccurl_setopt_string(handle, CURLOPT_POSTFIELDS, "") }
            }
            code = curl_easy_perform(handle)
        }
        guard code == CURLE_OK else {
            throw Failure(message: "\(method) \(url): \(String(cString: curl_easy_strerror(code)))")
        }
        let parsed = collector.headerLines.dropFirst().compactMap { line -> (name: String, value: String)? in
            guard let colon = line.firstIndex(of: ":") else { return nil }
            return (String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
        }
        return Response(status: ccurl_response_code(handle), headers: parsed, body: collector.body)
    }
}

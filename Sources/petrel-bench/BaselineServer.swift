import CMicroHTTPD
import Glibc

/// A bare libmicrohttpd server with the broker's daemon settings (MicroHTTP's `HTTPServer.start`:
/// internal polling thread + epoll, suspend/resume, ITC, error log; thread pool 2; 64 KiB connection
/// memory) whose handler drains the body and answers a fixed 200 JSON body. What the broker does per
/// request on top of this is what the req/s ratio measures.
enum BaselineServer {
    static let responseBody: [UInt8] = Array("{\"ok\":true}".utf8)

    /// Marker stored in the per-request context after the headers-only call (no allocation: the
    /// handler keeps no state per request).
    nonisolated(unsafe) static let seenHeaders = UnsafeMutableRawPointer(bitPattern: 1)!

    static let accessHandler: MHD_AccessHandlerCallback = {
        _, connection, _, _, _, _, uploadDataSize, requestContext in
        guard let requestContext, let uploadDataSize else { return .NO }
        if requestContext.pointee == nil {
            requestContext.pointee = BaselineServer.seenHeaders
            return .YES
        }
        if uploadDataSize.pointee > 0 {
            // Drain: MHD wants the chunk marked consumed; the bytes are not kept.
            uploadDataSize.pointee = 0
            return .YES
        }
        // Like MicroHTTP, copy the body into a response made per request and name its type.
        let response = BaselineServer.responseBody.withUnsafeBytes {
            MHD_create_response_from_buffer($0.count, UnsafeMutableRawPointer(mutating: $0.baseAddress), .RESPMEM_MUST_COPY)
        }
        guard let response else { return .NO }
        _ = MHD_add_response_header(response, "Content-Type", "application/json")
        let result = MHD_queue_response(connection, 200, response)
        MHD_destroy_response(response)
        return result
    }

    /// Starts the daemon; returns it and the bound port.
    static func start(host: String, port: UInt16, threads: Int) throws -> (OpaquePointer, UInt16) {
        let flags =
            UInt32(MHD_USE_INTERNAL_POLLING_THREAD.rawValue) | UInt32(MHD_USE_EPOLL.rawValue)
            | UInt32(MHD_ALLOW_SUSPEND_RESUME.rawValue) | UInt32(MHD_USE_ERROR_LOG.rawValue)
            | UInt32(MHD_USE_ITC.rawValue)
        var extra: OpaquePointer?
        var errorNumber: Int32 = 0
        let daemon: OpaquePointer? = host.withCString { hostPointer in
            var parameters = cmhd_start_parameters(
                flags: flags, host: hostPointer, port: port,
                thread_pool_size: UInt32(threads),
                connection_limit: 4096,
                connection_memory_limit: 64 * 1024,
                connection_timeout: 120,
                handler: accessHandler, handler_cls: nil,
                completed: nil, completed_cls: nil,
                log: nil, log_cls: nil)
            return cmhd_start_daemon(&parameters, &extra, &errorNumber)
        }
        guard let daemon else {
            throw BenchError("baseline server cannot listen on \(host):\(port): \(String(cString: strerror(errorNumber)))")
        }
        // `extra` must outlive the daemon; the baseline server runs until the process exits.
        return (daemon, cmhd_daemon_port(daemon))
    }
}

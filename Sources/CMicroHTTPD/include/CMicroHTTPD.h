#ifndef CMICROHTTPD_H
#define CMICROHTTPD_H
// Thin, non-variadic wrappers over libmicrohttpd so Swift can call it.
// Swift cannot call variadic C functions (MHD_start_daemon, MHD_get_*_info) nor use cast macros
// (MHD_SIZE_UNKNOWN); everything here exists only for that reason and holds no policy.
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <microhttpd.h>

/// Log sink: receives one already formatted libmicrohttpd error message.
typedef void (*cmhd_log_function)(void *cls, const char *message);

/// Everything MHD_start_daemon needs, as plain fields.
struct cmhd_start_parameters {
    unsigned int flags;                 // MHD_FLAG bits
    const char *host;                   // numeric IPv4 or IPv6 address to bind, e.g. "127.0.0.1"
    uint16_t port;                      // 0 = let the kernel pick
    unsigned int thread_pool_size;      // MHD_OPTION_THREAD_POOL_SIZE (>= 1)
    unsigned int connection_limit;      // MHD_OPTION_CONNECTION_LIMIT
    size_t connection_memory_limit;     // MHD_OPTION_CONNECTION_MEMORY_LIMIT
    unsigned int connection_timeout;    // MHD_OPTION_CONNECTION_TIMEOUT, seconds
    MHD_AccessHandlerCallback handler;
    void *handler_cls;
    MHD_RequestCompletedCallback completed;
    void *completed_cls;
    cmhd_log_function log;              // may be NULL: messages are dropped
    void *log_cls;
};

/// Opaque state that must outlive the daemon; free it with cmhd_daemon_free after MHD_stop_daemon.
struct cmhd_daemon_extra;

/// Starts a daemon. Returns NULL on failure with *error_number set (errno of the failure, or EINVAL
/// for an unparsable host). The path is NOT percent-decoded by MHD (identity unescape callback):
/// query arguments and the URL reach the handler exactly as received.
struct MHD_Daemon *cmhd_start_daemon(const struct cmhd_start_parameters *parameters,
                                     struct cmhd_daemon_extra **extra_out,
                                     int *error_number);
void cmhd_daemon_free(struct cmhd_daemon_extra *extra);

/// The bound port (useful after starting with port 0), or 0 if unknown.
uint16_t cmhd_daemon_port(struct MHD_Daemon *daemon);

/// Writes the client's numeric address ("127.0.0.1" or "::1") into buffer; returns 0 on success.
int cmhd_connection_client_address(struct MHD_Connection *connection, char *buffer, size_t length);

/// MHD_SIZE_UNKNOWN and the content-reader sentinels (cast macros in microhttpd.h).
uint64_t cmhd_size_unknown(void);
ssize_t cmhd_content_reader_end_of_stream(void);
ssize_t cmhd_content_reader_end_with_error(void);

/// MHD_upgrade_action without varargs.
enum MHD_Result cmhd_upgrade_action(struct MHD_UpgradeResponseHandle *handle, enum MHD_UpgradeAction action);

// MARK: WebSocket support (additions for MicroHTTP's WebSocket transport)

/// MHD_upgrade_action(handle, MHD_UPGRADE_ACTION_CLOSE): the one way to close an upgraded socket.
enum MHD_Result cmhd_upgrade_close(struct MHD_UpgradeResponseHandle *handle);

/// SHA-1 of `length` bytes into `digest` (20 bytes), via nettle (already a dependency of MHD's TLS).
/// For the WebSocket accept key only: SHA-1 is not used for anything that needs collision resistance.
void cmhd_sha1(const uint8_t *data, size_t length, uint8_t *digest);

/// epoll without `struct epoll_event` (packed on x86_64, awkward to import): the fd is the event's data.
int cmhd_epoll_create(void);
/// `operation`: 1 add, 2 delete, 3 modify. `want_writable` adds EPOLLOUT to EPOLLIN | EPOLLRDHUP.
int cmhd_epoll_control(int epoll_fd, int operation, int fd, int want_writable);
/// Waits up to `timeout_milliseconds`; fills `fds[i]` and `flags[i]` (bit 0 readable or hang-up/error,
/// bit 1 writable). Returns the count, 0 on timeout, -1 with errno (EINTR is reported as 0).
int cmhd_epoll_wait(int epoll_fd, int *fds, uint32_t *flags, int capacity, int timeout_milliseconds);

/// An eventfd to wake an epoll loop (non-blocking, close-on-exec); -1 on failure.
int cmhd_eventfd_create(void);
/// Adds 1 to the eventfd counter (wakes its epoll waiter).
void cmhd_eventfd_signal(int fd);
/// Resets the eventfd counter.
void cmhd_eventfd_drain(int fd);

/// Non-blocking send that never raises SIGPIPE (MSG_NOSIGNAL | MSG_DONTWAIT). -1 with errno.
ssize_t cmhd_send_nonblocking(int fd, const void *bytes, size_t length);
/// Non-blocking recv (MSG_DONTWAIT). -1 with errno (EAGAIN when nothing is waiting).
ssize_t cmhd_recv_nonblocking(int fd, void *bytes, size_t length);

#endif

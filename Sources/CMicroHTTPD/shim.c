#include "CMicroHTTPD.h"
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <nettle/sha1.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct cmhd_daemon_extra {
    cmhd_log_function log;
    void *log_cls;
    union {
        struct sockaddr_in v4;
        struct sockaddr_in6 v6;
    } address;
};

static void cmhd_log_trampoline(void *cls, const char *format, va_list arguments) {
    struct cmhd_daemon_extra *extra = cls;
    if (extra->log == NULL) return;
    char message[512];
    vsnprintf(message, sizeof message, format, arguments);
    // MHD messages end with a newline; the sink wants a bare line.
    size_t length = strlen(message);
    while (length > 0 && (message[length - 1] == '\n' || message[length - 1] == '\r')) message[--length] = 0;
    extra->log(extra->log_cls, message);
}

// Identity: MHD must not percent-decode the URL or the query, so the Swift layer can split path
// segments before decoding ("a%2Fb" stays one segment) and decode everything exactly once.
static size_t cmhd_identity_unescape(void *cls, struct MHD_Connection *connection, char *s) {
    (void)cls; (void)connection;
    return strlen(s);
}

struct MHD_Daemon *cmhd_start_daemon(const struct cmhd_start_parameters *p,
                                     struct cmhd_daemon_extra **extra_out,
                                     int *error_number) {
    *extra_out = NULL;
    *error_number = 0;
    struct cmhd_daemon_extra *extra = calloc(1, sizeof *extra);
    if (extra == NULL) { *error_number = ENOMEM; return NULL; }
    extra->log = p->log;
    extra->log_cls = p->log_cls;
    unsigned int flags = p->flags;
    const struct sockaddr *address;
    if (inet_pton(AF_INET, p->host, &extra->address.v4.sin_addr) == 1) {
        extra->address.v4.sin_family = AF_INET;
        extra->address.v4.sin_port = htons(p->port);
        address = (const struct sockaddr *)&extra->address.v4;
    } else if (inet_pton(AF_INET6, p->host, &extra->address.v6.sin6_addr) == 1) {
        extra->address.v6.sin6_family = AF_INET6;
        extra->address.v6.sin6_port = htons(p->port);
        address = (const struct sockaddr *)&extra->address.v6;
        flags |= MHD_USE_IPv6;
    } else {
        free(extra);
        *error_number = EINVAL;
        return NULL;
    }
    struct MHD_OptionItem options[] = {
        { MHD_OPTION_SOCK_ADDR, 0, (void *)address },
        { MHD_OPTION_THREAD_POOL_SIZE, (intptr_t)p->thread_pool_size, NULL },
        { MHD_OPTION_CONNECTION_LIMIT, (intptr_t)p->connection_limit, NULL },
        { MHD_OPTION_CONNECTION_MEMORY_LIMIT, (intptr_t)p->connection_memory_limit, NULL },
        { MHD_OPTION_CONNECTION_TIMEOUT, (intptr_t)p->connection_timeout, NULL },
        { MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)p->completed, p->completed_cls },
        { MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)cmhd_log_trampoline, extra },
        { MHD_OPTION_UNESCAPE_CALLBACK, (intptr_t)cmhd_identity_unescape, NULL },
        { MHD_OPTION_END, 0, NULL },
    };
    errno = 0;
    struct MHD_Daemon *daemon = MHD_start_daemon(flags, p->port, NULL, NULL, p->handler, p->handler_cls,
                                                 MHD_OPTION_ARRAY, options, MHD_OPTION_END);
    if (daemon == NULL) {
        *error_number = errno != 0 ? errno : EIO;
        free(extra);
        return NULL;
    }
    *extra_out = extra;
    return daemon;
}

void cmhd_daemon_free(struct cmhd_daemon_extra *extra) { free(extra); }

uint16_t cmhd_daemon_port(struct MHD_Daemon *daemon) {
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_BIND_PORT);
    return info == NULL ? 0 : info->port;
}

int cmhd_connection_client_address(struct MHD_Connection *connection, char *buffer, size_t length) {
    const union MHD_ConnectionInfo *info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (info == NULL || info->client_addr == NULL) return -1;
    const struct sockaddr *address = info->client_addr;
    const void *raw;
    if (address->sa_family == AF_INET) raw = &((const struct sockaddr_in *)address)->sin_addr;
    else if (address->sa_family == AF_INET6) raw = &((const struct sockaddr_in6 *)address)->sin6_addr;
    else return -1;
    return inet_ntop(address->sa_family, raw, buffer, (socklen_t)length) == NULL ? -1 : 0;
}

uint64_t cmhd_size_unknown(void) { return MHD_SIZE_UNKNOWN; }
ssize_t cmhd_content_reader_end_of_stream(void) { return MHD_CONTENT_READER_END_OF_STREAM; }
ssize_t cmhd_content_reader_end_with_error(void) { return MHD_CONTENT_READER_END_WITH_ERROR; }

enum MHD_Result cmhd_upgrade_action(struct MHD_UpgradeResponseHandle *handle, enum MHD_UpgradeAction action) {
    return MHD_upgrade_action(handle, action);
}

// MARK: WebSocket support

enum MHD_Result cmhd_upgrade_close(struct MHD_UpgradeResponseHandle *handle) {
    return MHD_upgrade_action(handle, MHD_UPGRADE_ACTION_CLOSE);
}

void cmhd_sha1(const uint8_t *data, size_t length, uint8_t *digest) {
    struct sha1_ctx context;
    sha1_init(&context);
    sha1_update(&context, length, data);
    sha1_digest(&context, SHA1_DIGEST_SIZE, digest);
}

int cmhd_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int cmhd_epoll_control(int epoll_fd, int operation, int fd, int want_writable) {
    struct epoll_event event;
    memset(&event, 0, sizeof event);
    event.events = EPOLLIN | EPOLLRDHUP | (want_writable ? EPOLLOUT : 0);
    event.data.fd = fd;
    int op = operation == 1 ? EPOLL_CTL_ADD : operation == 2 ? EPOLL_CTL_DEL : EPOLL_CTL_MOD;
    return epoll_ctl(epoll_fd, op, fd, &event);
}

int cmhd_epoll_wait(int epoll_fd, int *fds, uint32_t *flags, int capacity, int timeout_milliseconds) {
    struct epoll_event events[64];
    if (capacity > 64) capacity = 64;
    int count = epoll_wait(epoll_fd, events, capacity, timeout_milliseconds);
    if (count < 0) return errno == EINTR ? 0 : -1;
    for (int i = 0; i < count; i++) {
        fds[i] = events[i].data.fd;
        uint32_t e = events[i].events;
        flags[i] = ((e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) ? 1u : 0u) | ((e & EPOLLOUT) ? 2u : 0u);
    }
    return count;
}

int cmhd_eventfd_create(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

void cmhd_eventfd_signal(int fd) {
    uint64_t one = 1;
    ssize_t written = write(fd, &one, sizeof one);
    (void)written;  // EAGAIN means the counter is already non-zero: the loop wakes anyway
}

void cmhd_eventfd_drain(int fd) {
    uint64_t value;
    ssize_t got = read(fd, &value, sizeof value);
    (void)got;
}

ssize_t cmhd_send_nonblocking(int fd, const void *bytes, size_t length) {
    return send(fd, bytes, length, MSG_NOSIGNAL | MSG_DONTWAIT);
}

ssize_t cmhd_recv_nonblocking(int fd, void *bytes, size_t length) {
    return recv(fd, bytes, length, MSG_DONTWAIT);
}

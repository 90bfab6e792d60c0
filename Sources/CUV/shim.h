#ifndef CUV_SHIM_H
#define CUV_SHIM_H

#include <uv.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <signal.h>
#include <string.h>
#include <stdio.h>
#include <unistd.h>

/* Handle casts live here so Swift never type-puns handle memory itself. */
static inline uv_handle_t *cuv_tcp_as_handle(uv_tcp_t *t) { return (uv_handle_t *)t; }
static inline uv_stream_t *cuv_tcp_as_stream(uv_tcp_t *t) { return (uv_stream_t *)t; }
static inline uv_handle_t *cuv_timer_as_handle(uv_timer_t *t) { return (uv_handle_t *)t; }
static inline uv_handle_t *cuv_signal_as_handle(uv_signal_t *s) { return (uv_handle_t *)s; }
static inline uv_handle_t *cuv_async_as_handle(uv_async_t *a) { return (uv_handle_t *)a; }
static inline uv_tcp_t *cuv_stream_as_tcp(uv_stream_t *s) { return (uv_tcp_t *)s; }

static inline void cuv_ignore_sigpipe(void) { signal(SIGPIPE, SIG_IGN); }

/* Swift 6 rejects C globals such as stdout outright. */
static inline void cuv_flush_stdout(void) { fflush(stdout); }
static inline void cuv_line_buffer_stdout(void) { setvbuf(stdout, NULL, _IOLBF, 0); }

/* Raise the soft file-descriptor limit to the hard one; returns the new soft limit. */
static inline long cuv_raise_nofile_limit(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return -1;
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
    return (long)rl.rlim_cur;
}

#endif

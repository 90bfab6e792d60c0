#ifndef CUV_SHIM_H
#define CUV_SHIM_H

#include <pthread.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <errno.h>
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
#include <stdint.h>
#include <time.h>
#include <sys/epoll.h>

/* Handle casts live here so Swift never type-puns handle memory itself. */
static inline uv_handle_t *cuv_tcp_as_handle(uv_tcp_t *t) { return (uv_handle_t *)t; }
static inline uv_stream_t *cuv_tcp_as_stream(uv_tcp_t *t) { return (uv_stream_t *)t; }
static inline uv_handle_t *cuv_timer_as_handle(uv_timer_t *t) { return (uv_handle_t *)t; }
static inline uv_handle_t *cuv_signal_as_handle(uv_signal_t *s) { return (uv_handle_t *)s; }
static inline uv_handle_t *cuv_async_as_handle(uv_async_t *a) { return (uv_handle_t *)a; }
static inline uv_handle_t *cuv_prepare_as_handle(uv_prepare_t *p) { return (uv_handle_t *)p; }
static inline uv_handle_t *cuv_idle_as_handle(uv_idle_t *i) { return (uv_handle_t *)i; }
static inline uv_tcp_t *cuv_stream_as_tcp(uv_stream_t *s) { return (uv_tcp_t *)s; }
static inline uv_req_t *cuv_getaddrinfo_as_req(uv_getaddrinfo_t *r) { return (uv_req_t *)r; }
static inline uv_req_t *cuv_work_as_req(uv_work_t *r) { return (uv_req_t *)r; }

static inline void cuv_ignore_sigpipe(void) { signal(SIGPIPE, SIG_IGN); }

/* SIGHUP's default action ends the process: ignore it until the reload handler is installed
   (libuv's uv_signal_start replaces this disposition). */
static inline void cuv_ignore_sighup(void) { signal(SIGHUP, SIG_IGN); }

/* Clears the calling thread's signal mask. A process can inherit blocked signals from whatever
   started it (Foundation's Process passes on its thread's mask), and then SIGTERM or SIGHUP
   would never arrive. Threads started afterwards inherit the cleared mask. */
static inline void cuv_unblock_all_signals(void) {
    sigset_t none;
    sigemptyset(&none);
    pthread_sigmask(SIG_SETMASK, &none, NULL);
}

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

/* The file-descriptor limit without changing it: the soft one, or the hard one (what
   cuv_raise_nofile_limit would raise the soft one to). -1 when unknown or unlimited. */
static inline long cuv_nofile_limit(int hard) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return -1;
    rlim_t v = hard ? rl.rlim_max : rl.rlim_cur;
    return v == RLIM_INFINITY ? -1 : (long)v;
}

/* Names the calling thread (at most 15 bytes show) for top -H and debuggers. prctl rather than
   pthread_setname_np or sched_getaffinity below: those need _GNU_SOURCE, and defining it here
   makes this module's view of the system headers clash with SwiftGlibc's on a clean build. */
static inline void cuv_set_thread_name(const char *name) { prctl(PR_SET_NAME, name, 0, 0, 0); }

/* CPUs this process may run on (its affinity mask, so `taskset` is respected). */
static inline int cuv_available_cpus(void) {
    unsigned long mask[16]; /* up to 1024 CPUs */
    long bytes = syscall(SYS_sched_getaffinity, 0, sizeof mask, mask);
    int count = 0;
    for (long i = 0; bytes > 0 && i < bytes / (long)sizeof(unsigned long); i++) count += __builtin_popcountl(mask[i]);
    if (count > 0) return count;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* A bound, non-blocking TCP socket with SO_REUSEADDR (and SO_REUSEPORT when asked, so several
   loops can each own one on the same address), listening when backlog > 0. Returns the
   descriptor, or -errno (libuv's error codes are -errno on Unix). */
static inline int cuv_listen_socket(const struct sockaddr *address, int reuseport, int backlog) {
    int fd = socket(address->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    int on = 1;
    int rc = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    if (rc == 0 && reuseport) rc = setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on);
    socklen_t length = address->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (rc == 0) rc = bind(fd, address, length);
    if (rc == 0 && backlog > 0) rc = listen(fd, backlog);
    if (rc != 0) {
        int error = errno;
        close(fd);
        return -error;
    }
    return fd;
}

/* The port a socket is bound to (host order), or -1. */
static inline int cuv_socket_port(int fd) {
    struct sockaddr_storage s;
    socklen_t length = sizeof s;
    if (getsockname(fd, (struct sockaddr *)&s, &length) != 0) return -1;
    if (s.ss_family == AF_INET6) return ntohs(((struct sockaddr_in6 *)&s)->sin6_port);
    return ntohs(((struct sockaddr_in *)&s)->sin_port);
}

/* Counters with one writer and any number of readers (metrics: a worker loop writes, a scrape on
   another thread reads). Relaxed atomic load and store, never a read-modify-write: on x86-64 and
   arm64 these are plain moves, yet ThreadSanitizer and the compiler see them as atomic. */
static inline void cuv_counter_add(uint64_t *p, uint64_t n) {
    __atomic_store_n(p, __atomic_load_n(p, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}
static inline void cuv_counter_store(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
static inline uint64_t cuv_counter_load(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }

/* Words shared by several writers (the `proxy`-scope rate limiter's table): a relaxed load and
   store, and a compare-and-swap that publishes with release and reads with acquire. */
static inline uint64_t cuv_shared_load(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void cuv_shared_store(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline int cuv_shared_cas(uint64_t *p, uint64_t *expected, uint64_t desired) {
    return __atomic_compare_exchange_n(p, expected, desired, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

/* Whether the batch of epoll events libuv is dispatching right now lists `fd`. libuv keeps the
   batch in the two slots past the end of `loop->watchers` while it runs the I/O callbacks (its
   own uv__platform_invalidate_fd reads them there to drop events of a descriptor closed
   mid-batch); outside the I/O phase the first slot is NULL. An entry may be one already
   dispatched: callers confirm with a system call. Returns -1 where it cannot tell (outside the
   I/O phase, or a libuv that keeps the batch elsewhere): callers then ask the socket.
   Linux/epoll only, as this project is. */
static inline int cuv_fd_in_current_poll_batch(const uv_loop_t *loop, int fd) {
#if UV_VERSION_HEX >= 0x012d00
    /* libuv 1.45 moved the batch elsewhere: unknown, so the caller asks the socket. */
    (void)loop; (void)fd;
    return -1;
#else
    void **slots = (void **)loop->watchers;
    if (slots == NULL || fd < 0) return -1;
    const struct epoll_event *events = (const struct epoll_event *)slots[loop->nwatchers];
    uintptr_t count = (uintptr_t)slots[loop->nwatchers + 1];
    /* Outside the I/O phase (a timer, a deferred write callback): unknown too. */
    if (events == NULL) return -1;
    for (uintptr_t i = 0; i < count; i++)
        if (events[i].data.fd == fd) return 1;
    return 0;
#endif
}

/* Wall-clock milliseconds for log lines and the status page (vDSO: no system call). */
static inline long long cuv_wall_clock_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

#endif

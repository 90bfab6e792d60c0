#include "cdns.h"

#include <ares.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

static pthread_once_t library_once = PTHREAD_ONCE_INIT;
static int library_status = ARES_SUCCESS;

static void library_init(void) { library_status = ares_library_init(ARES_LIB_INIT_ALL); }

/* What the c-ares callback hands back to the waiting loop. */
typedef struct lookup_state {
    int done;
    int count;       /* addresses written, or -1 */
    int found;       /* addresses in the answer */
    cdns_address *out;
    int max;
    char *error;
    size_t error_len;
} lookup_state;

static void answered(void *arg, int status, int timeouts, struct ares_addrinfo *result) {
    (void)timeouts;
    lookup_state *st = arg;
    st->done = 1;
    if (status != ARES_SUCCESS) {
        st->count = -1;
        /* ENODATA: the name exists without A/AAAA records; that is an empty answer. */
        if (status == ARES_ENODATA) st->count = 0;
        else snprintf(st->error, st->error_len, "%s", ares_strerror(status));
        if (result) ares_freeaddrinfo(result);
        return;
    }
    int n = 0;
    for (struct ares_addrinfo_node *node = result ? result->nodes : NULL; node; node = node->ai_next) {
        if (node->ai_family == AF_INET || node->ai_family == AF_INET6) st->found++;
        if (n >= st->max) continue;
        cdns_address *a = &st->out[n];
        memset(a, 0, sizeof *a);
        if (node->ai_family == AF_INET && node->ai_addr) {
            a->family = AF_INET;
            memcpy(a->bytes, &((struct sockaddr_in *)node->ai_addr)->sin_addr, 4);
        } else if (node->ai_family == AF_INET6 && node->ai_addr) {
            a->family = AF_INET6;
            memcpy(a->bytes, &((struct sockaddr_in6 *)node->ai_addr)->sin6_addr, 16);
        } else {
            continue;
        }
        a->ttl_s = node->ai_ttl > 0 ? node->ai_ttl : 0;
        n++;
    }
    st->count = n;
    if (result) ares_freeaddrinfo(result);
}

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void cdns_cancel(int *flag) { __atomic_store_n(flag, 1, __ATOMIC_RELAXED); }

int cdns_lookup(const char *servers, const char *name, int timeout_ms, int tries, const int *cancel,
                cdns_address *out, int max, int *found, char *error, size_t error_len) {
    if (error_len) error[0] = 0;
    *found = 0;
    pthread_once(&library_once, library_init);
    if (library_status != ARES_SUCCESS) {
        snprintf(error, error_len, "c-ares: %s", ares_strerror(library_status));
        return -1;
    }
    struct ares_options options;
    memset(&options, 0, sizeof options);
    options.timeout = timeout_ms > 0 ? timeout_ms : 1000;
    options.tries = tries > 0 ? tries : 1;
    options.lookups = (char *)"b";  /* DNS only: not /etc/hosts */
    options.ndomains = 0;           /* no search list: the name as written */
    options.domains = NULL;
    int mask = ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_LOOKUPS | ARES_OPT_DOMAINS;
    ares_channel channel;
    int rc = ares_init_options(&channel, &options, mask);
    if (rc != ARES_SUCCESS) {
        snprintf(error, error_len, "c-ares: %s", ares_strerror(rc));
        return -1;
    }
    rc = ares_set_servers_ports_csv(channel, servers);
    if (rc != ARES_SUCCESS) {
        ares_destroy(channel);
        snprintf(error, error_len, "resolver servers \"%s\": %s", servers, ares_strerror(rc));
        return -1;
    }
    lookup_state st = {0, -1, 0, out, max, error, error_len};
    struct ares_addrinfo_hints hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    ares_getaddrinfo(channel, name, NULL, &hints, answered, &st);
    /* c-ares bounds the lookup itself, but its timeout doubles with each round of tries; this
     * bound — every try of every server at the configured timeout, plus a second — is the one
     * the documentation states. */
    int nservers = 1;
    for (const char *p = servers; *p; p++) if (*p == ',') nservers++;
    long long deadline = now_ms() + (long long)options.timeout * options.tries * nservers + 1000;
    int gave_up = 0;
    while (!st.done) {
        long long left = deadline - now_ms();
        int cancelled = cancel && __atomic_load_n(cancel, __ATOMIC_RELAXED);
        if (left <= 0 || cancelled) {
            gave_up = cancelled ? 2 : 1;
            ares_cancel(channel);  /* runs the callback with ARES_ECANCELLED */
            break;
        }
        ares_socket_t socks[ARES_GETSOCK_MAXNUM];
        int bits = ares_getsock(channel, socks, ARES_GETSOCK_MAXNUM);
        struct pollfd fds[ARES_GETSOCK_MAXNUM];
        int n = 0;
        for (int i = 0; i < ARES_GETSOCK_MAXNUM; i++) {
            short events = 0;
            if (ARES_GETSOCK_READABLE(bits, i)) events |= POLLIN;
            if (ARES_GETSOCK_WRITABLE(bits, i)) events |= POLLOUT;
            if (!events) continue;
            fds[n].fd = socks[i];
            fds[n].events = events;
            fds[n].revents = 0;
            n++;
        }
        struct timeval tv, *tvp = ares_timeout(channel, NULL, &tv);
        long long wait = tvp ? (long long)tvp->tv_sec * 1000 + tvp->tv_usec / 1000 : 100;
        if (wait > left) wait = left;
        if (wait > 100) wait = 100;  /* looks at `cancel` at least every 100 ms */
        if (wait < 1) wait = 1;
        int ready = poll(fds, (nfds_t)n, (int)wait);
        if (ready <= 0) {
            ares_process_fd(channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);  /* timeouts, retries */
            continue;
        }
        for (int i = 0; i < n; i++) {
            if (!fds[i].revents) continue;
            ares_socket_t r = (fds[i].revents & (POLLIN | POLLERR | POLLHUP)) ? fds[i].fd : ARES_SOCKET_BAD;
            ares_socket_t w = (fds[i].revents & POLLOUT) ? fds[i].fd : ARES_SOCKET_BAD;
            ares_process_fd(channel, r, w);
        }
    }
    ares_destroy(channel);
    if (!st.done || gave_up) {
        snprintf(error, error_len, gave_up == 2 ? "cancelled" : "no answer within %d ms × %d tries × %d servers",
                 options.timeout, options.tries, nservers);
        return -1;
    }
    *found = st.found;
    if (st.count < 0 && error_len && !error[0]) snprintf(error, error_len, "lookup failed");
    return st.count;
}

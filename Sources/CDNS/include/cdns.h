#ifndef CDNS_H
#define CDNS_H

#include <stddef.h>

/* Asking DNS servers directly (the top-level "resolver" of the config), through c-ares.
 *
 * The only code that names c-ares. One call is one blocking lookup on the calling thread: the
 * proxy runs it on libuv's thread pool (never on a loop), or at start-up before any loop runs. */

/* One address of an answer: `family` is AF_INET (4 bytes used) or AF_INET6 (16). */
typedef struct cdns_address {
    int family;
    unsigned char bytes[16];
    /* The record's time to live, in seconds (0 when the answer did not say). */
    int ttl_s;
} cdns_address;

/* Looks up the A and AAAA records of `name` by asking `servers` ("127.0.0.1:53,[::1]:5353":
 * IP literals with optional ports) and nothing else (no hosts file, no search domains). Waits
 * about `timeout_ms` × `tries` per server at most, and gives up within 100 ms once `*cancel`
 * is set (by `cdns_cancel`, from any thread).
 *
 * Returns how many addresses it wrote to `out` (at most `max`; 0 when the name exists but has
 * none) and sets `*found` to how many the answer had, or returns -1 with a one-line reason in
 * `error` (NUL-terminated, at most `error_len` bytes). */
int cdns_lookup(const char *servers, const char *name, int timeout_ms, int tries, const int *cancel,
                cdns_address *out, int max, int *found, char *error, size_t error_len);

/* Asks a lookup running with `flag` as its `cancel` to give up (an atomic store). */
void cdns_cancel(int *flag);

#endif

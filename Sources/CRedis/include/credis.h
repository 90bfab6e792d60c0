/* One asynchronous Redis connection on a libuv loop, through hiredis's async API, with our own
   glue to libuv (a uv_poll_t whose `data` stays NULL, so the proxy's handle walk never mistakes it
   for one of its own handles). The only code that names hiredis.

   Threading: the loop's thread only. Callbacks run on it, from inside libuv's poll callback.
   Ownership: credis_connect returns a connection the caller releases with credis_close, exactly
   once, whatever happened to it; after credis_close no callback runs. */
#ifndef CREDIS_H
#define CREDIS_H
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct credis credis;

enum credis_event {
    CREDIS_CONNECTED = 1,
    /* The connect failed, or an established connection ended; `message` says why. Replies
       still owed may come (as CREDIS_REPLY_NONE) before or after this: the caller fails its
       waiting commands either way. */
    CREDIS_GONE = 2,
};

enum credis_reply_kind {
    CREDIS_REPLY_NONE = -1,     /* the connection went before the reply came */
    CREDIS_REPLY_ERROR = 0,     /* `text`: Redis's error */
    CREDIS_REPLY_PAIR = 1,      /* an array starting with two integers: `a`, `b` */
    CREDIS_REPLY_TEXT = 2,      /* a status or a bulk string: `text` */
    CREDIS_REPLY_INTEGER = 3,   /* `a` */
    CREDIS_REPLY_OTHER = 4,
};

typedef void (*credis_event_cb)(void *owner, int event, const char *message);
typedef void (*credis_reply_cb)(void *owner, uint64_t tag, int kind, long long a, long long b,
                                const char *text, size_t length);

/* Starts connecting to `ip` (an address literal: hiredis would resolve a name by blocking) and
   `port`. NULL when it cannot even start; `error` (of `error_size`) then says why. */
credis *credis_connect(uv_loop_t *loop, const char *ip, int port, void *owner,
                       credis_event_cb on_event, credis_reply_cb on_reply,
                       char *error, size_t error_size);

/* Queues a command (written once connected); its reply comes to `on_reply` with `tag`.
   0 when queued, -1 when the connection is gone or closing. */
int credis_command(credis *c, uint64_t tag, int argc, const char **argv, const size_t *lengths);

/* Ends the connection and releases it (its memory once libuv has closed the poll handle).
   Safe from inside any callback of this connection. */
void credis_close(credis *c);

#endif

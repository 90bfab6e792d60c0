#include "credis.h"
#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* What the proxy ever asks for comes back in a few dozen bytes. A server that sends more than
   this unparsed, or announces an array or string longer than the limit below, is not one to
   trust: the connection is dropped before hiredis allocates for it. */
#define CREDIS_MAX_BUFFERED (64 * 1024)
#define CREDIS_MAX_ANNOUNCED (1024 * 1024)

struct credis {
    redisAsyncContext *ac;      /* NULL once hiredis has freed (or is freeing) it */
    uv_poll_t poll;
    int events;
    int poll_started;           /* uv_poll_init succeeded */
    int poll_closing;           /* uv_close called */
    int poll_closed;            /* its close callback ran */
    int released;               /* credis_close called: no more callbacks; free when poll_closed */
    int in_poll;                /* inside hiredis's read/write handling (callbacks may close) */
    void *owner;
    credis_event_cb on_event;
    credis_reply_cb on_reply;
};

static void maybe_free(credis *c) {
    if (c->released && (c->poll_closed || !c->poll_started)) free(c);
}

static void poll_closed(uv_handle_t *handle) {
    credis *c = (credis *)((char *)handle - offsetof(credis, poll));
    c->poll_closed = 1;
    maybe_free(c);
}

static void close_poll(credis *c) {
    if (!c->poll_started || c->poll_closing) return;
    c->poll_closing = 1;
    uv_close((uv_handle_t *)&c->poll, poll_closed);
}

/* Whether `n` bytes of `p`, starting at a line start when `at_line_start`, announce an array
   or bulk string longer than CREDIS_MAX_ANNOUNCED. */
static int announces_too_much(const char *p, size_t n, int at_line_start) {
    for (size_t i = 0; i < n; i++) {
        int starts = (i == 0) ? at_line_start : (p[i - 1] == '\n');
        if (!starts || (p[i] != '*' && p[i] != '$')) continue;
        long long count = 0;
        for (size_t j = i + 1; j < n && p[j] >= '0' && p[j] <= '9'; j++) {
            count = count * 10 + (p[j] - '0');
            if (count > CREDIS_MAX_ANNOUNCED) return 1;
        }
    }
    return 0;
}

/* Looks at what is about to be read (without taking it) together with what hiredis holds
   unparsed: 1 when the connection must be dropped. */
static int reply_is_abusive(credis *c) {
    redisReader *r = c->ac->c.reader;
    size_t held = r && r->buf ? r->len - r->pos : 0;
    if (held > CREDIS_MAX_BUFFERED) return 1;
    char peeked[4096];
    ssize_t n = recv(c->ac->c.fd, peeked, sizeof peeked, MSG_PEEK | MSG_DONTWAIT);
    if (n <= 0) return 0;
    /* The held tail: a line start if it is empty or ends with a newline. */
    if (held > 0 && announces_too_much(r->buf + r->pos, held, 1)) return 1;
    int line_start = held == 0 || r->buf[r->len - 1] == '\n';
    if (!line_start && held > 0) {
        /* A header split across reads: check the held line's digits with the new ones. */
        const char *line = r->buf + r->len;
        while (line > r->buf + r->pos && line[-1] != '\n') line--;
        char joined[64];
        size_t a = (size_t)(r->buf + r->len - line), b = (size_t)n;
        if (a < sizeof joined) {
            if (a + b > sizeof joined) b = sizeof joined - a;
            memcpy(joined, line, a);
            memcpy(joined + a, peeked, b);
            if (announces_too_much(joined, a + b, 1)) return 1;
        }
    }
    return announces_too_much(peeked, (size_t)n, line_start);
}

static void on_poll(uv_poll_t *handle, int status, int events) {
    credis *c = (credis *)((char *)handle - offsetof(credis, poll));
    /* An error on the descriptor: let hiredis read it and find out. */
    if (status < 0) events = UV_READABLE;
    c->in_poll = 1;
    if (c->ac && !c->released && (events & UV_READABLE)) {
        if ((c->ac->c.flags & REDIS_CONNECTED) && reply_is_abusive(c)) {
            /* As if the connection had failed: hiredis fails what waits, then frees it all. */
            redisAsyncContext *ac = c->ac;
            c->ac = NULL;
            c->in_poll = 0;
            if (!c->released) c->on_event(c->owner, CREDIS_GONE, "the server sent more than a reply to this client can be (dropped)");
            redisAsyncFree(ac);
            return;
        }
        redisAsyncHandleRead(c->ac);
    }
    if (c->ac && !c->released && (events & UV_WRITABLE)) redisAsyncHandleWrite(c->ac);
    c->in_poll = 0;
    /* credis_close ran inside a callback (hiredis does not guard every one, e.g. the connect
       callback): free the context now that hiredis is no longer using it. */
    if (c->released && c->ac) {
        redisAsyncContext *ac = c->ac;
        c->ac = NULL;
        redisAsyncFree(ac);
    }
}

static void update_poll(credis *c) {
    if (!c->poll_started || c->poll_closing) return;
    if (c->events) uv_poll_start(&c->poll, c->events, on_poll);
    else uv_poll_stop(&c->poll);
}

static void add_read(void *p) { credis *c = p; c->events |= UV_READABLE; update_poll(c); }
static void del_read(void *p) { credis *c = p; c->events &= ~UV_READABLE; update_poll(c); }
static void add_write(void *p) { credis *c = p; c->events |= UV_WRITABLE; update_poll(c); }
static void del_write(void *p) { credis *c = p; c->events &= ~UV_WRITABLE; update_poll(c); }

/* hiredis is freeing the context (after a failure, or credis_close): stop watching the socket. */
static void cleanup(void *p) {
    credis *c = p;
    c->ac = NULL;
    close_poll(c);
}

static void on_connect(const redisAsyncContext *ac, int status) {
    credis *c = ac->data;
    if (status != REDIS_OK) {
        /* hiredis frees the context right after this callback. */
        char message[256];
        snprintf(message, sizeof message, "%s", ac->errstr[0] ? ac->errstr : "connect failed");
        c->ac = NULL;
        if (!c->released) c->on_event(c->owner, CREDIS_GONE, message);
        return;
    }
    if (!c->released) c->on_event(c->owner, CREDIS_CONNECTED, "");
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
    credis *c = ac->data;
    c->ac = NULL;
    if (!c->released) {
        c->on_event(c->owner, CREDIS_GONE,
                    status == REDIS_OK ? "connection closed" : (ac->errstr[0] ? ac->errstr : "connection lost"));
    }
}

static void on_reply(redisAsyncContext *ac, void *r, void *privdata) {
    credis *c = ac->data;
    if (c->released) return;
    uint64_t tag = (uint64_t)(uintptr_t)privdata;
    redisReply *reply = r;
    if (!reply) { c->on_reply(c->owner, tag, CREDIS_REPLY_NONE, 0, 0, "", 0); return; }
    switch (reply->type) {
    case REDIS_REPLY_ERROR:
        c->on_reply(c->owner, tag, CREDIS_REPLY_ERROR, 0, 0, reply->str, reply->len);
        break;
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_STRING:
        c->on_reply(c->owner, tag, CREDIS_REPLY_TEXT, 0, 0, reply->str, reply->len);
        break;
    case REDIS_REPLY_INTEGER:
        c->on_reply(c->owner, tag, CREDIS_REPLY_INTEGER, reply->integer, 0, "", 0);
        break;
    case REDIS_REPLY_ARRAY:
        if (reply->elements >= 2 && reply->element[0]->type == REDIS_REPLY_INTEGER
            && reply->element[1]->type == REDIS_REPLY_INTEGER) {
            c->on_reply(c->owner, tag, CREDIS_REPLY_PAIR, reply->element[0]->integer,
                        reply->element[1]->integer, "", 0);
            break;
        }
        /* fall through */
    default:
        c->on_reply(c->owner, tag, CREDIS_REPLY_OTHER, 0, 0, "", 0);
    }
}

credis *credis_connect(uv_loop_t *loop, const char *ip, int port, void *owner,
                       credis_event_cb on_event, credis_reply_cb on_reply_cb,
                       char *error, size_t error_size) {
    credis *c = calloc(1, sizeof *c);
    if (!c) { snprintf(error, error_size, "out of memory"); return NULL; }
    c->owner = owner;
    c->on_event = on_event;
    c->on_reply = on_reply_cb;
    redisAsyncContext *ac = redisAsyncConnect(ip, port);
    if (!ac || ac->err) {
        snprintf(error, error_size, "%s", ac ? ac->errstr : "out of memory");
        if (ac) redisAsyncFree(ac);
        free(c);
        return NULL;
    }
    if (uv_poll_init(loop, &c->poll, ac->c.fd) != 0) {
        snprintf(error, error_size, "cannot watch the socket");
        redisAsyncFree(ac);
        free(c);
        return NULL;
    }
    c->poll.data = NULL;
    c->poll_started = 1;
    c->ac = ac;
    ac->data = c;
    ac->ev.data = c;
    ac->ev.addRead = add_read;
    ac->ev.delRead = del_read;
    ac->ev.addWrite = add_write;
    ac->ev.delWrite = del_write;
    ac->ev.cleanup = cleanup;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    /* hiredis asks for writability to learn that the connect finished. */
    add_write(c);
    return c;
}

int credis_command(credis *c, uint64_t tag, int argc, const char **argv, const size_t *lengths) {
    if (!c->ac || c->released) return -1;
    return redisAsyncCommandArgv(c->ac, on_reply, (void *)(uintptr_t)tag, argc, argv, lengths) == REDIS_OK ? 0 : -1;
}

void credis_close(credis *c) {
    c->released = 1;
    if (c->in_poll) return;     /* on_poll frees the context once hiredis returns */
    if (c->ac) {
        redisAsyncContext *ac = c->ac;
        c->ac = NULL;
        /* Calls cleanup (which closes the poll), or defers that to the end of the callback it
           is inside of. */
        redisAsyncFree(ac);
    }
    close_poll(c);
    maybe_free(c);
}

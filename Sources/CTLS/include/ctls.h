/*
 * The TLS engine the proxy uses, behind a small interface that names no TLS library: a context
 * (certificates, versions, ALPN) and sessions that take ciphertext in, give plaintext out, take
 * plaintext in and give ciphertext out. No socket is ever touched here: the caller moves the
 * bytes (libuv reads and writes), so the engine never blocks and needs no thread.
 *
 * This file and ctls.c are the only places that know the library (OpenSSL 3); another library
 * can replace ctls.c without touching the Swift code.
 *
 * Threading: a context may be shared by sessions on several threads once built (it is never
 * changed after creation); a session belongs to one thread.
 */
#ifndef CTLS_H
#define CTLS_H

#include <stddef.h>
#include <stdint.h>

typedef struct ctls_context ctls_context;
typedef struct ctls_session ctls_session;

/* Results of ctls_session_handshake. */
enum {
    CTLS_HANDSHAKE_DONE = 0,
    CTLS_HANDSHAKE_WANT_INPUT = 1,
    CTLS_HANDSHAKE_FAILED = -1,
};

/* Results of ctls_session_read other than a byte count (> 0). */
enum {
    CTLS_READ_WANT_INPUT = 0,
    CTLS_READ_CLOSED = -1,  /* the peer sent close_notify */
    CTLS_READ_FAILED = -2,
};

/*
 * A server context: `count` certificate chains (PEM, leaf first) with their keys (PEM; RSA or
 * ECDSA). The certificate for a session is picked by the client's SNI: the first whose names
 * match exactly, else the first that matches by wildcard, else the first. `min_version` is 12
 * (TLS 1.2 and 1.3) or 13 (1.3 only). `alpn` is the protocols offered, in the wire format
 * (length-prefixed names), in preference order; a client offering none of them gets no ALPN.
 * Sessions resume through tickets sealed with the process-wide ticket keys (see
 * ctls_ticket_keys_rotate), valid for `ticket_lifetime_s`; 0 turns resumption off.
 * A certificate that is expired or names no host (no subjectAltName) is refused.
 * On failure returns NULL and writes a one-line reason (naming the file) into `err`.
 */
ctls_context *ctls_server_context_new(const char *const *cert_files, const char *const *key_files, int count,
                                      int min_version, const unsigned char *alpn, size_t alpn_len,
                                      long ticket_lifetime_s, char *err, size_t err_len);

/*
 * Makes a new session ticket key the one new tickets are sealed with; the two before it still
 * open tickets (which are then renewed). Shared by every server context of the process, so a
 * ticket from one worker or from before a reload resumes anywhere. Returns 0, or -1 when no
 * random bytes could be had. The first server context makes the first key.
 */
int ctls_ticket_keys_rotate(void);

/*
 * A client context: `ca_file` (PEM) or, when NULL, the system's store; `verify` 0 turns
 * verification off. `alpn` as above (what the client offers). `cert_file` and `key_file`
 * (both or neither) are a client certificate for servers that ask for one (mutual TLS).
 */
ctls_context *ctls_client_context_new(const char *ca_file, int verify, const unsigned char *alpn, size_t alpn_len,
                                      const char *cert_file, const char *key_file, char *err, size_t err_len);

void ctls_context_free(ctls_context *context);

/*
 * Local HTTPS for development. ctls_local_ca_create makes a CA: an ECDSA P-256 root valid for
 * `days`, written to `cert_file` and `key_file` (mode 0600). Returns 0, or -1 with a reason.
 *
 * ctls_local_server_context_new is a server context whose certificates that CA issues on
 * demand, one leaf per SNI name: each of `names` and any name under `.localhost` gets its own
 * (browsers do not honour wildcards under `localhost`); anything else, and clients sending no
 * SNI, get the `localhost` leaf (which also names 127.0.0.1 and ::1). Leaves live `leaf_days`
 * and are reissued when a quarter of that is left. Other parameters as for
 * ctls_server_context_new.
 */
int ctls_local_ca_create(const char *cert_file, const char *key_file, const char *common_name, int days,
                         char *err, size_t err_len);
ctls_context *ctls_local_server_context_new(const char *ca_cert_file, const char *ca_key_file,
                                            const char *const *names, int name_count, int leaf_days, int min_version,
                                            const unsigned char *alpn, size_t alpn_len, long ticket_lifetime_s,
                                            char *err, size_t err_len);

/* Facts about the server context's certificate `index`, for `proxy --check` and errors. */
int ctls_context_certificate_count(const ctls_context *context);
/* Subject alternative names (DNS and IP), comma-separated, into `out`; returns its length. */
size_t ctls_context_certificate_names(const ctls_context *context, int index, char *out, size_t out_len);
/* The notAfter time as seconds since the epoch. */
int64_t ctls_context_certificate_not_after(const ctls_context *context, int index);

/*
 * A session. For a client, `server_name` is sent as SNI and checked against the peer's
 * certificate when the context verifies (NULL: neither).
 */
ctls_session *ctls_session_new(ctls_context *context, int is_server, const char *server_name);
void ctls_session_free(ctls_session *session);

/*
 * Ciphertext received from the peer, *lent*: the session reads it in place during the calls that
 * follow, until ctls_session_release_input, which copies what is left unread into the session
 * (call it before the bytes' memory is reused). Returns 0, or -1 when memory ran out or more than
 * 1 MiB would be left unread (an abusive peer; the session has failed).
 */
int ctls_session_feed(ctls_session *session, const void *bytes, size_t count);
int ctls_session_release_input(ctls_session *session);

/* Advances the handshake with what was fed. */
int ctls_session_handshake(ctls_session *session);

/* Plaintext out: a byte count, or one of CTLS_READ_*. */
long ctls_session_read(ctls_session *session, void *buffer, size_t capacity);

/* Plaintext in (all of it, or -1 on failure; 0 otherwise). Only after the handshake. */
int ctls_session_write(ctls_session *session, const void *bytes, size_t count);

/* Queues a close_notify (once; not during the handshake or after a failure). */
void ctls_session_close_notify(ctls_session *session);

/*
 * Ciphertext waiting to go to the peer: a pointer to it and its length (0: none), valid until
 * the next call on the session. Call ctls_session_output_sent once it was handed on.
 * Every other call may produce output (handshake records, tickets, alerts): drain it after each,
 * before any other session of the same thread is called (the output buffer is the thread's).
 */
size_t ctls_session_output(ctls_session *session, const void **bytes);
void ctls_session_output_sent(ctls_session *session);

/* Input is buffered that a read could turn into plaintext without more from the peer. */
int ctls_session_has_buffered_input(const ctls_session *session);

/* After the handshake: the negotiated version ("TLSv1.3"), cipher, ALPN protocol (may be empty),
 * the SNI the client sent (NULL when none), whether the session was resumed. */
const char *ctls_session_version(const ctls_session *session);
const char *ctls_session_cipher(const ctls_session *session);
size_t ctls_session_alpn(const ctls_session *session, const unsigned char **protocol);
const char *ctls_session_server_name(const ctls_session *session);
int ctls_session_resumed(const ctls_session *session);

/*
 * Client resumption. A session that became resumable (a ticket) is kept by the session until
 * taken: ctls_session_take_resumption returns it (or NULL), owned by the caller, who frees it
 * with ctls_resumption_free or offers it to a new session of the same context before its
 * handshake with ctls_session_resume (which takes its own reference).
 */
void *ctls_session_take_resumption(ctls_session *session);
void ctls_resumption_free(void *resumption);
void ctls_session_resume(ctls_session *session, void *resumption);

/*
 * Processes what was fed without taking plaintext: 1 when plaintext is waiting, 0 when nothing
 * (post-handshake messages such as tickets were absorbed), -1 when the peer closed or the session
 * failed. Tells an idle connection that only got a ticket from one that got data or a close.
 */
int ctls_session_peek(ctls_session *session);

/* Sends a TLS 1.3 KeyUpdate (new traffic keys for what this side sends); 0, or -1 when the
 * session cannot (TLS 1.2, before the handshake, after a failure). A peer receiving more than
 * 100 in a second ends the session. */
int ctls_session_key_update(ctls_session *session);

/* The peer's close_notify arrived (an end of input with it is orderly; without, a truncation). */
int ctls_session_received_close_notify(const ctls_session *session);

/* Why the last call failed, one line (valid until the next call on the session). */
const char *ctls_session_error(const ctls_session *session);

/* The same library checks JSON Web Token signatures (csig.h). */
#include "csig.h"

/* The linked TLS library's name and version ("OpenSSL 3.0.17 1 Jul 2025"), for `proxy --version`. */
const char *ctls_library_version(void);

#endif

/* What ctls.c and local_ca.c share; not part of the engine's interface (include/ctls.h). */
#ifndef CTLS_INTERNAL_H
#define CTLS_INTERNAL_H

#include <openssl/ssl.h>
#include <stddef.h>

struct ctls_certificate {
    X509 *leaf;
    EVP_PKEY *key;
    STACK_OF(X509) *chain; /* intermediates, may be empty */
};

struct ctls_context {
    SSL_CTX *ssl_ctx;
    int is_server;
    int verify;
    struct ctls_certificate *certificates;
    int certificate_count;
    unsigned char *alpn;
    size_t alpn_len;
    struct local_ca *local; /* a context whose certificates a local CA issues (local_ca.c) */
};

struct ctls_session {
    SSL *ssl;
    /* Ciphertext from the peer (see "Input and output" in ctls.c): what the caller lent for the
     * current call sequence, then what was kept of earlier input (read first). */
    const unsigned char *lent;
    size_t lent_len;
    unsigned char *kept;
    size_t kept_start, kept_end;
    ctls_context *context;
    int failed;
    int close_notify_sent;
    SSL_SESSION *resumption; /* a client's newest resumable session, until taken */
    char *error; /* why it failed, once it did (allocated then: most sessions never fail) */
    char *server_name;   /* the client's SNI, lower-case without a trailing dot, when a valid host name */
    long key_update_second; /* KeyUpdate messages received in that second (a flood ends the session) */
    int key_updates;
};

/* The server session's SNI as checked and normalised in the ClientHello callback; NULL if none. */
const char *ctls_session_sni(const SSL *ssl);

struct local_ca;
void local_ca_free(struct local_ca *ca);

void write_error(char *err, size_t err_len, const char *what, const char *file);
SSL_CTX *new_ssl_ctx(int is_server, int min_version, char *err, size_t err_len);
int copy_alpn(ctls_context *context, const unsigned char *alpn, size_t alpn_len);
int load_certificate(struct ctls_certificate *c, const char *cert_file, const char *key_file, int require_san,
                     char *err, size_t err_len);
void free_certificate(struct ctls_certificate *c);
/* Tickets (the process-wide keys), ALPN selection: what every server context gets. */
void configure_server_ctx(ctls_context *context, long ticket_lifetime_s);

#endif

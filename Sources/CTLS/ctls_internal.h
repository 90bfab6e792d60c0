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
    BIO *input;  /* ciphertext from the peer, read by OpenSSL */
    BIO *output; /* ciphertext for the peer, written by OpenSSL */
    ctls_context *context;
    int failed;
    int close_notify_sent;
    SSL_SESSION *resumption; /* a client's newest resumable session, until taken */
    char *error; /* why it failed, once it did (allocated then: most sessions never fail) */
};

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

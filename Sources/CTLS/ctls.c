/* The TLS engine over OpenSSL 3 (see include/ctls.h for the contract). */
#include "ctls.h"
#include "ctls_internal.h"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The error queue is per thread and a worker interleaves sessions: it is emptied before each
 * call whose failure we read. ERR_clear_error itself walks every slot (≈400 instructions in
 * OpenSSL 3), so only when something is queued. */
static inline void clear_errors(void) {
    if (ERR_peek_error() != 0) ERR_clear_error();
}

static void watch_messages(int write_p, int version, int content_type, const void *buf, size_t len, SSL *ssl, void *arg);
static void note_error(ctls_session *session, const char *what, const char *reason);

void write_error(char *err, size_t err_len, const char *what, const char *file) {
    if (!err || err_len == 0) return;
    unsigned long code = ERR_peek_last_error();
    char reason[160] = "";
    if (code) ERR_error_string_n(code, reason, sizeof reason);
    ERR_clear_error();
    if (file)
        snprintf(err, err_len, "%s: %s%s%s", file, what, reason[0] ? ": " : "", reason);
    else
        snprintf(err, err_len, "%s%s%s", what, reason[0] ? ": " : "", reason);
}

/* Mozilla's "intermediate" TLS 1.2 suites (ECDHE with AEAD ciphers only; TLS 1.3 suites are
 * OpenSSL's defaults). DHE suites are left out: no DH parameters to manage. */
static const char *const tls12_ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

SSL_CTX *new_ssl_ctx(int is_server, int min_version, char *err, size_t err_len) {
    SSL_CTX *ctx = SSL_CTX_new(is_server ? TLS_server_method() : TLS_client_method());
    if (!ctx) { write_error(err, err_len, "cannot create a TLS context", NULL); return NULL; }
    SSL_CTX_set_min_proto_version(ctx, min_version == 13 ? TLS1_3_VERSION : TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    /* Idle connections give their record buffers back (about 34 KiB each). */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_msg_callback(ctx, watch_messages);
    if (!SSL_CTX_set_cipher_list(ctx, tls12_ciphers)) {
        write_error(err, err_len, "cannot set the TLS 1.2 cipher list", NULL);
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* Never prompts for a passphrase (OpenSSL's default would read the terminal and block): an
 * encrypted key simply fails to load. */
static int no_passphrase(char *buf, int size, int rwflag, void *u) {
    (void)buf; (void)size; (void)rwflag; (void)u;
    return 0;
}

int load_certificate(struct ctls_certificate *c, const char *cert_file, const char *key_file, int require_san,
                            char *err, size_t err_len) {
    FILE *f = fopen(cert_file, "r");
    if (!f) { snprintf(err, err_len, "%s: cannot open the certificate file", cert_file); return 0; }
    c->leaf = PEM_read_X509(f, NULL, no_passphrase, NULL);
    if (!c->leaf) { fclose(f); write_error(err, err_len, "no PEM certificate in the file", cert_file); return 0; }
    c->chain = sk_X509_new_null();
    X509 *extra;
    while ((extra = PEM_read_X509(f, NULL, no_passphrase, NULL)) != NULL) sk_X509_push(c->chain, extra);
    ERR_clear_error(); /* the loop ends on a "no start line" error */
    fclose(f);
    f = fopen(key_file, "r");
    if (!f) { snprintf(err, err_len, "%s: cannot open the key file", key_file); return 0; }
    c->key = PEM_read_PrivateKey(f, NULL, no_passphrase, NULL);
    fclose(f);
    if (!c->key) { write_error(err, err_len, "no PEM private key in the file (or it is encrypted)", key_file); return 0; }
    if (X509_check_private_key(c->leaf, c->key) != 1) {
        ERR_clear_error();
        snprintf(err, err_len, "%s: the key does not match the certificate %s", key_file, cert_file);
        return 0;
    }
    if (X509_cmp_current_time(X509_get0_notBefore(c->leaf)) > 0) {
        snprintf(err, err_len, "%s: the certificate is not valid yet (notBefore is in the future; check the clock)", cert_file);
        return 0;
    }
    if (X509_cmp_current_time(X509_get0_notAfter(c->leaf)) < 0) {
        char when[64] = "";
        BIO *b = BIO_new(BIO_s_mem());
        if (b) {
            ASN1_TIME_print(b, X509_get0_notAfter(c->leaf));
            int n = BIO_read(b, when, (int)sizeof when - 1);
            when[n > 0 ? n : 0] = 0;
            BIO_free(b);
        }
        snprintf(err, err_len, "%s: the certificate expired (notAfter %s); renew it", cert_file, when);
        return 0;
    }
    GENERAL_NAMES *names = require_san ? X509_get_ext_d2i(c->leaf, NID_subject_alt_name, NULL, NULL) : NULL;
    if (require_san && !names) {
        ERR_clear_error();
        snprintf(err, err_len, "%s: the certificate has no subjectAltName; clients ignore the common name, "
                 "so it matches no host (reissue it with the names in subjectAltName)", cert_file);
        return 0;
    }
    if (names) GENERAL_NAMES_free(names);
    return 1;
}

/* Session ticket keys, shared by every server context of the process (so any worker resumes a
 * session another made, and a reload's new contexts keep accepting old tickets) and rotated by
 * ctls_ticket_keys_rotate. Only handshakes take the lock. */
struct ticket_key {
    unsigned char name[16];
    unsigned char aes[32];
    unsigned char hmac[32];
};
enum { TICKET_KEYS = 3 }; /* the current key, and two earlier ones still accepted */
static struct ticket_key ticket_keys[TICKET_KEYS];
static int ticket_key_count;
static pthread_rwlock_t ticket_lock = PTHREAD_RWLOCK_INITIALIZER;

int ctls_ticket_keys_rotate(void) {
    struct ticket_key fresh;
    if (RAND_bytes(fresh.name, sizeof fresh.name) != 1 || RAND_bytes(fresh.aes, sizeof fresh.aes) != 1 ||
        RAND_bytes(fresh.hmac, sizeof fresh.hmac) != 1) {
        ERR_clear_error();
        return -1;
    }
    pthread_rwlock_wrlock(&ticket_lock);
    memmove(&ticket_keys[1], &ticket_keys[0], sizeof ticket_keys[0] * (TICKET_KEYS - 1));
    ticket_keys[0] = fresh;
    if (ticket_key_count < TICKET_KEYS) ticket_key_count++;
    pthread_rwlock_unlock(&ticket_lock);
    OPENSSL_cleanse(&fresh, sizeof fresh);
    return 0;
}

static int init_ticket_crypto(const struct ticket_key *key, unsigned char *iv, EVP_CIPHER_CTX *cipher,
                              EVP_MAC_CTX *mac, int encrypt) {
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)key->hmac, sizeof key->hmac),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    if (!EVP_MAC_CTX_set_params(mac, params)) return 0;
    return encrypt ? EVP_EncryptInit_ex(cipher, EVP_aes_256_cbc(), NULL, key->aes, iv)
                   : EVP_DecryptInit_ex(cipher, EVP_aes_256_cbc(), NULL, key->aes, iv);
}

static int ticket_key_callback(SSL *ssl, unsigned char key_name[16], unsigned char *iv, EVP_CIPHER_CTX *cipher,
                               EVP_MAC_CTX *mac, int encrypt) {
    (void)ssl;
    int result = 0;
    pthread_rwlock_rdlock(&ticket_lock);
    if (encrypt) {
        if (ticket_key_count > 0 && RAND_bytes(iv, EVP_CIPHER_iv_length(EVP_aes_256_cbc())) == 1) {
            memcpy(key_name, ticket_keys[0].name, 16);
            result = init_ticket_crypto(&ticket_keys[0], iv, cipher, mac, 1) ? 1 : -1;
        } else {
            result = -1;
        }
    } else {
        for (int i = 0; i < ticket_key_count; i++) {
            if (memcmp(key_name, ticket_keys[i].name, 16) != 0) continue;
            /* 2: valid, but made with an older key, so the client gets a fresh ticket. */
            result = init_ticket_crypto(&ticket_keys[i], iv, cipher, mac, 0) ? (i == 0 ? 1 : 2) : -1;
            break;
        }
    }
    pthread_rwlock_unlock(&ticket_lock);
    return result; /* 0 when decrypting: an unknown key, so a full handshake */
}

void free_certificate(struct ctls_certificate *c) {
    if (c->leaf) X509_free(c->leaf);
    if (c->key) EVP_PKEY_free(c->key);
    if (c->chain) sk_X509_pop_free(c->chain, X509_free);
}

/* Picks the certificate for the client's SNI (exact names first, then wildcards, else the first). */
/* A host name as SNI may carry it: letters, digits, '-', '_' and dots between non-empty labels
 * of at most 63 characters. Anything else (a leading dot, which OpenSSL would match as "any
 * subdomain", spaces, quotes) counts as no SNI. */
static int valid_host_name(const char *name, size_t len) {
    if (len == 0 || len > 253) return 0;
    size_t label = 0;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (c == '.') {
            if (label == 0) return 0;
            label = 0;
            continue;
        }
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_')) return 0;
        if (++label > 63) return 0;
    }
    return label > 0;
}

const char *ctls_session_sni(const SSL *ssl) {
    const ctls_session *session = SSL_get_app_data(ssl);
    return session ? session->server_name : NULL;
}

/* Before session resumption is considered: the SNI is read, normalised and checked, and made the
 * session id context, so a session (ticket) resumes only under the name it was made for
 * (RFC 6066 §3: a server must not resume a session for another name). */
static int read_client_hello(SSL *ssl, int *alert, void *arg) {
    (void)alert; (void)arg;
    ctls_session *session = SSL_get_app_data(ssl);
    if (!session) return SSL_CLIENT_HELLO_SUCCESS;
    const unsigned char *ext;
    size_t ext_len;
    char name[256] = "";
    /* server_name: list length (2), then entries of type (1), length (2), name; the first host_name counts. */
    if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &ext, &ext_len) && ext_len >= 5) {
        size_t list = ((size_t)ext[0] << 8) | ext[1];
        if (ext[2] == TLSEXT_NAMETYPE_host_name && list + 2 <= ext_len) {
            size_t n = ((size_t)ext[3] << 8) | ext[4];
            if (n + 5 <= ext_len && n < sizeof name) {
                for (size_t i = 0; i < n; i++) {
                    char c = (char)ext[5 + i];
                    name[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
                }
                if (n > 0 && name[n - 1] == '.') n--; /* "example.com." is "example.com" */
                name[n] = 0;
                if (!valid_host_name(name, n)) name[0] = 0;
            }
        }
    }
    free(session->server_name);
    session->server_name = name[0] ? strdup(name) : NULL;
    unsigned char digest[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)name, strlen(name), digest);
    SSL_set_session_id_context(ssl, digest, sizeof digest);
    return SSL_CLIENT_HELLO_SUCCESS;
}

/* TLS 1.3 KeyUpdate messages cost the receiver a key derivation each: more than 100 in a second
 * (HAProxy's default limit) ends the session. */
static void watch_messages(int write_p, int version, int content_type, const void *buf, size_t len, SSL *ssl, void *arg) {
    (void)version; (void)arg;
    if (write_p || content_type != SSL3_RT_HANDSHAKE || len < 1 || ((const unsigned char *)buf)[0] != SSL3_MT_KEY_UPDATE) return;
    ctls_session *session = SSL_get_app_data(ssl);
    if (!session) return;
    long now = (long)time(NULL);
    if (now != session->key_update_second) {
        session->key_update_second = now;
        session->key_updates = 0;
    }
    if (++session->key_updates > 100 && !session->failed) {
        session->failed = 1; /* input_read gives OpenSSL nothing more; the call in progress reports the failure */
        note_error(session, "too many TLS KeyUpdate messages (more than 100 in a second)", NULL);
    }
}

static int select_certificate(SSL *ssl, void *arg) {
    ctls_context *context = arg;
    const char *name = ctls_session_sni(ssl);
    int chosen = 0;
    if (name && context->certificate_count > 1) {
        size_t len = strlen(name);
        int found = -1;
        for (int pass = 0; pass < 2 && found < 0; pass++) {
            unsigned int flags = pass == 0 ? X509_CHECK_FLAG_NO_WILDCARDS : 0;
            for (int i = 0; i < context->certificate_count; i++) {
                if (X509_check_host(context->certificates[i].leaf, name, len, flags, NULL) == 1) { found = i; break; }
            }
        }
        if (found >= 0) chosen = found;
    }
    struct ctls_certificate *c = &context->certificates[chosen];
    return SSL_use_cert_and_key(ssl, c->leaf, c->key, c->chain, 1) == 1 ? 1 : 0;
}

static int select_alpn(SSL *ssl, const unsigned char **out, unsigned char *out_len,
                       const unsigned char *in, unsigned int in_len, void *arg) {
    (void)ssl;
    ctls_context *context = arg;
    unsigned char *selected;
    if (SSL_select_next_proto(&selected, out_len, context->alpn, (unsigned int)context->alpn_len, in, in_len)
        != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK; /* no common protocol: go on without ALPN (HTTP/1.1) */
    *out = selected;
    return SSL_TLSEXT_ERR_OK;
}

int copy_alpn(ctls_context *context, const unsigned char *alpn, size_t alpn_len) {
    if (!alpn || alpn_len == 0) return 1;
    context->alpn = malloc(alpn_len);
    if (!context->alpn) return 0;
    memcpy(context->alpn, alpn, alpn_len);
    context->alpn_len = alpn_len;
    return 1;
}

ctls_context *ctls_server_context_new(const char *const *cert_files, const char *const *key_files, int count,
                                      int min_version, const unsigned char *alpn, size_t alpn_len,
                                      long ticket_lifetime_s, char *err, size_t err_len) {
    if (count < 1) { snprintf(err, err_len, "no certificate given"); return NULL; }
    ctls_context *context = calloc(1, sizeof *context);
    if (!context) return NULL;
    context->is_server = 1;
    context->certificates = calloc((size_t)count, sizeof *context->certificates);
    if (!context->certificates) { free(context); return NULL; }
    context->certificate_count = count;
    for (int i = 0; i < count; i++) {
        if (!load_certificate(&context->certificates[i], cert_files[i], key_files[i], 1, err, err_len)) {
            ctls_context_free(context);
            return NULL;
        }
    }
    context->ssl_ctx = new_ssl_ctx(1, min_version, err, err_len);
    if (!context->ssl_ctx || !copy_alpn(context, alpn, alpn_len)) { ctls_context_free(context); return NULL; }
    /* Stateless resumption (tickets) only: OpenSSL's session cache is locked across threads. */
    configure_server_ctx(context, ticket_lifetime_s);
    SSL_CTX_set_cert_cb(context->ssl_ctx, select_certificate, context);
    return context;
}

void configure_server_ctx(ctls_context *context, long ticket_lifetime_s) {
    SSL_CTX_set_client_hello_cb(context->ssl_ctx, read_client_hello, NULL);
    SSL_CTX_set_session_cache_mode(context->ssl_ctx, SSL_SESS_CACHE_OFF);
    pthread_rwlock_rdlock(&ticket_lock);
    int have_keys = ticket_key_count > 0;
    pthread_rwlock_unlock(&ticket_lock);
    if (!have_keys) ctls_ticket_keys_rotate();
    SSL_CTX_set_tlsext_ticket_key_evp_cb(context->ssl_ctx, ticket_key_callback);
    /* One TLS 1.3 ticket per handshake (OpenSSL sends two by default): a client resumes with one. */
    SSL_CTX_set_num_tickets(context->ssl_ctx, 1);
    if (ticket_lifetime_s > 0) {
        SSL_CTX_set_timeout(context->ssl_ctx, ticket_lifetime_s);
    } else {
        SSL_CTX_set_options(context->ssl_ctx, SSL_OP_NO_TICKET);
        SSL_CTX_set_num_tickets(context->ssl_ctx, 0); /* no TLS 1.3 tickets either */
    }
    if (context->alpn) SSL_CTX_set_alpn_select_cb(context->ssl_ctx, select_alpn, context);
}

/* A client session became resumable (TLS 1.3: a ticket arrived after the handshake): keep the
 * newest, for ctls_session_take_resumption. */
static int client_session_ready(SSL *ssl, SSL_SESSION *sess) {
    ctls_session *session = SSL_get_app_data(ssl);
    if (!session) return 0;
    if (session->resumption) SSL_SESSION_free(session->resumption);
    session->resumption = sess;
    return 1; /* the reference is ours now */
}

ctls_context *ctls_client_context_new(const char *ca_file, int verify, const unsigned char *alpn, size_t alpn_len,
                                      const char *cert_file, const char *key_file, char *err, size_t err_len) {
    ctls_context *context = calloc(1, sizeof *context);
    if (!context) return NULL;
    context->ssl_ctx = new_ssl_ctx(0, 12, err, err_len);
    if (!context->ssl_ctx) { free(context); return NULL; }
    context->verify = verify;
    if (verify) {
        int ok = ca_file ? SSL_CTX_load_verify_locations(context->ssl_ctx, ca_file, NULL)
                         : SSL_CTX_set_default_verify_paths(context->ssl_ctx);
        if (!ok) { write_error(err, err_len, "cannot load the CA certificates", ca_file); ctls_context_free(context); return NULL; }
        SSL_CTX_set_verify(context->ssl_ctx, SSL_VERIFY_PEER, NULL);
    }
    if (cert_file && key_file) {
        /* A client certificate (mutual TLS): loaded and checked like a server's. */
        context->certificates = calloc(1, sizeof *context->certificates);
        if (!context->certificates) { ctls_context_free(context); return NULL; }
        context->certificate_count = 1;
        if (!load_certificate(&context->certificates[0], cert_file, key_file, 0, err, err_len) ||
            SSL_CTX_use_cert_and_key(context->ssl_ctx, context->certificates[0].leaf, context->certificates[0].key,
                                     context->certificates[0].chain, 1) != 1) {
            if (err && !err[0]) write_error(err, err_len, "cannot use the client certificate", cert_file);
            ctls_context_free(context);
            return NULL;
        }
    }
    /* Sessions resume per backend: the caller keeps the newest one a connection got and offers it
     * on the next connection (nginx's proxy_ssl_session_reuse, HAProxy's ssl-reuse). */
    SSL_CTX_set_session_cache_mode(context->ssl_ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(context->ssl_ctx, client_session_ready);
    if (!copy_alpn(context, alpn, alpn_len) ||
        (context->alpn && SSL_CTX_set_alpn_protos(context->ssl_ctx, context->alpn, (unsigned int)context->alpn_len) != 0)) {
        ctls_context_free(context);
        return NULL;
    }
    return context;
}

void ctls_context_free(ctls_context *context) {
    if (!context) return;
    if (context->ssl_ctx) SSL_CTX_free(context->ssl_ctx);
    for (int i = 0; i < context->certificate_count; i++) free_certificate(&context->certificates[i]);
    free(context->certificates);
    free(context->alpn);
    if (context->local) local_ca_free(context->local);
    free(context);
}

int ctls_context_certificate_count(const ctls_context *context) { return context->certificate_count; }

size_t ctls_context_certificate_names(const ctls_context *context, int index, char *out, size_t out_len) {
    if (index < 0 || index >= context->certificate_count || out_len == 0) return 0;
    size_t used = 0;
    out[0] = 0;
    GENERAL_NAMES *names = X509_get_ext_d2i(context->certificates[index].leaf, NID_subject_alt_name, NULL, NULL);
    if (!names) return 0;
    for (int i = 0; i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *name = sk_GENERAL_NAME_value(names, i);
        char text[64];
        const char *piece = NULL;
        if (name->type == GEN_DNS) {
            piece = (const char *)ASN1_STRING_get0_data(name->d.dNSName);
        } else if (name->type == GEN_IPADD) {
            const unsigned char *ip = ASN1_STRING_get0_data(name->d.iPAddress);
            int len = ASN1_STRING_length(name->d.iPAddress);
            if (len == 4) {
                snprintf(text, sizeof text, "%u.%u.%u.%u", ip[0], ip[1], ip[2], ip[3]);
                piece = text;
            } else if (len == 16) {
                size_t at = 0;
                for (int j = 0; j < 16; j += 2) at += (size_t)snprintf(text + at, sizeof text - at, j ? ":%x" : "%x", (ip[j] << 8) | ip[j + 1]);
                piece = text;
            }
        }
        if (!piece) continue;
        int n = snprintf(out + used, out_len - used, "%s%s", used ? "," : "", piece);
        if (n < 0 || (size_t)n >= out_len - used) break;
        used += (size_t)n;
    }
    GENERAL_NAMES_free(names);
    return used;
}

int64_t ctls_context_certificate_not_after(const ctls_context *context, int index) {
    if (index < 0 || index >= context->certificate_count) return 0;
    const ASN1_TIME *t = X509_get0_notAfter(context->certificates[index].leaf);
    struct tm tm;
    if (!ASN1_TIME_to_tm(t, &tm)) return 0;
    return (int64_t)timegm(&tm);
}

/*
 * Input and output. No memory BIOs: they copy every byte once more and keep their largest size
 * per connection. Input is *lent*: ctls_session_feed points the session at the caller's bytes
 * (libuv's read buffer) and OpenSSL reads its records straight from there; what it has not taken
 * when the caller is done is copied into `kept` (ctls_session_release_input) and freed as soon as
 * it is consumed, so an idle connection holds no input buffer. Output goes into one buffer per
 * thread: the caller drains it after every call (ctls_session_output / _output_sent), before
 * any other session of the thread runs, so connections need no output buffer of their own.
 */
enum { KEPT_MAX = 1 << 20 }; /* more unconsumed input than this is an abuse: the session fails */

static _Thread_local struct {
    unsigned char *data;
    size_t len, cap;
    const ctls_session *owner;
} output_buffer;

/* Before a call that may produce output: the thread's buffer belongs to `session` from here on
 * (what another session left undrained — only after its own failure — is dropped). */
static void claim_output(const ctls_session *session) {
    if (output_buffer.owner != session) {
        output_buffer.len = 0;
        output_buffer.owner = session;
    }
}

static int input_read(BIO *bio, char *out, size_t size, size_t *read_bytes) {
    ctls_session *session = BIO_get_data(bio);
    size_t got = 0;
    if (session->failed) { /* nothing more for a session that failed (a KeyUpdate flood) */
        BIO_clear_retry_flags(bio);
        BIO_set_retry_read(bio);
        *read_bytes = 0;
        return 0;
    }
    if (session->kept_end > session->kept_start) {
        size_t n = session->kept_end - session->kept_start;
        if (n > size) n = size;
        memcpy(out, session->kept + session->kept_start, n);
        session->kept_start += n;
        got = n;
        if (session->kept_start == session->kept_end) {
            free(session->kept);
            session->kept = NULL;
            session->kept_start = session->kept_end = 0;
        }
    }
    if (got < size && session->lent_len > 0) {
        size_t n = session->lent_len;
        if (n > size - got) n = size - got;
        memcpy(out + got, session->lent, n);
        session->lent += n;
        session->lent_len -= n;
        got += n;
    }
    BIO_clear_retry_flags(bio);
    if (got == 0) {
        BIO_set_retry_read(bio); /* nothing now: "want read", not end of file */
        *read_bytes = 0;
        return 0;
    }
    *read_bytes = got;
    return 1;
}

/* The thread's output buffer is freed when the thread ends (a worker stopping). */
static pthread_key_t output_key;
static pthread_once_t output_key_once = PTHREAD_ONCE_INIT;

static void free_output_buffer(void *unused) {
    (void)unused;
    free(output_buffer.data);
    output_buffer.data = NULL;
    output_buffer.cap = output_buffer.len = 0;
    output_buffer.owner = NULL;
}

static void make_output_key(void) { pthread_key_create(&output_key, free_output_buffer); }

static int output_write(BIO *bio, const char *data, size_t len, size_t *written) {
    ctls_session *session = BIO_get_data(bio);
    claim_output(session);
    if (output_buffer.len + len > output_buffer.cap) {
        size_t cap = output_buffer.cap ? output_buffer.cap : 16384;
        while (cap < output_buffer.len + len) cap *= 2;
        if (!output_buffer.data) {
            pthread_once(&output_key_once, make_output_key);
            pthread_setspecific(output_key, &output_buffer); /* any non-NULL value: the destructor runs */
        }
        unsigned char *grown = realloc(output_buffer.data, cap);
        if (!grown) { *written = 0; return 0; }
        output_buffer.data = grown;
        output_buffer.cap = cap;
    }
    memcpy(output_buffer.data + output_buffer.len, data, len);
    output_buffer.len += len;
    *written = len;
    return 1;
}

static long input_ctrl(BIO *bio, int cmd, long num, void *ptr) {
    (void)num; (void)ptr;
    ctls_session *session = BIO_get_data(bio);
    switch (cmd) {
    case BIO_CTRL_PENDING: return (long)(session->kept_end - session->kept_start + session->lent_len);
    case BIO_CTRL_FLUSH: return 1;
    default: return 0;
    }
}

static long output_ctrl(BIO *bio, int cmd, long num, void *ptr) {
    (void)bio; (void)num; (void)ptr;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int bio_create(BIO *bio) {
    BIO_set_init(bio, 1);
    return 1;
}

static BIO_METHOD *input_method, *output_method;
static pthread_once_t methods_once = PTHREAD_ONCE_INIT;

static void make_methods(void) {
    input_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "ctls input");
    output_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "ctls output");
    if (input_method) {
        BIO_meth_set_read_ex(input_method, input_read);
        BIO_meth_set_ctrl(input_method, input_ctrl);
        BIO_meth_set_create(input_method, bio_create);
    }
    if (output_method) {
        BIO_meth_set_write_ex(output_method, output_write);
        BIO_meth_set_ctrl(output_method, output_ctrl);
        BIO_meth_set_create(output_method, bio_create);
    }
}

ctls_session *ctls_session_new(ctls_context *context, int is_server, const char *server_name) {
    pthread_once(&methods_once, make_methods);
    if (!input_method || !output_method) return NULL;
    ctls_session *session = calloc(1, sizeof *session);
    if (!session) return NULL;
    session->context = context;
    session->ssl = SSL_new(context->ssl_ctx);
    BIO *input = BIO_new(input_method), *output = BIO_new(output_method);
    if (!session->ssl || !input || !output) {
        if (session->ssl) SSL_free(session->ssl);
        if (input) BIO_free(input);
        if (output) BIO_free(output);
        free(session);
        ERR_clear_error();
        return NULL;
    }
    BIO_set_data(input, session);
    BIO_set_data(output, session);
    SSL_set_bio(session->ssl, input, output); /* the SSL owns both from here */
    SSL_set_app_data(session->ssl, session);
    if (is_server) {
        SSL_set_accept_state(session->ssl);
    } else {
        SSL_set_connect_state(session->ssl);
        if (server_name) {
            unsigned char ip[16];
            int is_ip = inet_pton(AF_INET, server_name, ip) == 1 || inet_pton(AF_INET6, server_name, ip) == 1;
            /* SNI carries host names only (RFC 6066 §3); an IP address is checked against IP SANs. */
            if (!is_ip) SSL_set_tlsext_host_name(session->ssl, server_name);
            if (context->verify) {
                if (is_ip) X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(session->ssl), server_name);
                else SSL_set1_host(session->ssl, server_name);
            }
        }
    }
    return session;
}

void ctls_session_free(ctls_session *session) {
    if (!session) return;
    if (output_buffer.owner == session) { output_buffer.owner = NULL; output_buffer.len = 0; }
    if (session->resumption) SSL_SESSION_free(session->resumption);
    free(session->error);
    free(session->server_name);
    SSL_free(session->ssl);
    free(session->kept);
    free(session);
}

int ctls_session_release_input(ctls_session *session) {
    if (session->lent_len == 0) return 0;
    if (session->failed) { session->lent_len = 0; return 0; } /* nothing will read it */
    size_t held = session->kept_end - session->kept_start;
    if (held + session->lent_len > KEPT_MAX) {
        session->lent_len = 0;
        session->failed = 1;
        return -1;
    }
    if (session->kept_start > 0) { /* compact: what is left moves to the front */
        memmove(session->kept, session->kept + session->kept_start, held);
        session->kept_start = 0;
        session->kept_end = held;
    }
    unsigned char *grown = realloc(session->kept, held + session->lent_len);
    if (!grown) { session->lent_len = 0; session->failed = 1; return -1; }
    memcpy(grown + held, session->lent, session->lent_len);
    session->kept = grown;
    session->kept_end = held + session->lent_len;
    session->lent_len = 0;
    return 0;
}

int ctls_session_feed(ctls_session *session, const void *bytes, size_t count) {
    if (ctls_session_release_input(session) != 0) return -1; /* an earlier loan not given back */
    session->lent = bytes;
    session->lent_len = count;
    return 0;
}

/* The first reason a session failed is the one kept (later failures follow from it). */
static void note_error(ctls_session *session, const char *what, const char *reason) {
    enum { ERROR_LEN = 256 };
    if (session->error) return;
    session->error = malloc(ERROR_LEN);
    if (!session->error) return;
    if (reason) snprintf(session->error, ERROR_LEN, "%s: %s", what, reason);
    else snprintf(session->error, ERROR_LEN, "%s", what);
}

static void note_failure(ctls_session *session, const char *what) {
    session->failed = 1;
    unsigned long code = ERR_get_error();
    if (code) {
        char reason[200];
        ERR_error_string_n(code, reason, sizeof reason);
        note_error(session, what, reason);
    } else {
        note_error(session, what, NULL);
    }
    ERR_clear_error();
}

int ctls_session_handshake(ctls_session *session) {
    if (session->failed) return CTLS_HANDSHAKE_FAILED;
    claim_output(session);
    clear_errors();
    int rc = SSL_do_handshake(session->ssl);
    if (session->failed) return CTLS_HANDSHAKE_FAILED; /* failed inside the call (a callback) */
    if (rc == 1) return CTLS_HANDSHAKE_DONE;
    int e = SSL_get_error(session->ssl, rc);
    if (e == SSL_ERROR_WANT_READ) return CTLS_HANDSHAKE_WANT_INPUT;
    note_failure(session, "TLS handshake failed");
    return CTLS_HANDSHAKE_FAILED;
}

long ctls_session_read(ctls_session *session, void *buffer, size_t capacity) {
    if (session->failed) return CTLS_READ_FAILED;
    claim_output(session);
    clear_errors();
    size_t n = 0;
    int rc = SSL_read_ex(session->ssl, buffer, capacity, &n);
    if (session->failed) return CTLS_READ_FAILED; /* failed inside the call (a KeyUpdate flood) */
    if (rc == 1) return (long)n;
    int e = SSL_get_error(session->ssl, rc);
    if (e == SSL_ERROR_WANT_READ) return CTLS_READ_WANT_INPUT;
    if (e == SSL_ERROR_ZERO_RETURN) return CTLS_READ_CLOSED;
    note_failure(session, "TLS read failed");
    return CTLS_READ_FAILED;
}

int ctls_session_write(ctls_session *session, const void *bytes, size_t count) {
    if (session->failed) return -1;
    if (count == 0) return 0;
    claim_output(session);
    clear_errors();
    size_t n = 0;
    /* The output BIO takes everything: without partial writes SSL_write_ex writes all or fails. */
    if (SSL_write_ex(session->ssl, bytes, count, &n) != 1 || n != count) {
        note_failure(session, "TLS write failed");
        if (output_buffer.owner == session) output_buffer.len = 0; /* nothing of a failed session goes out */
        return -1;
    }
    return 0;
}

void ctls_session_close_notify(ctls_session *session) {
    if (session->failed || session->close_notify_sent || !SSL_is_init_finished(session->ssl)) return;
    session->close_notify_sent = 1;
    claim_output(session);
    clear_errors();
    SSL_shutdown(session->ssl); /* queues the alert; the peer's answer is not awaited */
    ERR_clear_error();
}

size_t ctls_session_output(ctls_session *session, const void **bytes) {
    if (output_buffer.owner != session || output_buffer.len == 0) { *bytes = NULL; return 0; }
    *bytes = output_buffer.data;
    return output_buffer.len;
}

void ctls_session_output_sent(ctls_session *session) {
    if (output_buffer.owner != session) return;
    output_buffer.len = 0;
    /* A burst (bulk data) may have grown it: do not keep more than a few records' worth. */
    if (output_buffer.cap > (1 << 18)) {
        free(output_buffer.data);
        output_buffer.data = NULL;
        output_buffer.cap = 0;
    }
}

int ctls_session_has_buffered_input(const ctls_session *session) {
    return SSL_pending(session->ssl) > 0 || session->kept_end > session->kept_start || session->lent_len > 0;
}

const char *ctls_session_version(const ctls_session *session) { return SSL_get_version(session->ssl); }

const char *ctls_session_cipher(const ctls_session *session) {
    const char *name = SSL_get_cipher_name(session->ssl);
    return name ? name : "";
}

size_t ctls_session_alpn(const ctls_session *session, const unsigned char **protocol) {
    unsigned int len = 0;
    SSL_get0_alpn_selected(session->ssl, protocol, &len);
    return len;
}

const char *ctls_session_server_name(const ctls_session *session) {
    /* A server's is what its ClientHello said, checked (OpenSSL reports none for a resumed TLS 1.2
     * session, and the raw bytes of an invalid one); a client's is what it sent. */
    if (session->context->is_server) return session->server_name;
    return SSL_get_servername(session->ssl, TLSEXT_NAMETYPE_host_name);
}

int ctls_session_resumed(const ctls_session *session) { return SSL_session_reused(session->ssl); }

const char *ctls_session_error(const ctls_session *session) { return session->error ? session->error : ""; }

void *ctls_session_take_resumption(ctls_session *session) {
    SSL_SESSION *taken = session->resumption;
    session->resumption = NULL;
    return taken;
}

void ctls_resumption_free(void *resumption) {
    if (resumption) SSL_SESSION_free(resumption);
}

void ctls_session_resume(ctls_session *session, void *resumption) {
    if (resumption) SSL_set_session(session->ssl, resumption);
}

int ctls_session_peek(ctls_session *session) {
    if (session->failed) return -1;
    claim_output(session);
    clear_errors();
    unsigned char byte;
    size_t n = 0;
    int rc = SSL_peek_ex(session->ssl, &byte, 1, &n);
    if (session->failed) return -1;
    if (rc == 1) return 1;
    int e = SSL_get_error(session->ssl, rc);
    if (e == SSL_ERROR_WANT_READ) return 0;
    if (e == SSL_ERROR_ZERO_RETURN) return -1;
    note_failure(session, "TLS read failed");
    return -1;
}

int ctls_session_received_close_notify(const ctls_session *session) {
    return (SSL_get_shutdown(session->ssl) & SSL_RECEIVED_SHUTDOWN) != 0;
}

int ctls_session_key_update(ctls_session *session) {
    if (session->failed || !SSL_is_init_finished(session->ssl)) return -1;
    claim_output(session);
    clear_errors();
    /* Scheduled, then written out by a handshake step (it would otherwise wait for the next write). */
    if (SSL_key_update(session->ssl, SSL_KEY_UPDATE_NOT_REQUESTED) != 1 || SSL_do_handshake(session->ssl) != 1) {
        ERR_clear_error();
        return -1;
    }
    return 0;
}

const char *ctls_library_version(void) {
    return OpenSSL_version(OPENSSL_VERSION);
}

/* Local HTTPS for development: a CA the proxy makes once per user, and server contexts whose
 * certificates it issues on demand, one leaf per SNI name (see include/ctls.h). */
#include "ctls.h"
#include "ctls_internal.h"

#include <fcntl.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

enum { LEAF_CACHE_MAX = 256, NAME_MAX_LEN = 253 };

struct leaf {
    char name[NAME_MAX_LEN + 1];
    X509 *cert;
    time_t not_after;
};

struct local_ca {
    X509 *ca_cert;
    EVP_PKEY *ca_key;
    EVP_PKEY *leaf_key; /* one key for every leaf of this context */
    char **names;       /* names that get a leaf of their own (besides *.localhost) */
    int name_count;
    int leaf_days;
    pthread_mutex_t lock; /* handshakes on every worker thread share the cache */
    struct leaf leaves[LEAF_CACHE_MAX];
    int leaf_count;
};

void local_ca_free(struct local_ca *ca) {
    if (!ca) return;
    X509_free(ca->ca_cert);
    EVP_PKEY_free(ca->ca_key);
    EVP_PKEY_free(ca->leaf_key);
    for (int i = 0; i < ca->name_count; i++) free(ca->names[i]);
    free(ca->names);
    for (int i = 0; i < ca->leaf_count; i++) X509_free(ca->leaves[i].cert);
    pthread_mutex_destroy(&ca->lock);
    free(ca);
}

static EVP_PKEY *new_p256_key(void) { return EVP_EC_gen("P-256"); }

static int add_extension(X509 *cert, X509 *issuer, int nid, const char *value) {
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (!ext) return 0;
    int ok = X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
    return ok;
}

static int random_serial(X509 *cert) {
    BIGNUM *bn = BN_new();
    int ok = bn && BN_rand(bn, 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) &&
             BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert)) != NULL;
    BN_free(bn);
    return ok;
}

/* A certificate for `key`, `days` long (from an hour ago, against clock skew), named `cn`,
 * signed by `issuer_key` (self-signed when `issuer` is NULL). */
static X509 *new_certificate(EVP_PKEY *key, const char *cn, long days, X509 *issuer, EVP_PKEY *issuer_key) {
    X509 *cert = X509_new();
    if (!cert) return NULL;
    int ok = X509_set_version(cert, 2) && random_serial(cert) &&
             X509_gmtime_adj(X509_getm_notBefore(cert), -3600) && X509_gmtime_adj(X509_getm_notAfter(cert), days * 86400L) &&
             X509_set_pubkey(cert, key);
    X509_NAME *name = X509_get_subject_name(cert);
    if (ok && strlen(cn) <= 64) ok = X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0);
    if (ok) ok = X509_set_issuer_name(cert, issuer ? X509_get_subject_name(issuer) : name);
    if (!ok) { X509_free(cert); return NULL; }
    return cert;
}

static int write_private_key(const char *path, EVP_PKEY *key) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) return 0;
    FILE *f = fdopen(fd, "w");
    if (!f) { close(fd); return 0; }
    int ok = PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
    return fclose(f) == 0 && ok;
}

int ctls_local_ca_create(const char *cert_file, const char *key_file, const char *common_name, int days,
                         char *err, size_t err_len) {
    EVP_PKEY *key = new_p256_key();
    X509 *cert = key ? new_certificate(key, common_name, days, NULL, NULL) : NULL;
    int ok = cert && add_extension(cert, cert, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") &&
             add_extension(cert, cert, NID_key_usage, "critical,keyCertSign,cRLSign") &&
             add_extension(cert, cert, NID_subject_key_identifier, "hash") && X509_sign(cert, key, EVP_sha256()) > 0;
    if (!ok) {
        write_error(err, err_len, "cannot make the local CA certificate", NULL);
    } else if (!write_private_key(key_file, key)) {
        snprintf(err, err_len, "%s: cannot write the local CA key", key_file);
        ok = 0;
    } else {
        FILE *f = fopen(cert_file, "w");
        ok = f && PEM_write_X509(f, cert);
        if (f && fclose(f) != 0) ok = 0;
        if (!ok) snprintf(err, err_len, "%s: cannot write the local CA certificate", cert_file);
    }
    X509_free(cert);
    EVP_PKEY_free(key);
    return ok ? 0 : -1;
}

static int is_ip(const char *name) { return strchr(name, ':') || strspn(name, "0123456789.") == strlen(name); }

/* Issues the leaf for `name`: SAN DNS:name, or for "localhost" also the loopback addresses. */
static X509 *issue_leaf(struct local_ca *ca, const char *name) {
    X509 *cert = new_certificate(ca->leaf_key, name, ca->leaf_days, ca->ca_cert, ca->ca_key);
    if (!cert) return NULL;
    char san[NAME_MAX_LEN + 64];
    if (strcmp(name, "localhost") == 0) snprintf(san, sizeof san, "DNS:localhost,IP:127.0.0.1,IP:::1");
    else snprintf(san, sizeof san, "%s:%s", is_ip(name) ? "IP" : "DNS", name);
    int ok = add_extension(cert, ca->ca_cert, NID_basic_constraints, "critical,CA:FALSE") &&
             add_extension(cert, ca->ca_cert, NID_key_usage, "critical,digitalSignature") &&
             add_extension(cert, ca->ca_cert, NID_ext_key_usage, "serverAuth") &&
             add_extension(cert, ca->ca_cert, NID_subject_alt_name, san) &&
             add_extension(cert, ca->ca_cert, NID_authority_key_identifier, "keyid:always") &&
             X509_sign(cert, ca->ca_key, EVP_sha256()) > 0;
    if (!ok) { X509_free(cert); ERR_clear_error(); return NULL; }
    return cert;
}

static int has_suffix(const char *name, const char *suffix) {
    size_t n = strlen(name), s = strlen(suffix);
    return n > s && strcasecmp(name + n - s, suffix) == 0;
}

/* Which leaf a client's SNI gets: its own for configured names and *.localhost, else localhost's.
 * `sni` was checked and normalised already (ctls_session_sni: a valid host name, lower-case). */
static const char *leaf_name_for(const struct local_ca *ca, const char *sni) {
    if (!sni || strlen(sni) > NAME_MAX_LEN) return "localhost";
    for (int i = 0; i < ca->name_count; i++)
        if (strcasecmp(sni, ca->names[i]) == 0) return ca->names[i];
    if (has_suffix(sni, ".localhost")) return sni;
    return "localhost";
}

static int select_local_certificate(SSL *ssl, void *arg) {
    ctls_context *context = arg;
    struct local_ca *ca = context->local;
    const char *name = leaf_name_for(ca, ctls_session_sni(ssl));
    time_t now = time(NULL);
    /* Renewed when less than a quarter of its life is left. */
    time_t renew_margin = (time_t)ca->leaf_days * 86400 / 4;
    pthread_mutex_lock(&ca->lock);
    struct leaf *entry = NULL;
    for (int i = 0; i < ca->leaf_count; i++)
        if (strcasecmp(ca->leaves[i].name, name) == 0) { entry = &ca->leaves[i]; break; }
    if (entry && entry->not_after - now < renew_margin) {
        X509_free(entry->cert);
        entry->cert = NULL;
    }
    if (!entry) {
        if (ca->leaf_count == LEAF_CACHE_MAX) { /* bounded: a flood of names starts the cache over */
            for (int i = 0; i < ca->leaf_count; i++) X509_free(ca->leaves[i].cert);
            ca->leaf_count = 0;
        }
        entry = &ca->leaves[ca->leaf_count++];
        snprintf(entry->name, sizeof entry->name, "%s", name);
        entry->cert = NULL;
    }
    if (!entry->cert) {
        entry->cert = issue_leaf(ca, name);
        entry->not_after = now + (time_t)ca->leaf_days * 86400;
    }
    int ok = entry->cert && SSL_use_cert_and_key(ssl, entry->cert, ca->leaf_key, NULL, 1) == 1;
    if (!entry->cert) ca->leaf_count--; /* nothing cached for a failed issue (the last entry) */
    pthread_mutex_unlock(&ca->lock);
    return ok;
}

ctls_context *ctls_local_server_context_new(const char *ca_cert_file, const char *ca_key_file,
                                            const char *const *names, int name_count, int leaf_days, int min_version,
                                            const unsigned char *alpn, size_t alpn_len, long ticket_lifetime_s,
                                            char *err, size_t err_len) {
    ctls_context *context = calloc(1, sizeof *context);
    struct local_ca *ca = calloc(1, sizeof *ca);
    if (!context || !ca) { free(context); free(ca); return NULL; }
    context->is_server = 1;
    context->local = ca;
    pthread_mutex_init(&ca->lock, NULL);
    ca->leaf_days = leaf_days > 0 ? leaf_days : 7;
    struct ctls_certificate root = {0};
    /* The root has no subjectAltName: it names no host. */
    if (!load_certificate(&root, ca_cert_file, ca_key_file, 0, err, err_len)) {
        free_certificate(&root);
        ctls_context_free(context);
        return NULL;
    }
    ca->ca_cert = root.leaf;
    ca->ca_key = root.key;
    if (root.chain) sk_X509_pop_free(root.chain, X509_free);
    ca->leaf_key = new_p256_key();
    ca->names = calloc((size_t)(name_count > 0 ? name_count : 1), sizeof *ca->names);
    if (!ca->leaf_key || !ca->names) { write_error(err, err_len, "cannot make a key for local certificates", NULL); ctls_context_free(context); return NULL; }
    for (int i = 0; i < name_count; i++) {
        ca->names[i] = strdup(names[i]);
        if (!ca->names[i]) { ctls_context_free(context); return NULL; }
        ca->name_count++;
    }
    context->ssl_ctx = new_ssl_ctx(1, min_version, err, err_len);
    if (!context->ssl_ctx || !copy_alpn(context, alpn, alpn_len)) { ctls_context_free(context); return NULL; }
    configure_server_ctx(context, ticket_lifetime_s);
    SSL_CTX_set_cert_cb(context->ssl_ctx, select_local_certificate, context);
    return context;
}

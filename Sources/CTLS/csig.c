#include "csig.h"
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>
#include <stdlib.h>
#include <string.h>

enum { KIND_RSA = 1, KIND_EC256, KIND_EC384, KIND_ED25519, KIND_SECRET };

struct csig_key {
    int kind;
    EVP_PKEY *pkey;          /* public keys */
    uint8_t *secret;         /* HMAC */
    size_t secret_len;
};

static csig_key *wrap(int kind, EVP_PKEY *pkey) {
    if (!pkey) return NULL;
    csig_key *k = calloc(1, sizeof *k);
    if (!k) { EVP_PKEY_free(pkey); return NULL; }
    k->kind = kind;
    k->pkey = pkey;
    return k;
}

static EVP_PKEY *from_params(const char *type, OSSL_PARAM_BLD *bld) {
    EVP_PKEY *pkey = NULL;
    OSSL_PARAM *params = bld ? OSSL_PARAM_BLD_to_param(bld) : NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    if (params && ctx && EVP_PKEY_fromdata_init(ctx) > 0) {
        if (EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0) pkey = NULL;
    }
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    return pkey;
}

csig_key *csig_key_rsa(const uint8_t *n, size_t n_len, const uint8_t *e, size_t e_len) {
    /* At least 2048 bits (RFC 7518 §3.3), at most 16384. */
    if (n_len < 256 || n_len > 2048 || e_len == 0 || e_len > 8) return NULL;
    BIGNUM *bn_n = BN_bin2bn(n, (int)n_len, NULL), *bn_e = BN_bin2bn(e, (int)e_len, NULL);
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    EVP_PKEY *pkey = NULL;
    if (bn_n && bn_e && bld && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n)
        && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e)) {
        pkey = from_params("RSA", bld);
    }
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn_n);
    BN_free(bn_e);
    return wrap(KIND_RSA, pkey);
}

csig_key *csig_key_ec(int curve, const uint8_t *x, size_t x_len, const uint8_t *y, size_t y_len) {
    size_t size = curve == 256 ? 32 : curve == 384 ? 48 : 0;
    if (!size || x_len != size || y_len != size) return NULL;
    uint8_t point[1 + 2 * 48];
    point[0] = 0x04;  /* uncompressed */
    memcpy(point + 1, x, size);
    memcpy(point + 1 + size, y, size);
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    EVP_PKEY *pkey = NULL;
    if (bld && OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, curve == 256 ? "P-256" : "P-384", 0)
        && OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, 1 + 2 * size)) {
        pkey = from_params("EC", bld);  /* checks the point is on the curve */
    }
    OSSL_PARAM_BLD_free(bld);
    return wrap(curve == 256 ? KIND_EC256 : KIND_EC384, pkey);
}

csig_key *csig_key_ed25519(const uint8_t *x, size_t x_len) {
    if (x_len != 32) return NULL;
    return wrap(KIND_ED25519, EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, x, x_len));
}

csig_key *csig_key_secret(const uint8_t *secret, size_t len) {
    /* RFC 7518 §3.2: a key at least as long as the hash output. */
    if (len < 32 || len > 4096) return NULL;
    csig_key *k = calloc(1, sizeof *k);
    if (!k) return NULL;
    k->secret = malloc(len);
    if (!k->secret) { free(k); return NULL; }
    memcpy(k->secret, secret, len);
    k->secret_len = len;
    k->kind = KIND_SECRET;
    return k;
}

void csig_key_free(csig_key *key) {
    if (!key) return;
    EVP_PKEY_free(key->pkey);
    if (key->secret) {
        OPENSSL_cleanse(key->secret, key->secret_len);
        free(key->secret);
    }
    free(key);
}

static int digest_verify(EVP_PKEY *pkey, const EVP_MD *md, int pss, const uint8_t *data, size_t len,
                         const uint8_t *sig, size_t sig_len) {
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    int ok = 0;
    if (ctx && EVP_DigestVerifyInit(ctx, &pctx, md, NULL, pkey) > 0) {
        if (pss && (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) <= 0
                    || EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) <= 0)) {
            EVP_MD_CTX_free(ctx);
            return 0;
        }
        ok = EVP_DigestVerify(ctx, sig, sig_len, data, len) == 1;
    }
    EVP_MD_CTX_free(ctx);
    return ok;
}

/* JWS carries ECDSA signatures as r || s; OpenSSL wants DER. */
static int ecdsa_verify(EVP_PKEY *pkey, const EVP_MD *md, size_t half, const uint8_t *data, size_t len,
                        const uint8_t *sig, size_t sig_len) {
    if (sig_len != 2 * half) return 0;
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, (int)half, NULL), *s = BN_bin2bn(sig + half, (int)half, NULL);
    if (!es || !r || !s || !ECDSA_SIG_set0(es, r, s)) {
        ECDSA_SIG_free(es);
        BN_free(r);
        BN_free(s);
        return 0;
    }
    unsigned char *der = NULL;
    int der_len = i2d_ECDSA_SIG(es, &der);
    ECDSA_SIG_free(es);
    if (der_len <= 0) return 0;
    int ok = digest_verify(pkey, md, 0, data, len, der, (size_t)der_len);
    OPENSSL_free(der);
    return ok;
}

int csig_verify(const csig_key *key, int alg, const uint8_t *data, size_t data_len,
                const uint8_t *sig, size_t sig_len) {
    if (!key) return 0;
    switch (alg) {
    case CSIG_RS256: return key->kind == KIND_RSA && digest_verify(key->pkey, EVP_sha256(), 0, data, data_len, sig, sig_len);
    case CSIG_RS384: return key->kind == KIND_RSA && digest_verify(key->pkey, EVP_sha384(), 0, data, data_len, sig, sig_len);
    case CSIG_RS512: return key->kind == KIND_RSA && digest_verify(key->pkey, EVP_sha512(), 0, data, data_len, sig, sig_len);
    case CSIG_PS256: return key->kind == KIND_RSA && digest_verify(key->pkey, EVP_sha256(), 1, data, data_len, sig, sig_len);
    case CSIG_ES256: return key->kind == KIND_EC256 && ecdsa_verify(key->pkey, EVP_sha256(), 32, data, data_len, sig, sig_len);
    case CSIG_ES384: return key->kind == KIND_EC384 && ecdsa_verify(key->pkey, EVP_sha384(), 48, data, data_len, sig, sig_len);
    case CSIG_EDDSA: return key->kind == KIND_ED25519 && digest_verify(key->pkey, NULL, 0, data, data_len, sig, sig_len);
    case CSIG_HS256: {
        if (key->kind != KIND_SECRET || sig_len != 32) return 0;
        unsigned char mac[32];
        unsigned int mac_len = 0;
        if (!HMAC(EVP_sha256(), key->secret, (int)key->secret_len, data, data_len, mac, &mac_len) || mac_len != 32) return 0;
        return CRYPTO_memcmp(mac, sig, 32) == 0;
    }
    default: return 0;
    }
}

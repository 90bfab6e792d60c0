/*
 * Signature checks for JSON Web Tokens (RFC 7515/7518/8037), behind an interface that names no
 * crypto library: public keys built from their JWK members (raw big-endian bytes), and one call
 * that checks a signature over bytes. csig.c is the only code that knows OpenSSL here.
 *
 * Threading: a key is immutable once built and may be used from any thread.
 */
#ifndef CSIG_H
#define CSIG_H

#include <stddef.h>
#include <stdint.h>

typedef struct csig_key csig_key;

enum csig_alg {
    CSIG_RS256 = 1,   /* RSASSA-PKCS1-v1_5 with SHA-256 */
    CSIG_ES256 = 2,   /* ECDSA P-256 with SHA-256; the signature is r || s, 64 bytes */
    CSIG_EDDSA = 3,   /* Ed25519 */
    CSIG_HS256 = 4,   /* HMAC with SHA-256 */
    CSIG_RS384 = 5,
    CSIG_RS512 = 6,
    CSIG_ES384 = 7,   /* P-384 with SHA-384; r || s, 96 bytes */
    CSIG_PS256 = 8,   /* RSASSA-PSS with SHA-256 */
};

/* NULL when the members do not make a valid key. */
csig_key *csig_key_rsa(const uint8_t *n, size_t n_len, const uint8_t *e, size_t e_len);
/* `curve`: 256 or 384. */
csig_key *csig_key_ec(int curve, const uint8_t *x, size_t x_len, const uint8_t *y, size_t y_len);
csig_key *csig_key_ed25519(const uint8_t *x, size_t x_len);
csig_key *csig_key_secret(const uint8_t *secret, size_t len);
void csig_key_free(csig_key *key);

/* 1 when `sig` is `key`'s signature of `data` under `alg`; 0 otherwise (also when the key's
   type does not fit the algorithm: no algorithm confusion). */
int csig_verify(const csig_key *key, int alg, const uint8_t *data, size_t data_len,
                const uint8_t *sig, size_t sig_len);

#endif

/* OpenSSL 3 (Debian libssl-dev), found with pkg-config `openssl`. Only CTLS (the TLS engine)
 * depends on it: no Swift code imports it. */
#include <openssl/ssl.h>

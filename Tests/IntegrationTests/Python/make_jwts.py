"""Makes the keys and tokens the JWT tests use: writes DIR/jwks.json (EC P-256, RSA 2048 and
Ed25519 public keys) and DIR/hs256.key, and prints a JSON object of named tokens (good ones for
each algorithm, and ones that must be refused). Uses PyJWT and cryptography.

  python make_jwts.py DIR
"""
import base64
import json
import sys
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def main() -> None:
    out = sys.argv[1]
    ec_key = ec.generate_private_key(ec.SECP256R1())
    other_ec = ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    secret = b"0123456789abcdef0123456789abcdef-hs256"

    ec_pub = ec_key.public_key().public_numbers()
    rsa_pub = rsa_key.public_key().public_numbers()
    ed_raw = ed_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    jwks = {"keys": [
        {"kty": "EC", "crv": "P-256", "kid": "ec1", "x": b64(ec_pub.x.to_bytes(32, "big")), "y": b64(ec_pub.y.to_bytes(32, "big"))},
        {"kty": "RSA", "kid": "rsa1", "n": b64(rsa_pub.n.to_bytes(256, "big")), "e": b64(rsa_pub.e.to_bytes(3, "big"))},
        {"kty": "OKP", "crv": "Ed25519", "kid": "ed1", "x": b64(ed_raw)},
        {"kty": "oct", "kid": "ignored", "k": b64(b"not used from a JWKS")},
    ]}
    with open(f"{out}/jwks.json", "w") as f:
        json.dump(jwks, f)
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key().public_numbers()
    with open(f"{out}/weak_jwks.json", "w") as f:
        json.dump({"keys": [{"kty": "RSA", "kid": "weak", "n": b64(weak.n.to_bytes(128, "big")), "e": b64(weak.e.to_bytes(3, "big"))}]}, f)
    # A rotation: the identity provider adds a second EC key ("ec2") beside the first.
    rotated_ec = ec.generate_private_key(ec.SECP256R1())
    rotated_pub = rotated_ec.public_key().public_numbers()
    with open(f"{out}/jwks_rotated.json", "w") as f:
        json.dump({"keys": jwks["keys"] + [{"kty": "EC", "crv": "P-256", "kid": "ec2", "x": b64(rotated_pub.x.to_bytes(32, "big")),
                                            "y": b64(rotated_pub.y.to_bytes(32, "big"))}]}, f)
    with open(f"{out}/hs256.key", "wb") as f:
        f.write(secret + b"\n")

    now = int(time.time())
    claims = {"sub": "user-42", "tenant": "acme", "iss": "https://id.example", "aud": "api", "exp": now + 600, "iat": now}
    tokens = {
        "es256": jwt.encode(claims, ec_key, algorithm="ES256", headers={"kid": "ec1"}),
        "rs256": jwt.encode(claims, rsa_key, algorithm="RS256", headers={"kid": "rsa1"}),
        "eddsa": jwt.encode(claims, ed_key, algorithm="EdDSA", headers={"kid": "ed1"}),
        "hs256": jwt.encode(claims, secret, algorithm="HS256"),
        "other_user": jwt.encode(dict(claims, sub="user-7", tenant="globex"), ec_key, algorithm="ES256", headers={"kid": "ec1"}),
        "aud_list": jwt.encode(dict(claims, aud=["web", "api"]), ec_key, algorithm="ES256", headers={"kid": "ec1"}),
        "expired": jwt.encode(dict(claims, exp=now - 120), ec_key, algorithm="ES256", headers={"kid": "ec1"}),
        "not_yet": jwt.encode(dict(claims, nbf=now + 600), ec_key, algorithm="ES256", headers={"kid": "ec1"}),
        "wrong_aud": jwt.encode(dict(claims, aud="other"), ec_key, algorithm="ES256", headers={"kid": "ec1"}),
        "wrong_iss": jwt.encode(dict(claims, iss="https://evil.example"), ec_key, algorithm="ES256", headers={"kid": "ec1"}),
        "wrong_key": jwt.encode(claims, other_ec, algorithm="ES256", headers={"kid": "ec1"}),
        "unknown_kid": jwt.encode(claims, ec_key, algorithm="ES256", headers={"kid": "nope"}),
        "rotated": jwt.encode(dict(claims, sub="user-rotated"), rotated_ec, algorithm="ES256", headers={"kid": "ec2"}),
        "alg_none": b64(json.dumps({"alg": "none", "typ": "JWT"}).encode()) + "." + b64(json.dumps(claims).encode()) + ".",
        "huge_exp": jwt.encode(dict(claims, exp=1e300), ec_key, algorithm="ES256", headers={"kid": "ec1"}),
        "header_injection": jwt.encode(dict(claims, sub="x\r\nX-Admin: yes"), ec_key, algorithm="ES256", headers={"kid": "ec1"}),
    }
    # Tampered: the payload changed after signing.
    h, p, s = tokens["es256"].split(".")
    tokens["tampered"] = h + "." + b64(json.dumps(dict(claims, sub="admin")).encode()) + "." + s
    # Algorithm confusion: HS256 with the RSA public key's PEM as the secret.
    pem = rsa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    head = b64(json.dumps({"alg": "HS256", "kid": "rsa1"}).encode())
    body = b64(json.dumps(claims).encode())
    import hashlib
    import hmac
    tokens["confusion"] = head + "." + body + "." + b64(hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest())
    print(json.dumps(tokens))


if __name__ == "__main__":
    main()

import CTLS

/// A key that checks JSON Web Token signatures (through `CTLS/csig.h`): a JWK's public key, or
/// an HS256 secret. The algorithm is checked against the key's type inside: an RSA key never
/// checks an HMAC, a secret never an RSA signature (no algorithm confusion).
///
/// Ownership: frees its native key with the last reference. Threading: immutable, any thread.
final class SignatureKey: @unchecked Sendable {
    enum Algorithm: String, CaseIterable {
        case rs256 = "RS256", rs384 = "RS384", rs512 = "RS512", ps256 = "PS256"
        case es256 = "ES256", es384 = "ES384", edDSA = "EdDSA", hs256 = "HS256"

        var native: Int32 {
            let value: csig_alg = switch self {
            case .rs256: CSIG_RS256
            case .rs384: CSIG_RS384
            case .rs512: CSIG_RS512
            case .ps256: CSIG_PS256
            case .es256: CSIG_ES256
            case .es384: CSIG_ES384
            case .edDSA: CSIG_EDDSA
            case .hs256: CSIG_HS256
            }
            return Int32(value.rawValue)
        }
    }

    private let native: OpaquePointer
    /// The JWK's `kid` (nil: none; the secret has none).
    let id: String?
    /// What this key may check.
    let algorithms: Set<Algorithm>

    private init(native: OpaquePointer, id: String?, algorithms: Set<Algorithm>) {
        self.native = native
        self.id = id
        self.algorithms = algorithms
    }

    deinit { csig_key_free(native) }

    /// nil when the members do not make a valid key (a point off the curve, a short modulus).
    static func make(_ jwk: AuthConfig.JWK) -> SignatureKey? {
        let native: OpaquePointer?
        switch (jwk.kty, jwk.crv) {
        case ("RSA", _): native = csig_key_rsa(jwk.n, jwk.n.count, jwk.e, jwk.e.count)
        case ("EC", "P-256"): native = csig_key_ec(256, jwk.x, jwk.x.count, jwk.y, jwk.y.count)
        case ("EC", "P-384"): native = csig_key_ec(384, jwk.x, jwk.x.count, jwk.y, jwk.y.count)
        case ("OKP", "Ed25519"): native = csig_key_ed25519(jwk.x, jwk.x.count)
        default: native = nil
        }
        guard let native else { return nil }
        return SignatureKey(native: native, id: jwk.kid,
                            algorithms: Set(AuthConfig.JWT.algorithms(for: jwk).compactMap(Algorithm.init(rawValue:))))
    }

    static func secret(_ bytes: [UInt8]) -> SignatureKey? {
        guard let native = csig_key_secret(bytes, bytes.count) else { return nil }
        return SignatureKey(native: native, id: nil, algorithms: [.hs256])
    }

    /// Whether `signature` is this key's signature of `data` under `algorithm`.
    func verify(_ algorithm: Algorithm, data: ArraySlice<UInt8>, signature: [UInt8]) -> Bool {
        guard algorithms.contains(algorithm) else { return false }
        return data.withUnsafeBytes { d in
            signature.withUnsafeBytes { s in
                csig_verify(native, algorithm.native, d.baseAddress?.assumingMemoryBound(to: UInt8.self), d.count,
                            s.baseAddress?.assumingMemoryBound(to: UInt8.self), s.count) == 1
            }
        }
    }
}

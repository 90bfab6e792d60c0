import Glibc

/// One route's `auth.jwt` on one worker: checks `Authorization: Bearer TOKEN` — a JSON Web Token
/// (RFC 7519) in compact JWS form signed by one of the configured keys — and its `exp`, `nbf`,
/// `iss` and `aud`. Checking a signature takes tens of microseconds, so it runs on the loop; a
/// token that passed is remembered (by its exact bytes, at most `maxCached`, never past its `exp`
/// and at most `cacheS`), so a client's later requests cost a table look-up.
///
/// Refused: `alg: none` and any algorithm not in `algorithms`, a key whose type does not fit the
/// algorithm (an RSA public key used as an HMAC secret), unknown `kid`s, `crit` headers, tokens
/// over `max_token_bytes`.
///
/// Keys fetched from a URL (`remote`) are picked up when their version moves (both caches are
/// then dropped: a key taken out of the JWKS no longer lets its tokens in). A token that no key
/// checks — none fetched yet, or none with its `kid` — asks for a fetch (`RemoteKeySet.needKeys`):
/// the request waits for it, or, inside `min_refetch_s` of the last one, is refused at once.
///
/// Threading: one worker's loop.
final class JWTAuthenticator {
    /// What a passed token brings to the request: the `forward_claims` fields (rendered
    /// `Name: value\r\n` lines) and the hash of the claim a `jwt:` rate-limit key counts by.
    struct Accepted {
        let fields: [UInt8]
        let rateKey: UInt64
    }

    enum Verdict {
        case allowed(Accepted)
        /// 401: why, for the client.
        case denied(String)
        /// No key checks the token yet and a fetch of the JWKS is under way: ask again when it
        /// has ended (`WorkerMessage.keysFetched`).
        case waitForKeys
        /// 503: no keys could be fetched yet; why, for the client.
        case unavailable(String)
    }

    /// A token refused; `keyMissing` when no key could check it (a fetch might bring one).
    struct Refusal: Error {
        let message: String
        var keyMissing = false
    }

    let config: AuthConfig.JWT
    /// `WWW-Authenticate`'s value when no token came, and when one was refused (RFC 6750 §3).
    let challenge = "Bearer"
    let refusedChallenge = "Bearer error=\"invalid_token\""
    static let maxCached = 4096
    static let cacheS: Int64 = 300
    /// The keys in use: the file's and the secret, or the secret and the last fetched ones.
    private var keys: [SignatureKey]
    /// The JWKS URL's keys (nil: a file, or a secret only).
    let remote: RemoteKeySet?
    /// `remote`'s version that `keys` holds.
    private var remoteVersion: UInt64 = 0
    private let algorithms: Set<SignatureKey.Algorithm>
    /// The claim of the route's `jwt:CLAIM` rate-limit key (nil: none).
    let rateClaim: String?
    /// Passed tokens by a hash of their bytes, each with its bytes (compared in full on a hit:
    /// a collision costs a fresh check, never a wrong answer).
    private var accepted: [UInt64: (token: [UInt8], untilMs: Int64, value: Accepted)] = [:]
    /// Tokens refused lately (same keying): a client repeating a bad token costs a look-up, not a
    /// signature check, for `refusedCacheS`.
    private var refused: [UInt64: (token: [UInt8], untilMs: Int64, why: String)] = [:]
    static let refusedCacheS: Int64 = 10

    init(_ config: AuthConfig.JWT, rateClaim: String?, remote: RemoteKeySet? = nil) {
        self.config = config
        self.rateClaim = rateClaim
        self.remote = remote
        keys = Self.keys(config.keys, secret: config.secret)
        algorithms = Set(config.algorithms.compactMap(SignatureKey.Algorithm.init(rawValue:)))
    }

    private static func keys(_ jwks: [AuthConfig.JWK], secret: [UInt8]?) -> [SignatureKey] {
        jwks.compactMap(SignatureKey.make) + (secret.flatMap(SignatureKey.secret).map { [$0] } ?? [])
    }

    /// Takes up the fetched keys when they changed since the last look.
    private func followRemoteKeys() {
        guard let remote, remote.version != remoteVersion else { return }
        let now = remote.current()
        keys = Self.keys(now.keys, secret: config.secret)
        remoteVersion = now.version
        accepted.removeAll()
        refused.removeAll()
    }

    /// `mayWait` false: the request already waited for a fetch, so a missing key now refuses it.
    func check(_ field: ArraySlice<UInt8>?, nowMs: Int64, mayWait: Bool = true) -> Verdict {
        guard let field else { return .denied("this route needs a bearer token") }
        guard let token = authorizationCredentials(field, scheme: "bearer") else { return .denied("the Authorization field is not a Bearer token") }
        guard token.count <= config.maxTokenBytes else { return .denied("the token is longer than \(config.maxTokenBytes) bytes") }
        followRemoteKeys()
        // The signature's bytes (the token's end) differ between any two tokens: hashing the last
        // 32 and the length is enough for the table, and the full comparison below decides.
        let key = token.suffix(32).withUnsafeBytes { StableHash.hash($0) } &+ UInt64(token.count)
        if let hit = accepted[key], hit.untilMs > nowMs, hit.token.elementsEqualBytes(token) { return .allowed(hit.value) }
        if let hit = refused[key], hit.untilMs > nowMs, hit.token.elementsEqualBytes(token) { return .denied(hit.why) }
        var result = verify(token, nowS: Double(nowMs) / 1000)
        var looks = 0
        while case .failure(let why) = result, why.keyMissing, let remote {
            // Not cached: the next fetch may bring the key.
            switch remote.needKeys(nowMs: Int64(Platform.monotonicNanos() / 1_000_000), mayWait: mayWait, haveVersion: remoteVersion) {
            case .wait:
                return .waitForKeys
            case .lookAgain where looks < 2:
                // A fetch ended between this worker's look at the keys and now: check with the new ones.
                looks += 1
                followRemoteKeys()
                result = verify(token, nowS: Double(nowMs) / 1000)
            case .lookAgain, .refuse:
                // Why the fetch failed is in the proxy's log (the URL and the TLS or HTTP detail
                // are not the client's business).
                guard remoteVersion == 0 else { return .denied(why.message) }
                return .unavailable("the keys that check tokens here could not be fetched yet")
            }
        }
        switch result {
        case .failure(let why):
            makeRoom(in: &refused, max: Self.maxCached) { $0.untilMs > nowMs }
            refused[key] = (Array(token), nowMs + Self.refusedCacheS * 1000, why.message)
            return .denied(why.message)
        case .success(let (value, expiresS)):
            makeRoom(in: &accepted, max: Self.maxCached) { $0.untilMs > nowMs }
            let expiresMs = expiresS.map { $0 * 1000 < Double(Int64.max / 2) ? Int64($0 * 1000) : Int64.max } ?? Int64.max
            let until = min(nowMs + Self.cacheS * 1000, expiresMs)
            accepted[key] = (Array(token), until, value)
            return .allowed(value)
        }
    }

    private func verify(_ token: ArraySlice<UInt8>, nowS: Double) -> Result<(Accepted, Double?), Refusal> {
        func refused(_ why: String, keyMissing: Bool = false) -> Result<(Accepted, Double?), Refusal> {
            .failure(Refusal(message: why, keyMissing: keyMissing))
        }
        let dots = token.indices.filter { token[$0] == UInt8(ascii: ".") }
        guard dots.count == 2 else { return refused("the token is not a signed JWT (three base64url parts)") }
        let headerPart = token[token.startIndex..<dots[0]], payloadPart = token[(dots[0] + 1)..<dots[1]]
        let signaturePart = token[(dots[1] + 1)...]
        guard let headerBytes = Base64.decode(headerPart, url: true), let signature = Base64.decode(signaturePart, url: true),
              case .object(let header)? = try? JSONValue.parse(headerBytes) else {
            return refused("the token is malformed")
        }
        func string(_ members: [(String, JSONValue)], _ name: String) -> String? {
            if case .string(let s)? = members.first(where: { $0.0 == name })?.1 { return s }
            return nil
        }
        guard let algName = string(header, "alg"), let alg = SignatureKey.Algorithm(rawValue: algName), algorithms.contains(alg) else {
            return refused("the token's algorithm is not accepted here")
        }
        if header.contains(where: { $0.0 == "crit" }) { return refused("the token has critical header parameters this proxy does not know") }
        if let member = header.first(where: { $0.0 == "kid" })?.1, string(header, "kid") == nil, member != .null {
            return refused("the token's kid is not a string")
        }
        let kid = string(header, "kid")
        // The key the token names, if one has that kid; else (no kid, or one no key has) the keys
        // without a kid — at most 4 tried, never a key with another kid.
        let named = kid.map { k in keys.filter { $0.id == k && $0.algorithms.contains(alg) } } ?? []
        let candidates = !named.isEmpty ? named : Array(keys.filter { $0.id == nil && $0.algorithms.contains(alg) }.prefix(4))
        if candidates.isEmpty {
            return refused(kid.map { "the token names a key this route does not know (kid \(JSONText.quote($0)))" } ?? "no key of this route checks the token's algorithm",
                           keyMissing: true)
        }
        let signed = token[token.startIndex..<dots[1]]
        guard candidates.contains(where: { $0.verify(alg, data: signed, signature: signature) }) else {
            // A kid no key has, tried with the kid-less keys in vain: with keys from a URL, the
            // key may be new (a rotation), so it counts as missing (a fetch may bring it).
            return refused("the token's signature does not verify", keyMissing: named.isEmpty && kid != nil && remote != nil)
        }
        // Only a signed payload is read.
        guard let payloadBytes = Base64.decode(payloadPart, url: true), case .object(let claims)? = try? JSONValue.parse(payloadBytes) else {
            return refused("the token is malformed")
        }
        func number(_ name: String) -> Double?? {
            guard let value = claims.first(where: { $0.0 == name })?.1 else { return .some(nil) }
            if case .number(let text) = value, let n = Double(text) { return .some(n) }
            return nil  // present but not a number
        }
        let leeway = Double(config.leewayS)
        guard let exp = number("exp"), let nbf = number("nbf") else { return refused("the token's exp or nbf is not a number") }
        if let exp, nowS >= exp + leeway { return refused("the token has expired") }
        if let nbf, nowS + leeway < nbf { return refused("the token is not valid yet") }
        if let issuer = config.issuer, string(claims, "iss") != issuer { return refused("the token's issuer is not accepted here") }
        if !config.audiences.isEmpty {
            let aud: [String]
            switch claims.first(where: { $0.0 == "aud" })?.1 {
            case .string(let s)?: aud = [s]
            case .array(let items)?: aud = items.compactMap { if case .string(let s) = $0 { s } else { nil } }
            default: aud = []
            }
            if !aud.contains(where: config.audiences.contains) { return refused("the token is not meant for this audience") }
        }
        var fields: [UInt8] = []
        for forwarded in config.forwardClaims {
            guard let value = claims.first(where: { $0.0 == forwarded.claim })?.1, let text = Self.fieldValue(value) else { continue }
            fields += Array(forwarded.header.utf8) + Array(": ".utf8) + text + Array("\r\n".utf8)
        }
        var rateKey: UInt64 = 3  // the token lacks the claim: one shared bucket
        if let rateClaim, let value = claims.first(where: { $0.0 == rateClaim })?.1, let text = Self.fieldValue(value) {
            rateKey = text.withUnsafeBytes { StableHash.hash($0) }
        }
        return .success((Accepted(fields: fields, rateKey: rateKey), exp.flatMap { $0 }))
    }

    /// A claim as a field value: strings (bytes outside visible ASCII and space %-escaped, so a
    /// claim can never break the request head), numbers and booleans as written, lists of those
    /// joined with ", ". Objects: not forwarded.
    private static func fieldValue(_ value: JSONValue) -> [UInt8]? {
        switch value {
        case .string(let s):
            var out: [UInt8] = []
            for b in s.utf8 {
                if b >= 0x20 && b < 0x7F && b != UInt8(ascii: "%") { out.append(b); continue }
                let hex = Array("0123456789ABCDEF".utf8)
                out += [UInt8(ascii: "%"), hex[Int(b >> 4)], hex[Int(b & 15)]]
            }
            while out.first == 0x20 { out.removeFirst() }
            while out.last == 0x20 { out.removeLast() }
            return out
        case .number(let n): return Array(n.utf8)
        case .bool(let b): return Array((b ? "true" : "false").utf8)
        case .array(let items):
            let parts = items.compactMap { item -> [UInt8]? in if case .array = item { nil } else { fieldValue(item) } }
            return parts.isEmpty ? nil : Array(parts.joined(separator: Array(", ".utf8)))
        default: return nil
        }
    }
}

extension Array where Element == UInt8 {
    /// Byte-for-byte equality with `other` (`memcmp`, not an element-by-element loop).
    func elementsEqualBytes(_ other: ArraySlice<UInt8>) -> Bool {
        count == other.count && (isEmpty || withUnsafeBytes { a in other.withUnsafeBytes { b in memcmp(a.baseAddress!, b.baseAddress!, count) == 0 } })
    }
}

import Synchronization

/// Password checks under way in the whole process (every route and worker): they share libuv's
/// thread pool with host-name lookups, which must not starve behind a guessing flood.
private let checksInFlight = Atomic<Int>(0)

/// One route's `auth.basic` on one worker: checks `Authorization: Basic …` against the htpasswd
/// entries loaded with the config. Hashes (bcrypt, SHA-crypt) are slow by design, so a check runs
/// on libuv's thread pool (`BackgroundWork`) while the request waits, and a credential that
/// passed is remembered for `cacheMs` (by its exact bytes, at most `maxCached`), so a client's
/// later requests are decided at once.
///
/// At most `maxInFlight` checks run in the whole process (libuv's pool has 8 threads, see
/// `ProxyCommand`; the rest stay free for host-name lookups); past that, requests get 503 at once
/// rather than a queue a password-guessing flood could grow. A credential that failed is
/// remembered as failed for `failedCacheMs` (a client retrying a wrong password costs nothing).
/// The same credential arriving while it is being checked waits for that check. An unknown user
/// is checked against the costliest entry's hash, so the answer takes as long as for a known user
/// with a wrong password.
///
/// Threading: one worker's loop.
final class BasicAuthenticator {
    enum Verdict {
        case allowed
        /// 401: why, for the client.
        case denied(String)
        /// 503: too many checks under way.
        case busy
    }

    let config: AuthConfig.Basic
    /// `WWW-Authenticate`'s value.
    let challenge: String
    static let maxInFlight = 4
    static let maxCached = 4096
    static let cacheMs: UInt64 = 300_000
    static let failedCacheMs: UInt64 = 10_000
    /// Credentials checked lately: until when the verdict holds, and the verdict.
    private var verified: [[UInt8]: (untilMs: UInt64, ok: Bool)] = [:]
    private var waiting: [[UInt8]: [(Verdict) -> Void]] = [:]
    /// A real entry's hash, for unknown users.
    private let decoy: String

    init(_ config: AuthConfig.Basic) {
        self.config = config
        challenge = "Basic realm=\"\(config.realm)\", charset=\"UTF-8\""
        // The costliest entry: bcrypt's cost is in its hash ($2y$12$…); SHA-crypt and yescrypt are
        // taken as cheaper than any bcrypt cost ≥ 10.
        func cost(_ hash: String) -> Int {
            guard hash.hasPrefix("$2"), let c = Int(hash.split(separator: "$").dropFirst(1).first ?? "") else { return 9 }
            return c
        }
        decoy = config.users.values.max { cost($0) < cost($1) } ?? "$2y$05$invalidinvalidinvalidinvalidinvalidinvalidinvalidinval"
    }

    /// What `checkNow` found: a verdict, or a credential (`USER:PASSWORD`, decoded) to check.
    enum Decision {
        case decided(Verdict)
        case needsCheck([UInt8])
    }

    /// The verdict for the `Authorization` value `field` (nil: none sent) without a check on the
    /// pool (none sent, malformed, or remembered), or the credential to hand to `check`. No
    /// closure is made on this path.
    func checkNow(_ field: ArraySlice<UInt8>?, nowMs: UInt64) -> Decision {
        guard let field else { return .decided(.denied("this route needs a user name and password")) }
        guard let token = authorizationCredentials(field, scheme: "basic"), let decoded = Base64.decode(token),
              decoded.contains(UInt8(ascii: ":")) else {
            return .decided(.denied("the Authorization field is not Basic credentials (base64 of USER:PASSWORD)"))
        }
        if let known = verified[decoded], known.untilMs > nowMs {
            return .decided(known.ok ? .allowed : .denied("the user name or password is wrong"))
        }
        return .needsCheck(decoded)
    }

    /// Checks `decoded` (from `checkNow`) on the pool: nil while it runs (`resume` then gets the
    /// verdict later on `loop`, never before this returns), `.busy` when it cannot start.
    func check(_ decoded: [UInt8], loop: EventLoop, resume: @escaping (Verdict) -> Void) -> Verdict? {
        let colon = decoded.firstIndex(of: UInt8(ascii: ":"))!  // checkNow saw one
        if waiting[decoded] != nil {
            waiting[decoded]!.append(resume)
            return nil
        }
        guard checksInFlight.wrappingAdd(1, ordering: .relaxed).newValue <= Self.maxInFlight else {
            checksInFlight.wrappingSubtract(1, ordering: .relaxed)
            return .busy
        }
        let user = String(decoding: decoded[..<colon], as: UTF8.self)
        let password = Array(decoded[(colon + 1)...])
        let known = config.users[user]
        let hash = known ?? decoy
        let started = BackgroundWork.run(on: loop, { PasswordHash.verify(password, against: hash) && known != nil }) { [weak self] ok in
            self?.checked(decoded, ok: ok, nowMs: loop.now)
        }
        guard started else {
            checksInFlight.wrappingSubtract(1, ordering: .relaxed)
            return .busy
        }
        waiting[decoded] = [resume]
        return nil
    }

    private func checked(_ credential: [UInt8], ok: Bool, nowMs: UInt64) {
        checksInFlight.wrappingSubtract(1, ordering: .relaxed)
        let resumes = waiting.removeValue(forKey: credential) ?? []
        makeRoom(in: &verified, max: Self.maxCached) { $0.untilMs > nowMs }
        verified[credential] = (nowMs + (ok ? Self.cacheMs : Self.failedCacheMs), ok)
        let verdict: Verdict = ok ? .allowed : .denied("the user name or password is wrong")
        for resume in resumes { resume(verdict) }
    }
}

/// Base64 (RFC 4648): standard (§4, `Authorization: Basic`) or URL-safe (§5, JSON Web Tokens),
/// padding optional.
enum Base64 {
    static func decode(_ text: ArraySlice<UInt8>, url: Bool = false) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(text.count * 3 / 4)
        var buffer: UInt32 = 0, bits = 0
        var padding = 0
        for c in text {
            let v: UInt32
            switch c {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): v = UInt32(c - 65)
            case UInt8(ascii: "a")...UInt8(ascii: "z"): v = UInt32(c - 71)
            case UInt8(ascii: "0")...UInt8(ascii: "9"): v = UInt32(c) + 4
            case UInt8(ascii: "+") where !url: v = 62
            case UInt8(ascii: "/") where !url: v = 63
            case UInt8(ascii: "-") where url: v = 62
            case UInt8(ascii: "_") where url: v = 63
            case UInt8(ascii: "="): padding += 1; continue
            default: return nil
            }
            if padding > 0 { return nil }
            buffer = buffer << 6 | v
            bits += 6
            if bits >= 8 {
                bits -= 8
                out.append(UInt8(truncatingIfNeeded: buffer >> UInt32(bits)))
            }
        }
        guard padding <= 2, bits < 6 else { return nil }
        return out
    }
}

/// The credentials of an `Authorization` value for `scheme` (lowercase: `basic`, `bearer`): what
/// follows the scheme's name (matched case-insensitively) and a space, spaces and tabs around
/// trimmed; nil for another scheme or nothing after it.
func authorizationCredentials(_ field: ArraySlice<UInt8>, scheme: String) -> ArraySlice<UInt8>? {
    let name = Array(scheme.utf8)
    var rest = field.drop { $0 == 0x20 || $0 == 0x09 }
    guard rest.count > name.count + 1, rest.prefix(name.count).map({ $0 | 0x20 }) == name, rest[rest.startIndex + name.count] == 0x20 else { return nil }
    rest = rest.dropFirst(name.count + 1).drop { $0 == 0x20 }
    while let last = rest.last, last == 0x20 || last == 0x09 { rest = rest.dropLast() }
    return rest.isEmpty ? nil : rest
}

/// A bounded cache about to take one more entry: when it holds `max`, the entries `keep` rejects
/// (expired) go, and if that frees nothing, all of them.
func makeRoom<Key, Value>(in cache: inout [Key: Value], max: Int, keep: (Value) -> Bool) {
    guard cache.count >= max else { return }
    cache = cache.filter { keep($0.value) }
    if cache.count >= max { cache.removeAll(keepingCapacity: true) }
}

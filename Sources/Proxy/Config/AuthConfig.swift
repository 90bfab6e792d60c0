import Glibc

/// `"auth": {"basic": {"htpasswd": "users.htpasswd", "realm": "admin"}, "forward_credentials": false}`
/// on a route or in the top-level `policy`: who may use the route. Checked after `allow`/`deny`
/// and CORS preflights, before rate limits; a request without valid credentials gets 401 with
/// `WWW-Authenticate`. `"auth": false` on a route turns an inherited one off.
public struct AuthConfig: Sendable, Equatable {
    /// HTTP Basic against an htpasswd file.
    public struct Basic: Sendable, Equatable {
        /// The file (relative paths: to the config file's directory), read when the config is
        /// loaded (and on every reload).
        public var htpasswd = ""
        public var realm = "restricted"
        /// The file's entries: user → hash (bcrypt or SHA-crypt).
        public var users: [String: String] = [:]
    }

    /// Bearer JSON Web Tokens (RFC 7519) signed with a key of a JWKS (a file, or a URL the
    /// proxy fetches) or a shared secret.
    public struct JWT: Sendable, Equatable {
        /// The keys of a JWKS file (read at load and reload); empty with `remote`.
        public var keys: [JWK] = []
        /// A JWKS fetched over HTTPS and kept fresh by the supervisor (`RemoteKeySet`); nil: none.
        public var remote: JWKSSource?
        /// `secret_file`: the HS256 key (its bytes as they are in the file, a final newline
        /// dropped); nil: none.
        public var secret: [UInt8]?
        /// Algorithms accepted (default: every one the keys can check; never `none`).
        public var algorithms: [String] = []
        /// `iss` must equal this (nil: not checked).
        public var issuer: String?
        /// `aud` must name one of these (empty: not checked).
        public var audiences: [String] = []
        /// Clock skew allowed on `exp` and `nbf`.
        public var leewayS = 30
        /// Claims sent to the backend as request fields (client-sent copies removed).
        public var forwardClaims: [ForwardedClaim] = []
        /// Tokens longer than this are refused unread.
        public var maxTokenBytes = 8192
    }

    /// `"jwks": "https://id.example/.well-known/jwks.json"` or the object form
    /// `{"url": …, "refresh_s": 300, "min_refetch_s": 30, "timeout_ms": 5000, "ca": "ca.pem",
    /// "max_bytes": 1048576}`: where the keys come from and how they are kept fresh.
    public struct JWKSSource: Sendable, Hashable {
        /// As written, for messages and `--check`.
        public var url = ""
        public var host = ""
        public var port: UInt16 = 443
        /// The request target: the URL's path and query (`/` when it has none).
        public var target = "/"
        /// false only for `http://` to a loopback host (keys for a local identity provider).
        public var tls = true
        /// CA certificates (PEM) the server's certificate must chain to; nil: the system's store.
        public var ca: String?
        /// The keys are fetched again this often (and at once, at most every `minRefetchS`,
        /// when a token names a `kid` they lack).
        public var refreshS = 300
        public var minRefetchS = 30
        /// One fetch, from connecting to the last byte, must take no longer.
        public var timeoutMs = 5000
        /// A larger document is refused (and the keys held so far kept).
        public var maxBytes = 1 << 20
        /// A document with more usable keys is refused: every token is checked against the list,
        /// and each worker builds every key.
        public var maxKeys = 64
    }

    public struct ForwardedClaim: Sendable, Equatable {
        public var claim: String
        public var header: String
    }

    /// One key of a JWKS (RFC 7517): its members, base64url-decoded.
    public struct JWK: Sendable, Equatable {
        public var kid: String?
        public var kty: String
        public var crv: String?
        public var alg: String?
        public var n: [UInt8] = []
        public var e: [UInt8] = []
        public var x: [UInt8] = []
        public var y: [UInt8] = []
    }

    public var basic: Basic?
    public var jwt: JWT?
    /// Send the client's `Authorization` field on to the backend (default: removed).
    public var forwardCredentials = false

    public init() {}

    /// No scheme: the route is open (a route's `"auth": false`).
    public var isOff: Bool { basic == nil && jwt == nil }
}

extension AuthConfig.JWT {
    /// Every algorithm a JWKS key can check (not HS256, which needs `secret_file`).
    static let publicKeyAlgorithms = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"]

    /// The algorithms each key type checks.
    static func algorithms(for key: AuthConfig.JWK) -> [String] {
        let all: [String]
        switch (key.kty, key.crv) {
        case ("RSA", _): all = ["RS256", "RS384", "RS512", "PS256"]
        case ("EC", "P-256"): all = ["ES256"]
        case ("EC", "P-384"): all = ["ES384"]
        case ("OKP", "Ed25519"): all = ["EdDSA"]
        default: all = []
        }
        return key.alg.map { all.contains($0) ? [$0] : [] } ?? all
    }

    /// Reads a JWKS file: `{"keys": [{"kty": "RSA", "kid": "…", "n": "…", "e": "…"}, …]}`. Keys
    /// of other types, private keys' extra members and `use: "enc"` keys are skipped; no usable
    /// key is an error.
    static func loadJWKS(_ path: String) -> Result<[AuthConfig.JWK], AddressError> {
        switch AuthConfig.readSmallFile(path) {
        case .success(let bytes): return parseJWKS(bytes, from: path).map(\.keys)
        case .failure(let e): return .failure(e)
        }
    }

    /// The usable keys of a JWKS document; `path` (a file name or URL) names it in errors.
    /// A key the crypto library refuses is an error — or, with `skippingBadKeys` (a fetched
    /// JWKS: one bad key must not stop a rotation), left out and described in `skipped`.
    static func parseJWKS(_ bytes: [UInt8], from path: String, skippingBadKeys: Bool = false)
        -> Result<(keys: [AuthConfig.JWK], skipped: [String]), AddressError> {
        var skipped: [String] = []
        guard let document = try? JSONValue.parse(bytes), case .object(let members) = document,
              case .array(let list)? = members.first(where: { $0.0 == "keys" })?.1 else {
            return .failure(AddressError(message: "\(path) is not a JWKS (expected {\"keys\": [...]})"))
        }
        var keys: [AuthConfig.JWK] = []
        for item in list {
            guard case .object(let m) = item else { continue }
            func string(_ name: String) -> String? {
                if case .string(let s)? = m.first(where: { $0.0 == name })?.1 { return s }
                return nil
            }
            func bytes(_ name: String) -> [UInt8]? { string(name).flatMap { Base64.decode(Array($0.utf8)[...], url: true) } }
            guard let kty = string("kty"), string("use") != "enc" else { continue }
            var key = AuthConfig.JWK(kid: string("kid"), kty: kty, crv: string("crv"), alg: string("alg"))
            switch kty {
            case "RSA":
                guard let n = bytes("n"), let e = bytes("e") else { continue }
                (key.n, key.e) = (n, e)
            case "EC":
                guard let x = bytes("x"), let y = bytes("y") else { continue }
                (key.x, key.y) = (x, y)
            case "OKP":
                guard let x = bytes("x") else { continue }
                key.x = x
            default:
                continue
            }
            guard !algorithms(for: key).isEmpty else { continue }
            // Built once here, so a key the crypto library refuses (RSA under 2048 bits, a point
            // off its curve) is reported now rather than refusing every token later.
            guard SignatureKey.make(key) != nil else {
                let name = "key \(key.kid.map { JSONText.quote(String($0.prefix(64))) } ?? "without kid") (\(kty))"
                if skippingBadKeys { skipped.append(name); continue }
                return .failure(AddressError(message: "\(path): \(name) is not a valid public key (RSA needs 2048 to 16384 bits; EC points must lie on their curve)"))
            }
            keys.append(key)
        }
        if keys.isEmpty {
            return .failure(AddressError(message: "\(path) holds no key this proxy can check (RSA, EC P-256/P-384, Ed25519)"
                + (skipped.isEmpty ? "" : "; not valid public keys: " + skipped.joined(separator: ", "))))
        }
        return .success((keys, skipped))
    }
}

extension AuthConfig.Basic {
    /// Most bytes read from an htpasswd file.
    static let maxFileBytes = 16 << 20

    /// Reads and checks `path`: `user:hash` lines (blank lines and `#` comments skipped). A
    /// hash this proxy cannot check (MD5 `$apr1$`, `{SHA}`, DES crypt, plain text) is an error
    /// naming the line, so a file made with the wrong `htpasswd` option fails at load rather
    /// than refusing everyone at run time.
    static func load(_ path: String) -> Result<[String: String], AddressError> {
        let bytes: [UInt8]
        switch AuthConfig.readSmallFile(path, maxBytes: maxFileBytes) {
        case .success(let b): bytes = b
        case .failure(let e): return .failure(e)
        }
        var users: [String: String] = [:]
        for (number, raw) in bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).enumerated() {
            var line = String(decoding: raw, as: UTF8.self)
            if line.hasSuffix("\r") { line.removeLast() }
            if line.allSatisfy({ $0 == " " || $0 == "\t" }) || line.hasPrefix("#") { continue }
            let place = "\(path):\(number + 1)"
            guard let colon = line.firstIndex(of: ":"), colon != line.startIndex else {
                return .failure(AddressError(message: "\(place): expected USER:HASH"))
            }
            let user = String(line[..<colon])
            // Extra fields after the hash (some tools add a comment): ignored.
            let hash = String(line[line.index(after: colon)...].prefix { $0 != ":" })
            guard PasswordHash.isSupported(hash) else {
                let kind = hash.hasPrefix("$apr1$") ? "MD5 ($apr1$, htpasswd's default)"
                    : hash.hasPrefix("{SHA}") ? "SHA-1 ({SHA})" : hash.hasPrefix("$y$") ? "yescrypt (its memory cost is the file's to set)"
                    : hash.hasPrefix("$2") || hash.hasPrefix("$5$") || hash.hasPrefix("$6$") ? "malformed or too costly (bcrypt cost above 16, SHA-crypt over 1,000,000 rounds)"
                    : "not bcrypt or SHA-crypt"
                return .failure(AddressError(message: "\(place): user \(JSONText.quote(user)): the hash is \(kind), which this proxy does not accept; make the entry with `htpasswd -B` (bcrypt)"))
            }
            if users[user] != nil { return .failure(AddressError(message: "\(place): user \(JSONText.quote(user)) is listed twice")) }
            users[user] = hash
        }
        if users.isEmpty { return .failure(AddressError(message: "\(path) lists no users")) }
        return .success(users)
    }
}

extension AuthConfig {
    /// A file the config names (htpasswd, JWKS, secret), whole: read when the config is loaded
    /// (the supervisor's thread, never a worker loop), at most `maxBytes`.
    static func readSmallFile(_ path: String, maxBytes: Int = 1 << 20) -> Result<[UInt8], AddressError> {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            return .failure(AddressError(message: "cannot read \(path): \(String(cString: strerror(errno)))"))
        }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 { return .failure(AddressError(message: "cannot read \(path): \(String(cString: strerror(errno)))")) }
            if n == 0 { break }
            bytes += chunk[0..<n]
            if bytes.count > maxBytes { return .failure(AddressError(message: "\(path) is larger than \(maxBytes >> 20) MiB")) }
        }
        return .success(bytes)
    }
}

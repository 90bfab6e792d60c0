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
        /// The file's entries: user → hash (bcrypt, SHA-crypt or yescrypt).
        public var users: [String: String] = [:]
    }

    public var basic: Basic?
    /// Send the client's `Authorization` field on to the backend (default: removed).
    public var forwardCredentials = false

    public init() {}

    /// No scheme: the route is open (a route's `"auth": false`).
    public var isOff: Bool { basic == nil }
}

extension AuthConfig.Basic {
    /// Most bytes read from an htpasswd file.
    static let maxFileBytes = 16 << 20

    /// Reads and checks `path`: `user:hash` lines (blank lines and `#` comments skipped). A
    /// hash this proxy cannot check (MD5 `$apr1$`, `{SHA}`, DES crypt, plain text) is an error
    /// naming the line, so a file made with the wrong `htpasswd` option fails at load rather
    /// than refusing everyone at run time.
    static func load(_ path: String) -> Result<[String: String], AddressError> {
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
            if bytes.count > maxFileBytes { return .failure(AddressError(message: "\(path) is larger than 16 MiB")) }
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
                    : hash.hasPrefix("{SHA}") ? "SHA-1 ({SHA})" : "not bcrypt, SHA-crypt or yescrypt"
                return .failure(AddressError(message: "\(place): user \(JSONText.quote(user)): the hash is \(kind), which this proxy does not accept; make the entry with `htpasswd -B` (bcrypt)"))
            }
            if users[user] != nil { return .failure(AddressError(message: "\(place): user \(JSONText.quote(user)) is listed twice")) }
            users[user] = hash
        }
        if users.isEmpty { return .failure(AddressError(message: "\(path) lists no users")) }
        return .success(users)
    }
}

import CTLS
import Glibc

/// The per-user CA behind `"tls": "local"` and `--https`: made on first use in the data
/// directory (`$PROXY_DATA_DIR`, else `$XDG_DATA_HOME/swift-proxy`, else
/// `~/.local/share/swift-proxy`; the directory `0700`, the key `0600`), then reused, so a
/// browser that trusts it once (`proxy trust`) keeps trusting every leaf the proxy issues.
///
/// Threading: called from the supervisor's thread (start, reload) and the command line.
public enum LocalCertificateAuthority {
    public static let certificateFile = "local-ca.pem"
    public static let keyFile = "local-ca.key"
    /// The root lives ten years (as Caddy's does); leaves a week, reissued automatically.
    static let rootDays = 3650
    static let leafDays = 7

    /// Where the CA is kept, from the environment.
    public static func directory(environment: [String: String] = currentEnvironment()) -> String {
        if let dir = environment["PROXY_DATA_DIR"], !dir.isEmpty { return dir }
        if let xdg = environment["XDG_DATA_HOME"], xdg.hasPrefix("/") { return xdg + "/swift-proxy" }
        return (environment["HOME"] ?? "/root") + "/.local/share/swift-proxy"
    }

    /// The CA's certificate and key files in `directory`, made now when absent (`created`).
    public static func ensure(in directory: String) throws(TLSSetupError) -> (cert: String, key: String, created: Bool) {
        let cert = directory + "/" + certificateFile, key = directory + "/" + keyFile
        if access(cert, R_OK) == 0 && access(key, R_OK) == 0 { return (cert, key, false) }
        try makeDirectories(directory)
        var err = [CChar](repeating: 0, count: 512)
        var host = [CChar](repeating: 0, count: 256)
        gethostname(&host, host.count - 1)
        let user = currentEnvironment()["USER"] ?? "user"
        let name = "swift-proxy local CA (\(user)@\(String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)))"
        guard ctls_local_ca_create(cert, key, name, Int32(rootDays), &err, err.count) == 0 else {
            throw TLSSetupError(message: String(decoding: err.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        return (cert, key, true)
    }

    /// `mkdir -p` with mode 0700 for what it creates.
    private static func makeDirectories(_ path: String) throws(TLSSetupError) {
        var built = path.hasPrefix("/") ? "" : "."
        for part in path.split(separator: "/") {
            built += "/" + part
            if mkdir(built, 0o700) != 0 && errno != EEXIST {
                throw TLSSetupError(message: "\(built): cannot create the directory for the local CA: \(String(cString: strerror(errno)))")
            }
        }
    }

    /// The process environment as a dictionary.
    public static func currentEnvironment() -> [String: String] {
        var result: [String: String] = [:]
        var p = environ
        while let entry = p.pointee {
            let text = String(cString: entry)
            if let eq = text.firstIndex(of: "=") { result[String(text[..<eq])] = String(text[text.index(after: eq)...]) }
            p += 1
        }
        return result
    }
}

extension TLSContext {
    /// A server context whose certificates the local CA in `directory` issues per SNI name
    /// (`names` get their own leaves, as does anything under `.localhost`).
    public convenience init(localCAIn directory: String, names: [String], minVersion: String = "1.2", alpn: [String] = ["http/1.1"],
                            ticketLifetimeS: Int = 7200) throws(TLSSetupError) {
        let ca = try LocalCertificateAuthority.ensure(in: directory)
        let wire = Self.alpnWire(alpn)
        var err = [CChar](repeating: 0, count: 512)
        let made: OpaquePointer? = withCStrings(names) { list in
            wire.withUnsafeBufferPointer { a in
                ctls_local_server_context_new(ca.cert, ca.key, list, Int32(names.count), Int32(LocalCertificateAuthority.leafDays),
                                              minVersion == "1.3" ? 13 : 12, a.baseAddress, a.count, ticketLifetimeS, &err, err.count)
            }
        }
        guard let made else { throw TLSSetupError(message: String(decoding: err.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)) }
        self.init(adopting: made, isServer: true)
    }
}

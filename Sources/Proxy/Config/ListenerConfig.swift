/// One address the proxy accepts clients on, and what it speaks there: cleartext HTTP (optionally
/// redirecting everything to HTTPS) or TLS.
public struct ListenerConfig: Sendable, Equatable {
    public var address: ListenAddress
    /// TLS on this listener; nil for cleartext.
    public var tls: ListenerTLSConfig?
    /// A cleartext listener answers every request (but the health endpoint) with a `308` to the
    /// same target on the first TLS listener.
    public var redirectToHTTPS: Bool
    /// `proxy_protocol`: every connection must start with a PROXY protocol header (v1 or v2, from
    /// a load balancer in front), whose source address is the client from then on; connections
    /// without one are closed.
    public var proxyProtocol: Bool

    public init(address: ListenAddress, tls: ListenerTLSConfig? = nil, redirectToHTTPS: Bool = false, proxyProtocol: Bool = false) {
        self.address = address
        self.tls = tls
        self.redirectToHTTPS = redirectToHTTPS
        self.proxyProtocol = proxyProtocol
    }
}

/// A certificate chain file (PEM, leaf first) and its private key (PEM, RSA or ECDSA).
public struct CertificateFiles: Sendable, Equatable {
    public var cert: String
    public var key: String

    public init(cert: String, key: String) {
        self.cert = cert
        self.key = key
    }
}

/// A TLS listener's settings (`listen[].tls`).
public struct ListenerTLSConfig: Sendable, Equatable {
    /// Chosen by the client's SNI: exact name, then wildcard; else the first. Paths are relative
    /// to the config file's directory.
    public var certificates: [CertificateFiles]
    /// `"1.2"` (TLS 1.2 and 1.3) or `"1.3"`.
    public var minVersion: String
    /// ALPN protocols offered, most preferred first (default `["h2", "http/1.1"]`).
    public var alpn: [String]
    /// The `Strict-Transport-Security` value added to responses over this listener; nil: none.
    public var hsts: String?
    /// A client that has not finished its handshake by then is closed.
    public var handshakeTimeoutMs: Int
    /// `"tls": "local"`: certificates from the per-user local CA (`LocalCertificateAuthority`),
    /// issued per SNI name; `certificates` is empty then.
    public var isLocal = false

    /// `"tls": "local"`.
    public static var local: ListenerTLSConfig {
        var tls = ListenerTLSConfig(certificates: [])
        tls.isLocal = true
        return tls
    }

    public init(certificates: [CertificateFiles], minVersion: String = "1.2", alpn: [String] = ["h2", "http/1.1"],
                hsts: String? = nil, handshakeTimeoutMs: Int = 10000) {
        self.certificates = certificates
        self.minVersion = minVersion
        self.alpn = alpn
        self.hsts = hsts
        self.handshakeTimeoutMs = handshakeTimeoutMs
    }

    /// The protocols this proxy can speak after a TLS handshake.
    static let supportedALPN = ["h2", "http/1.1"]
}

extension ProxyConfig {
    /// The first listener's address: what `--listen` replaces, and where the start line says the
    /// proxy listens.
    public var listen: ListenAddress {
        get { listeners[0].address }
        set { listeners[0].address = newValue }
    }

    /// The port HTTPS redirects point at: the first TLS listener's.
    var firstTLSListener: Int? { listeners.firstIndex { $0.tls != nil } }

    /// The host names the routes name exactly: a local-CA listener issues each its own leaf.
    public var routeHostNames: [String] {
        var names: [String] = []
        for route in routes {
            if case .exact(let name) = route.host, !names.contains(name) { names.append(name) }
        }
        return names
    }
}

// MARK: - Decoding

/// The `listen` member: a string (one cleartext listener, as before) or a list whose entries are
/// strings or objects (`ListenerEntry`).
struct ListenerEntry: ConfigSection {
    var address: ListenAddress?
    var tls: ListenerTLSConfig?
    var redirectToHTTPS = false
    var proxyProtocol = false

    static var defaults: ListenerEntry { ListenerEntry() }
    static let objectExample = "{\"address\": \":8443\", \"tls\": \(ListenerTLSConfig.example)}"

    static var fields: [ConfigField<ListenerEntry>] {
        [
            ConfigField(key: "address", example: "\":8443\"") { entry, value, at throws(ConfigError) in
                entry.address = try address(value, at: at)
            },
            ConfigField(key: "tls", example: ListenerTLSConfig.example) { entry, value, at throws(ConfigError) in
                if case .string(let word) = value {
                    guard word == "local" else {
                        throw at.error("expected \"local\" (certificates from the proxy's local development CA) or an object like "
                            + "\(ListenerTLSConfig.example), got \(JSONValue.quoted(word))")
                    }
                    entry.tls = .local
                    return
                }
                let tls = try ListenerTLSConfig.decode(value, at: at)
                guard !tls.certificates.isEmpty else {
                    throw at.member("certificates", example: "[\(CertificateEntry.example)]")
                        .error("missing; a TLS listener needs at least one certificate")
                }
                entry.tls = tls
            },
            ConfigField(key: "redirect_to_https", example: "true") { entry, value, at throws(ConfigError) in
                guard case .bool(let on) = value else { throw at.error("expected true or false") }
                entry.redirectToHTTPS = on
            },
            ConfigField(key: "proxy_protocol", example: "true") { entry, value, at throws(ConfigError) in
                guard case .bool(let on) = value else { throw at.error("expected true (connections start with a PROXY protocol header, v1 or v2) or false") }
                entry.proxyProtocol = on
            },
        ]
    }

    static func decodeList(_ value: JSONValue, at location: ConfigLocation) throws(ConfigError) -> [ListenerConfig] {
        guard case .array(let elements) = value else {
            if case .string = value { return [ListenerConfig(address: try address(value, at: location))] }
            do throws(ConfigError) {
                _ = try location.string(value)  // throws: the usual "expected a string, got …"
                return []
            } catch {
                var error = error
                error.problem += "; or a list of listeners like [\":8080\", \(objectExample)]"
                throw error
            }
        }
        guard !elements.isEmpty else { throw location.error("at least one listener is required") }
        var listeners: [ListenerConfig] = []
        for (index, element) in elements.enumerated() {
            let at = location.element(index, example: objectExample)
            let listener: ListenerConfig
            if case .string = element {
                listener = ListenerConfig(address: try address(element, at: at))
            } else {
                let entry = try decode(element, at: at)
                guard let address = entry.address else {
                    throw at.member("address", example: "\":8443\"").error("missing; every listener needs its address")
                }
                if entry.redirectToHTTPS && entry.tls != nil {
                    throw at.member("redirect_to_https", example: "true")
                        .error("a TLS listener cannot redirect to HTTPS; set it on a cleartext listener")
                }
                listener = ListenerConfig(address: address, tls: entry.tls, redirectToHTTPS: entry.redirectToHTTPS,
                                          proxyProtocol: entry.proxyProtocol)
            }
            if listener.address.port != 0, let clash = listeners.firstIndex(where: { $0.address == listener.address }) {
                throw at.member("address", example: "\":8443\"")
                    .error("\(JSONValue.quoted(listener.address.description)) is already listen[\(clash)]")
            }
            listeners.append(listener)
        }
        if let redirecting = listeners.firstIndex(where: \.redirectToHTTPS), !listeners.contains(where: { $0.tls != nil }) {
            throw location.element(redirecting, example: objectExample).member("redirect_to_https", example: "true")
                .error("there is no TLS listener to redirect to; add one with a \"tls\" object")
        }
        return listeners
    }

    private static func address(_ value: JSONValue, at: ConfigLocation) throws(ConfigError) -> ListenAddress {
        let text = try at.string(value)
        do throws(AddressSyntaxError) {
            return try ListenAddress.parseExplained(text)
        } catch {
            throw at.error("expected \(ListenAddress.expectedForms), got \(JSONValue.quoted(text)): \(error.problem)")
        }
    }
}

extension ListenerTLSConfig: ConfigSection {
    static var defaults: ListenerTLSConfig { ListenerTLSConfig(certificates: []) }

    static var fields: [ConfigField<ListenerTLSConfig>] {
        [
            ConfigField(key: "certificates", example: "[\(CertificateEntry.example)]") { tls, value, at throws(ConfigError) in
                guard case .array(let items) = value, !items.isEmpty else {
                    throw at.error("expected a non-empty list like [\(CertificateEntry.example)]")
                }
                tls.certificates = []
                for (i, item) in items.enumerated() {
                    tls.certificates.append(try CertificateEntry.files(item, at: at.element(i, example: CertificateEntry.example)))
                }
            },
            ConfigField(key: "min_version", example: "\"1.2\"") { tls, value, at throws(ConfigError) in
                let text = try at.string(value)
                guard text == "1.2" || text == "1.3" else {
                    throw at.error("expected \"1.2\" (TLS 1.2 and 1.3) or \"1.3\" (TLS 1.3 only), got \(JSONValue.quoted(text)); older versions are not offered")
                }
                tls.minVersion = text
            },
            ConfigField(key: "alpn", example: "[\"h2\", \"http/1.1\"]") { tls, value, at throws(ConfigError) in
                guard case .array(let items) = value, !items.isEmpty else { throw at.error("expected a non-empty list such as [\"h2\", \"http/1.1\"]") }
                var names: [String] = []
                for (i, item) in items.enumerated() {
                    let itemAt = at.element(i, example: "\"http/1.1\"")
                    let name = try itemAt.string(item)
                    guard supportedALPN.contains(name) else {
                        throw itemAt.error("\(JSONValue.quoted(name)) is not a protocol this proxy speaks; it offers "
                            + supportedALPN.map { JSONValue.quoted($0) }.joined(separator: ", "))
                    }
                    names.append(name)
                }
                tls.alpn = names
            },
            ConfigField(key: "hsts", example: "\"max-age=31536000\"") { tls, value, at throws(ConfigError) in
                if case .null = value { tls.hsts = nil; return }
                let text = try at.string(value)
                guard text.lowercased().hasPrefix("max-age="), text.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) else {
                    throw at.error("expected a Strict-Transport-Security value starting with \"max-age=\", got \(JSONValue.quoted(text))")
                }
                tls.hsts = text
            },
            .integer("handshake_timeout_ms", \.handshakeTimeoutMs, 1...3_600_000),
        ]
    }

    static var example: String { "{\"certificates\": [\(CertificateEntry.example)]}" }
}

/// One element of `tls.certificates`: both files required; relative paths are relative to the
/// config file's directory (as nginx and Caddy resolve theirs against their configuration).
struct CertificateEntry: ConfigSection {
    var cert: String?
    var key: String?

    static var defaults: CertificateEntry { CertificateEntry() }
    static let example = "{\"cert\": \"certs/site.pem\", \"key\": \"certs/site.key\"}"

    static var fields: [ConfigField<CertificateEntry>] {
        [
            ConfigField(key: "cert", example: "\"certs/site.pem\"") { entry, value, at throws(ConfigError) in
                entry.cert = try at.string(value)
            },
            ConfigField(key: "key", example: "\"certs/site.key\"") { entry, value, at throws(ConfigError) in
                entry.key = try at.string(value)
            },
        ]
    }

    static func files(_ value: JSONValue, at location: ConfigLocation) throws(ConfigError) -> CertificateFiles {
        let entry = try decode(value, at: location)
        guard let cert = entry.cert, !cert.isEmpty else {
            throw location.member("cert", example: "\"certs/site.pem\"").error("missing; the certificate chain file (PEM)")
        }
        guard let key = entry.key, !key.isEmpty else {
            throw location.member("key", example: "\"certs/site.key\"").error("missing; the private key file (PEM)")
        }
        return CertificateFiles(cert: resolve(cert, against: location.file), key: resolve(key, against: location.file))
    }

    /// A relative path is relative to the directory of the config file that names it.
    static func resolve(_ path: String, against configFile: String) -> String {
        guard !path.hasPrefix("/"), let slash = configFile.lastIndex(of: "/") else { return path }
        return String(configFile[...slash]) + path
    }
}

/// Backends that are the proxy's own listener: every request sent to one would come straight
/// back (`--to /api=http://localhost:8080 --listen :8080` with no API running). Found from the
/// configuration alone, before anything is resolved or bound, so `--check` says it too.
///
/// A backend counts when its port is the listen port and its host is a loopback or wildcard
/// address or name, or the listen host itself, while the listener accepts there (it listens on
/// every interface, or on that same host). Other addresses of this machine are left to the
/// run-time check: the proxy answers 508 when a request comes back with its own `Via`.
public enum SelfForwarding {
    public static func backendsPointingAtTheListener(_ config: ProxyConfig) -> [BackendConfig] {
        let listen = config.listen
        guard listen.port != 0 else { return [] }
        let listenHost = listen.host.lowercased()
        let listensEverywhere = listenHost == ListenAddress.allInterfaces || listenHost == "::" || listenHost.isEmpty
        return config.allBackends.filter { b in
            guard b.port == listen.port else { return false }
            let host = b.host.lowercased()
            if host == listenHost { return true }
            return isLocal(host) && (listensEverywhere || isLocal(listenHost))
        }
    }

    /// A clear error for `backendsPointingAtTheListener`'s result, or nil when it is empty.
    public static func problem(_ config: ProxyConfig) -> String? {
        let loops = backendsPointingAtTheListener(config)
        guard !loops.isEmpty else { return nil }
        let names = loops.map { "\($0.id) (\($0.url))" }.joined(separator: ", ")
        return "backend \(names) is this proxy's own listen address \(config.listen): every request would be "
            + "forwarded back to the proxy. Point it at the real server's port, or listen on another one (--listen :3000)"
    }

    private static func isLocal(_ host: String) -> Bool {
        host == "localhost" || host.hasSuffix(".localhost") || host.hasPrefix("127.") || host == "::1"
            || host == "0.0.0.0" || host == "::"
    }
}

/// What a reload changes, for the one log line it writes and to decide what to restart.
struct ConfigChanges {
    var added: [BackendConfig] = []
    var removed: [BackendConfig] = []
    var reordered = false
    /// Names of the other settings that differ, in config-file vocabulary.
    var settings: [String] = []
    /// Listeners whose address changed, by index in `listeners` (the list's length is kept by
    /// the supervisor).
    var moved: [(index: Int, from: ListenAddress, to: ListenAddress)] = []
    /// TLS listeners' certificates were read again (a reload always does).
    var certificatesReloaded = false

    init(from old: ProxyConfig, oldBackends: [SharedBackend], to new: ProxyConfig, newBackends: [SharedBackend]) {
        // Once per configured backend, however many endpoints (addresses) it has.
        func unique(_ configs: [BackendConfig]) -> [BackendConfig] {
            var seen: [BackendConfig] = []
            for c in configs where !seen.contains(c) { seen.append(c) }
            return seen
        }
        added = unique(newBackends.filter { b in !oldBackends.contains { $0 === b } }.map(\.config))
        removed = unique(oldBackends.filter { b in !newBackends.contains { $0 === b } }.map(\.config))
        reordered = added.isEmpty && removed.isEmpty && !zip(oldBackends, newBackends).allSatisfy { $0 === $1 }
        for (i, (a, b)) in zip(old.listeners, new.listeners).enumerated() where a.address != b.address {
            moved.append((i, a.address, b.address))
        }
        let settingsOf = { (l: ListenerConfig) in
            ListenerConfig(address: ListenAddress(host: "", port: 0), tls: l.tls, redirectToHTTPS: l.redirectToHTTPS, proxyProtocol: l.proxyProtocol)
        }
        if old.listeners.map(settingsOf) != new.listeners.map(settingsOf) { settings.append("listen") }
        certificatesReloaded = new.listeners.contains { $0.tls != nil }
        if old.healthCheck != new.healthCheck { settings.append("health_check") }
        if old.routes != new.routes { settings.append("routes") }
        if old.pathNormalization != new.pathNormalization { settings.append("path_normalization") }
        if old.allUpstreams != new.allUpstreams && !(old.upstreams.isEmpty && new.upstreams.isEmpty) {
            settings.append("upstreams")  // names, members or health checks of the pools
        }
        if old.balance != new.balance && !new.backends.isEmpty { settings.append("balance") }
        // Weights are not part of a backend's identity (changing one keeps its pool and health).
        if old.allBackends.count == new.allBackends.count && added.isEmpty && removed.isEmpty
            && old.allBackends.map(\.weight) != new.allBackends.map(\.weight) && !settings.contains("upstreams") { settings.append("weight") }
        if old.timeouts != new.timeouts { settings.append("timeouts") }
        if old.limits != new.limits { settings.append("limits") }
        if old.pool != new.pool { settings.append("pool") }
        if old.shutdownGraceMs != new.shutdownGraceMs { settings.append("shutdown_grace_ms") }
        if old.accessLog != new.accessLog { settings.append("access_log") }
        if old.admin != new.admin { settings.append("admin") }
        if old.tlsTicketKeyRotationS != new.tlsTicketKeyRotationS { settings.append("tls_ticket_key_rotation_s") }
        if old.resolver != new.resolver { settings.append("resolver") }
        if old.policy != new.policy { settings.append("policy") }
        if old.trustedProxies != new.trustedProxies { settings.append("trusted_proxies") }
        if old.redis != new.redis { settings.append("redis") }
        if old.http2 != new.http2 { settings.append("http2") }
        // The health probes send the header too: they start over with the new setting.
        if old.allUpstreams.map(\.balance.sendProxyProtocol) != new.allUpstreams.map(\.balance.sendProxyProtocol) {
            settings.append("send_proxy_protocol")
        }
        if old.backendTLS != new.backendTLS && settings.isEmpty && added.isEmpty && removed.isEmpty { settings.append("backend_tls") }
        // Anything else that differs (a key added later and not named above) still makes the
        // reload apply rather than read as "no changes".
        if settings.isEmpty && added.isEmpty && removed.isEmpty && !reordered && moved.isEmpty && old != new {
            settings.append("settings")
        }
    }

    var isEmpty: Bool { added.isEmpty && removed.isEmpty && !reordered && settings.isEmpty && moved.isEmpty && !certificatesReloaded }

    /// The health checker restarts (and probes at once) when what it probes or how changed.
    var affectsHealthChecks: Bool {
        !added.isEmpty || !removed.isEmpty || reordered || settings.contains("health_check") || settings.contains("upstreams")
            || settings.contains("send_proxy_protocol")
    }

    /// `backends added b3 (http://…); removed b1 (http://…); listen :8080 -> :9090; changed timeouts, limits`
    var summary: String {
        func list(_ bs: [BackendConfig]) -> String { bs.map { "\($0.id) (\($0.url))" }.joined(separator: ", ") }
        var parts: [String] = []
        if !added.isEmpty { parts.append("backends added \(list(added))") }
        if !removed.isEmpty { parts.append("backends removed \(list(removed))") }
        if reordered { parts.append("backends reordered") }
        for m in moved { parts.append(m.index == 0 ? "listen \(m.from) -> \(m.to)" : "listen[\(m.index)] \(m.from) -> \(m.to)") }
        if !settings.isEmpty { parts.append("changed \(settings.joined(separator: ", "))") }
        if certificatesReloaded { parts.append("certificates reloaded") }
        return parts.isEmpty ? "no changes" : parts.joined(separator: "; ")
    }
}

import Glibc

/// The process's control loop, on the main thread: it opens the listening sockets, starts one
/// `Worker` thread per loop, runs the single `HealthChecker` whose verdicts every worker reads,
/// and turns signals into lifecycle steps — SIGTERM/SIGINT drain gracefully (a second one exits
/// at once), SIGHUP reloads the config file.
///
/// It never touches a worker's objects: it talks to workers through their `Mailbox`es and they
/// answer through `reports`. Threading: the thread that calls `run` only.
public final class Supervisor {
    private enum Phase { case starting, running, draining, stopping }

    private let loop = EventLoop()
    private let options: CommandLineOptions
    private let fdLimit: Int
    private let workerCount: Int
    private var config: ProxyConfig
    private var generation: ConfigGeneration
    /// Where each listener is bound (real ports for `:0`), in `config.listeners` order.
    private var listenAddresses: [SocketAddress]
    /// Seals TLS session tickets with a fresh key every `tls_ticket_key_rotation_s`.
    private var ticketRotation: Timer?
    /// One per upstream (each has its own health check settings).
    private var healthCheckers: [HealthChecker] = []
    private var threads: [NativeThread] = []
    private var inboxes: [Mailbox<WorkerMessage>] = []
    private let reports = Mailbox<WorkerReport>()
    private let connectionCount: ConnectionCount
    private let accessLog = AccessLogWriter()
    private let metrics: ProxyMetrics
    /// `admin.listen`'s socket, handed to worker 0; where it listens (for the start line).
    private let adminSocket: ListenSockets?
    private let reportWakeup: Wakeup
    private var signalWatchers: [SignalWatcher] = []
    private var graceTimer: Timer?
    private var startedWorkers = 0
    private var stoppedWorkers = 0
    private var phase = Phase.starting
    private var exitCode: Int32 = 0
    /// The listening sockets opened at start, per listener; `serve` hands one of each to each worker.
    private let startSockets: [ListenSockets]
    /// Reloads handed to the workers and not yet confirmed by all of them, by generation.
    private var unconfirmedReloads: [Int: UnconfirmedReload] = [:]
    /// A SIGHUP that arrived while starting: applied once every worker runs.
    private var reloadWhenRunning = false
    /// Looks up a reload's new host names off the loop, so health probes and signals go on.
    private let resolver: HostResolver
    /// A SIGHUP that arrived while a reload was resolving: when it completes, its result is
    /// dropped and the file read again — the latest file wins, and any number of SIGHUPs
    /// meanwhile make one more reload.
    private var reloadAgain = false
    /// Looks backend host names up again while running (`resolve_interval_ms`).
    private let discovery: BackendDiscovery
    /// One per `generation.keySets` entry: keeps the JWKS URLs' keys fresh.
    private var keyFetchers: [KeySetFetcher] = []
    /// The TTLs of the start-up lookups, by backend id (for the first re-resolution's timing).
    private var startTTLs: [String: Int] = [:]

    private struct UnconfirmedReload {
        let summary: String
        var waitingFor: Int
        var problems: [String] = []
        /// A generation made by re-resolving host names, not by SIGHUP: not counted as a reload.
        var isReload = true
    }

    /// Serves `config` (the loaded file with the command line applied) until a signal stops it;
    /// returns the process exit status.
    public static func run(config: ProxyConfig, options: CommandLineOptions, fdLimit: Int) -> Int32 {
        Platform.ignoreSIGHUP()  // until the reload handler is installed
        do {
            return try Supervisor(config: config, options: options, fdLimit: fdLimit).serve()
        } catch {
            Log.plain("proxy: \(error)")
            return 1
        }
    }

    /// Worker loops for `config`: `workers`, or one per CPU this process may run on.
    public static func workerCount(_ config: ProxyConfig) -> Int {
        config.workers > 0 ? config.workers : Platform.availableCPUs()
    }

    /// The DNS servers backend names are looked up through (`resolver`; nil: the system's).
    public static func dnsServers(_ config: ProxyConfig) -> DNSServers? { BackendDiscovery.servers(config) }

    /// The config file's values with the command line's overrides.
    public static func applying(_ options: CommandLineOptions, to config: ProxyConfig) -> ProxyConfig {
        var config = config
        if let listen = options.listen { config.listen = listen }
        if let workers = options.workers { config.workers = workers }
        return config
    }

    private init(config: ProxyConfig, options: CommandLineOptions, fdLimit: Int) throws(ProxyStartError) {
        self.config = config
        self.options = options
        self.fdLimit = fdLimit
        workerCount = Self.workerCount(config)
        connectionCount = ConnectionCount(workers: workerCount)
        resolver = HostResolver(loop: loop)
        discovery = BackendDiscovery(loop: loop)
        var backends: [SharedBackend] = []
        // Start-up resolves host names synchronously (blocking getaddrinfo, or c-ares asking the
        // "resolver" servers): no loop runs yet, so nothing can stall. Reloads and re-resolution
        // look names up off the loop.
        let servers = BackendDiscovery.servers(config)
        var ttls: [String: Int] = [:]
        var clientContexts: [BackendTLSConfig: TLSContext] = [:]
        for b in config.allBackends {
            let tls: TLSContext?
            do throws(TLSSetupError) {
                tls = try Self.backendContext(b, cache: &clientContexts)
            } catch {
                throw ProxyStartError(message: "\(options.configPath): backend \(b.id) (\(b.url)): tls: \(error.message)")
            }
            do {
                let resolved = try SocketAddress.resolveAll(host: b.host, port: b.port, servers: servers)
                if let ttl = resolved.ttlS { ttls[b.id] = ttl }
                Self.warnIfTruncated(b, resolved)
                backends += BackendEndpoints.make(b, addresses: resolved.addresses, current: [], workers: workerCount, tls: tls,
                                                  record: Self.nameRecord(b, resolved), otherFamily: resolved.otherFamily)
            } catch {
                throw ProxyStartError(message: "\(options.configPath): backends: \(error)")
            }
        }
        let budget = ConnectionBudget.effective(config.limits, fdLimit: fdLimit, workers: workerCount,
                                                backends: config.allBackends.count)
        if let warning = budget.warning { Log.warning(warning) }
        // Certificates first: a broken one stops the start before any socket is bound.
        var contexts: [TLSContext?] = []
        for (i, listener) in config.listeners.enumerated() {
            do throws(TLSSetupError) {
                contexts.append(try listener.tls.map { tls throws(TLSSetupError) in try Self.makeContext(tls, config: config) })
            } catch {
                throw ProxyStartError(message: "\(options.configPath): listen[\(i)].tls: \(error.message)")
            }
        }
        if config.listeners.contains(where: { $0.tls?.isLocal == true }) {
            Log.info("local HTTPS: certificates issued per name by the local CA in \(LocalCertificateAuthority.directory()); "
                + "run `proxy trust` once so browsers and curl accept them")
        }
        var sockets: [ListenSockets] = []
        for (i, listener) in config.listeners.enumerated() {
            do {
                sockets.append(try ListenSockets.open(listener.address, count: workerCount, exclusive: true))
            } catch {
                sockets.forEach { $0.closeAll() }
                throw config.listeners.count == 1 ? error : ProxyStartError(message: "\(options.configPath): listen[\(i)]: \(error.message)")
            }
        }
        if let admin = config.admin.listen {
            do {
                adminSocket = try ListenSockets.open(admin, count: 1, exclusive: true)
            } catch {
                sockets.forEach { $0.closeAll() }
                throw ProxyStartError(message: "\(options.configPath): admin.listen: \(error.message)")
            }
        } else {
            adminSocket = nil
        }
        let bound = sockets.map(\.address)
        listenAddresses = bound
        startSockets = sockets
        generation = ConfigGeneration(number: 1, config: config, backends: backends,
                                      upstreams: SharedUpstream.list(for: config, workers: workerCount),
                                      maxConnections: budget.maxConnections, tls: contexts,
                                      httpsPort: config.firstTLSListener.map { bound[$0].port }, workers: workerCount)
        metrics = ProxyMetrics(workers: workerCount, accessLog: accessLog)
        switch AccessLogWriter.open(config.accessLog.destination) {
        case .success(let opened):
            do { try accessLog.use(opened, maxPendingBytes: config.accessLog.maxPendingBytes) } catch {
                sockets.forEach { $0.closeAll() }
                adminSocket?.closeAll()
                throw error
            }
        case .failure(let error):
            sockets.forEach { $0.closeAll() }
            adminSocket?.closeAll()
            throw ProxyStartError(message: "\(options.configPath): \(error)")
        }
        reportWakeup = Wakeup(loop: loop)
        healthCheckers = makeHealthCheckers(config, backends)
        startTTLs = ttls
    }

    /// Addresses for a log line: all of them up to 12, else the first 12 and how many more.
    private static func listed(_ addresses: [SocketAddress]) -> String {
        let sorted = addresses.sorted { $0.ordered(before: $1) }.map(\.ipString)
        return sorted.count <= 12 ? sorted.joined(separator: ", ") : sorted.prefix(12).joined(separator: ", ") + " and \(sorted.count - 12) more"
    }

    private static func warnIfTruncated(_ b: BackendConfig, _ resolved: ResolvedAddresses) {
        guard let total = resolved.truncatedFrom else { return }
        Log.warning("dns: backend \(b.id) (\(b.host)) has \(total) addresses; using \(resolved.addresses.count) "
            + "(the first \(ResolvedAddresses.maxAddresses) in address order)")
    }

    /// The record that `/_health` shows for a backend given by host name (nil for an IP literal).
    private static func nameRecord(_ b: BackendConfig, _ resolved: ResolvedAddresses) -> BackendNameRecord? {
        !b.hasIPLiteralHost ? BackendNameRecord(host: b.host, addresses: resolved.addresses) : nil
    }

    private func serve() -> Int32 {
        Platform.unblockAllSignals()  // before any thread starts, so they all inherit it
        reportWakeup.onWake = { [unowned self] in
            self.handleReports()
            // The same wake-up carries workers' requests for a JWKS fetch (`RemoteKeySet.needKeys`).
            self.keyFetchers.forEach { $0.serviceRequests() }
        }
        reports.attach(reportWakeup.sender)
        watch([SIGINT, SIGTERM]) { [unowned self] signum in self.stopSignal(signum) }
        watch([SIGHUP]) { [unowned self] _ in self.reload() }

        // Before the workers run: their first requests find the key sets' fetches under way.
        followKeySets()
        let sockets = startSockets
        for index in 0..<workerCount {
            let inbox = Mailbox<WorkerMessage>()
            let launch = WorkerLaunch(index: index, count: workerCount, generation: generation,
                                      descriptors: sockets.map { $0.descriptors[index] }, inbox: inbox, reports: reports,
                                      connectionCount: connectionCount, metrics: metrics,
                                      adminDescriptor: index == 0 ? adminSocket?.descriptors[0] : nil)
            do {
                threads.append(try NativeThread(name: "proxy-worker-\(index)") { Worker.run(launch) })
                inboxes.append(inbox)
            } catch {
                Log.plain("proxy: \(error)")
                for listener in sockets { for fd in listener.descriptors[index...] { _ = Glibc.close(fd) } }
                exitCode = 1
                stopWorkers()
                break
            }
        }
        if threads.isEmpty { finish() } else {
            healthCheckers.forEach { $0.start() }
            startTicketRotation()
            discovery.onAnswers = { [unowned self] answers in self.applyLookups(answers) }
            discovery.configure(config, ttls: startTTLs)
        }
        loop.run()
        for t in threads { t.join() }
        accessLog.stop()  // after the workers flushed their buffers
        return exitCode
    }

    private func watch(_ signals: [Int32], _ handler: @escaping (Int32) -> Void) {
        for signum in signals {
            let watcher = SignalWatcher(loop: loop)
            watcher.onSignal = handler
            try? watcher.start(signum)
            signalWatchers.append(watcher)
        }
    }

    // MARK: - Reports from workers

    private func handleReports() {
        for report in reports.takeAll() {
            switch report {
            case .started:
                startedWorkers += 1
                if startedWorkers == workerCount && phase == .starting {
                    phase = .running
                    // Tests and scripts wait for this exact line (it carries the real port for `:0`).
                    print("proxy: listening on \(listenAddresses[0])\(config.listeners[0].tls != nil ? " (https)" : "") "
                        + "(\(config.allBackends.count) backends, "
                        + "\(workerCount) worker\(workerCount == 1 ? "" : "s"), fd limit \(fdLimit), "
                        + "max connections \(generation.maxConnections))"
                        + zip(config.listeners, listenAddresses).dropFirst().map { l, a in
                            "; also on \(a)\(l.tls != nil ? " (https)" : l.redirectToHTTPS ? " (redirects to https)" : "")"
                        }.joined()
                        + (adminSocket.map { "; admin on \($0.address)" } ?? ""))
                    Platform.flushStandardOutput()
                    if reloadWhenRunning { reload() }
                }
            case .failed(_, let message):
                Log.plain("proxy: \(message)")
                exitCode = 1
                stopWorkers()
            case .applied(let worker, let number, let problem):
                guard var pending = unconfirmedReloads[number] else { break }
                if let problem { pending.problems.append("worker \(worker): \(problem)") }
                pending.waitingFor -= 1
                unconfirmedReloads[number] = pending.waitingFor > 0 ? pending : nil
                if pending.waitingFor == 0 { reloadConfirmed(pending) }
            case .stopped(let worker):
                // Its last act was this report: join it now rather than at exit, so a second
                // signal's immediate exit leaves no finished-but-unjoined thread behind.
                threads[worker].join()
                stoppedWorkers += 1
                if stoppedWorkers == threads.count { finish() }
            }
        }
    }

    /// Starts a fetcher for each key set of the generation that has none, and stops those of key
    /// sets no longer named (a kept key set keeps its fetcher, its keys and its schedule).
    private func followKeySets() {
        // Shutting down: the drain stopped every fetcher for good (a reload finishing late must
        // not start them again).
        guard phase == .starting || phase == .running else { return }
        let wanted = generation.keySets
        let gone = keyFetchers.filter { f in !wanted.contains { $0 === f.keySet } }
        gone.forEach { $0.stop() }
        keyFetchers.removeAll { f in gone.contains { $0 === f } }
        // Requests of the old generation waiting on a dropped key set: answer them now.
        if !gone.isEmpty { tellWorkersKeysFetched() }
        for set in wanted where !keyFetchers.contains(where: { $0.keySet === set }) {
            let fetcher = KeySetFetcher(set, loop: loop, wake: reportWakeup.sender, servers: BackendDiscovery.servers(config)) { [unowned self] in
                self.tellWorkersKeysFetched()
            }
            keyFetchers.append(fetcher)
            fetcher.start()
        }
    }

    /// A JWKS fetch ended, or key sets were dropped: requests waiting for keys ask again.
    private func tellWorkersKeysFetched() {
        for inbox in inboxes { inbox.post(.keysFetched) }
    }

    private func stopWorkers() {
        phase = .stopping
        for inbox in inboxes { inbox.post(.stopNow) }
    }

    /// Every worker has stopped: close the supervisor's own handles so `loop.run()` returns.
    private func finish() {
        ticketRotation?.close()
        ticketRotation = nil
        resolver.cancelAll()
        discovery.stop()
        keyFetchers.forEach { $0.stop() }
        keyFetchers.removeAll()
        healthCheckers.forEach { $0.stop() }
        reports.detach()
        loop.closeAllHandles()
    }

    // MARK: - Graceful shutdown

    private func stopSignal(_ signum: Int32) {
        switch phase {
        case .draining, .stopping:
            Log.warning("signal \(signum) again: exiting now")
            _exit(1)
        case .starting, .running:
            let grace = config.shutdownGraceMs
            Log.info("signal \(signum): shutting down; requests in flight have \(grace) ms to finish (signal again to exit now)")
            phase = .draining
            for inbox in inboxes { inbox.post(.drain) }
            // No more JWKS fetches: the keys held serve the drain, and requests waiting for a
            // fetch are answered now rather than holding the shutdown up.
            if !keyFetchers.isEmpty {
                keyFetchers.forEach { $0.stop() }
                keyFetchers.removeAll()
                tellWorkersKeysFetched()
            }
            let timer = Timer(loop: loop)
            timer.onFire = { [unowned self] in
                Log.warning("shutdown_grace_ms (\(grace) ms) is over: closing the connections still open")
                self.stopWorkers()
            }
            timer.start(timeoutMs: UInt64(grace))
            graceTimer = timer
        }
    }

    // MARK: - Reload

    /// Re-reads the config file and hands the new configuration to every worker. Anything wrong —
    /// a bad file, a backend that does not resolve, a new `listen` address that cannot be bound —
    /// changes nothing: the error is logged and the running configuration stays.
    ///
    /// New host names (backends added or changed, a new `listen` host) are looked up off the loop
    /// (`HostResolver`); the reload applies when the answers are in. Meanwhile health probes and
    /// signals go on; a SIGHUP meanwhile makes the file be read again once they are in (`reloadAgain`).
    private func reload() {
        guard phase == .running else {
            if phase == .starting {
                reloadWhenRunning = true
            } else {
                Log.warning("SIGHUP ignored while shutting down")
            }
            return
        }
        reloadWhenRunning = false
        if resolver.isBusy && resolver.allCancellable {
            // The previous reload waits on DNS servers (perhaps the very ones this file fixes):
            // its lookups are dropped and this file is read now.
            Log.info("reload: SIGHUP while the previous reload is resolving host names; dropping its lookups and reading the file again")
            resolver.cancelAll()
            reloadAgain = false
        }
        guard !resolver.isBusy else {
            if !reloadAgain {
                Log.info("reload: SIGHUP while the previous reload is resolving host names; "
                    + "the file will be read again once they are resolved")
            }
            reloadAgain = true
            return
        }
        guard options.targets.isEmpty else {
            reopenAccessLog(config.accessLog)
            Log.info("reload: the configuration comes from --to on the command line; nothing to re-read")
            return
        }
        let path = options.configPath
        var notes: [String] = []
        var next: ProxyConfig
        do {
            next = Self.applying(options, to: try ConfigLoader.load(path: path))
        } catch {
            return keepConfiguration("\(error)")
        }
        if next.admin.listen != config.admin.listen {
            notes.append("admin.listen stays \(config.admin.listen?.description ?? "off") until a restart")
            next.admin.listen = config.admin.listen
        }
        if Self.workerCount(next) != workerCount {
            notes.append("workers stays \(workerCount) until a restart")
        }
        next.workers = config.workers
        if next.listeners.count != config.listeners.count {
            notes.append("listeners stay \(config.listeners.map(\.address.description).joined(separator: ", ")) until a restart "
                + "(adding or removing one needs it)")
            next.listeners = config.listeners
        }
        // What needs a lookup: backends not kept as they are, and listen addresses that moved.
        let unresolved = next.allBackends.filter { b in !generation.backends.contains { $0.isSame(as: b) } }
        let moved = zip(config.listeners, next.listeners).enumerated().filter { $0.element.0.address != $0.element.1.address }.map(\.offset)
        // Backend names go to the "resolver" servers when there are some; listen addresses always
        // to the system resolver (as at start: `/etc/hosts`, `localhost`).
        let servers = BackendDiscovery.servers(next)
        let names = unresolved.map { (host: $0.host, port: $0.port, servers: servers) }
            + moved.map { (host: next.listeners[$0].address.host, port: next.listeners[$0].address.port, servers: DNSServers?.none) }
        resolver.resolveAll(names) { [unowned self, next, notes] results in
            if self.reloadAgain {
                // A newer SIGHUP: what this one read may be out of date already.
                self.reloadAgain = false
                return self.reload()
            }
            guard self.phase == .running else { return Log.warning("reload abandoned: shutting down") }
            var addresses: [String: ResolvedAddresses] = [:]
            for (b, result) in zip(unresolved, results) {
                switch result {
                case .success(let address): addresses[b.id] = address
                case .failure(let error): return self.keepConfiguration("\(path): backends: \(error)")
                }
            }
            var newAddresses: [Int: SocketAddress] = [:]
            for (index, result) in zip(moved, results.suffix(moved.count)) {
                switch result {
                case .success(let resolved): newAddresses[index] = resolved.addresses[0]
                case .failure(let error): return self.keepConfiguration("\(path): listen[\(index)]: \(error)")
                }
            }
            self.apply(next, notes: notes, resolved: addresses, newListenAddresses: newAddresses)
        }
    }

    /// A reload failed: the running configuration stays.
    private func keepConfiguration(_ problem: String) {
        metrics.reloaded(ok: false)
        Log.error("reload failed, still serving the previous configuration: \(problem)")
        // SIGHUP also means "reopen the log" (rotation): that still happens.
        reopenAccessLog(config.accessLog)
    }

    /// The second half of a reload, once every new host name is resolved: `resolved` holds the
    /// address of each backend (by id) that is not kept as it was, `newListenAddresses` the new
    /// address of each listener (by index) that moved.
    private func apply(_ next: ProxyConfig, notes: [String], resolved: [String: ResolvedAddresses], newListenAddresses: [Int: SocketAddress]) {
        var notes = notes
        let path = options.configPath
        var backends: [SharedBackend] = []
        var ttls: [String: Int] = [:]
        var clientContexts: [BackendTLSConfig: TLSContext] = [:]
        for b in next.allBackends {
            let kept = generation.backends.filter { $0.isSame(as: b) }
            if !kept.isEmpty {
                // Every endpoint as it is (re-resolution updates them); the file's weight now, and
                // no runtime change (`/_admin`) survives a reload.
                for endpoint in kept {
                    endpoint.setConfiguredWeight(b.weight)
                    endpoint.resetRuntimeChanges()
                    endpoint.nameRecord?.resetBackendRuntimeChanges()
                }
                backends += kept
                continue
            }
            guard let address = resolved[b.id] else { return keepConfiguration("\(path): backends: \(b.id) was not resolved") }
            let tls: TLSContext?
            do throws(TLSSetupError) {
                tls = try Self.backendContext(b, cache: &clientContexts)
            } catch {
                return keepConfiguration("\(path): backend \(b.id) (\(b.url)): tls: \(error.message)")
            }
            // Renamed or moved (default ids follow the position): keep what its probes found.
            let previous = generation.backends.filter { $0.hasSameAddress(as: b) }
            backends += BackendEndpoints.make(b, addresses: address.addresses, current: previous, workers: workerCount, tls: tls,
                                              record: Self.nameRecord(b, address), otherFamily: address.otherFamily)
            if let ttl = address.ttlS { ttls[b.id] = ttl }
        }
        let budget = ConnectionBudget.effective(next.limits, fdLimit: fdLimit, workers: workerCount,
                                                backends: next.allBackends.count)
        let changes = ConfigChanges(from: config, oldBackends: generation.backends, to: next, newBackends: backends)
        guard !changes.isEmpty else {
            reopenAccessLog(next.accessLog)
            metrics.reloaded(ok: true)
            Log.info("reload: \(path): no changes" + notes.map { "; \($0)" }.joined())
            return
        }
        // Certificates are read again on every reload (renewed files, same config). One that
        // cannot be used keeps the listener's previous certificates, said in the log.
        var contexts: [TLSContext?] = []
        for (i, listener) in next.listeners.enumerated() {
            guard let tls = listener.tls else { contexts.append(nil); continue }
            do throws(TLSSetupError) {
                contexts.append(try Self.makeContext(tls, config: next))
            } catch {
                let previous = i < generation.tls.count ? generation.tls[i] : nil
                guard let previous else { return keepConfiguration("\(path): listen[\(i)].tls: \(error.message)") }
                Log.error("reload: \(path): listen[\(i)].tls: \(error.message); the previous certificates stay in use")
                notes.append("listen[\(i)] keeps its previous certificates")
                contexts.append(previous)
            }
        }
        var sockets: [Int: ListenSockets] = [:]
        for m in changes.moved {
            do {
                // Another port: check that nobody listens there (see `ListenSockets.open`). The same
                // port on another host address may overlap the proxy's own sockets: no check.
                sockets[m.index] = try ListenSockets.open(m.to, resolved: newListenAddresses[m.index], count: workerCount,
                                                          exclusive: m.to.port != m.from.port)
            } catch {
                sockets.values.forEach { $0.closeAll() }
                return keepConfiguration("\(error)")
            }
        }
        // The last step that can fail: the new log destination (after everything else, so a
        // failed reload never leaves the log switched to a configuration that did not apply).
        if let problem = reopenAccessLog(next.accessLog, reportingFailure: false) {
            sockets.values.forEach { $0.closeAll() }
            return keepConfiguration("\(path): \(problem)")
        }
        var addresses = listenAddresses
        for (index, opened) in sockets { addresses[index] = opened.address }
        if let warning = budget.warning { Log.warning(warning) }
        let previousRotation = config.tlsTicketKeyRotationS
        config = next
        generation = ConfigGeneration(number: generation.number + 1, config: next, backends: backends,
                                      upstreams: SharedUpstream.list(for: next, workers: workerCount, previous: generation.upstreams),
                                      maxConnections: budget.maxConnections, tls: contexts,
                                      httpsPort: next.firstTLSListener.map { addresses[$0].port }, workers: workerCount,
                                      previous: generation)
        // Before the workers get the generation: its new key sets' fetches are under way.
        followKeySets()
        var pending = UnconfirmedReload(
            summary: "reload: \(path): generation \(generation.number): \(changes.summary)"
                + sockets.sorted { $0.key < $1.key }.map { " (now listening on \($0.value.address))" }.joined()
                + notes.map { "; \($0)" }.joined(),
            waitingFor: 0)
        for (index, inbox) in inboxes.enumerated() {
            let descriptors = sockets.mapValues { $0.descriptors[index] }
            if inbox.post(.apply(generation, listening: descriptors)) {
                pending.waitingFor += 1
            } else {
                descriptors.values.forEach { _ = Glibc.close($0) }
            }
        }
        listenAddresses = addresses
        if changes.settings.contains("listen") || previousRotation != next.tlsTicketKeyRotationS { startTicketRotation() }
        if changes.affectsHealthChecks {
            healthCheckers.forEach { $0.stop() }
            healthCheckers = makeHealthCheckers(next, backends)
            healthCheckers.forEach { $0.start() }
        }
        discovery.configure(next, ttls: ttls)
        if pending.waitingFor > 0 { unconfirmedReloads[generation.number] = pending } else { reloadConfirmed(pending) }
    }

    // MARK: - Re-resolving backend host names

    /// Answers of `BackendDiscovery`: a backend whose addresses changed gets its new endpoints
    /// (kept endpoints keep their pools, health and counters; new ones are probed at once; removed
    /// ones finish what they carry) in a new generation handed to every worker, and the change is
    /// logged. A failed lookup keeps the addresses in use and is logged once per run of failures.
    /// An answer for a backend that a reload changed or removed meanwhile is dropped.
    private func applyLookups(_ answers: [(backend: BackendConfig, result: Result<ResolvedAddresses, AddressError>)]) {
        guard phase == .running else { return }
        var changed: [String: ResolvedAddresses] = [:]
        var lines: [String] = []
        for (b, result) in answers {
            guard config.allBackends.contains(b) else { continue }
            let endpoints = generation.backends.filter { $0.backendID == b.id && $0.isSame(as: b) }
            guard let record = endpoints.first?.nameRecord else { continue }
            switch result {
            case .failure(let error):
                if record.noteFailure(error.message) {
                    Log.warning("dns: backend \(b.id): \(error.message); keeping \(Self.listed(endpoints.map(\.address)))")
                }
            case .success(let resolved):
                if BackendEndpoints.same(endpoints, resolved.addresses, otherFamily: resolved.otherFamily) {
                    record.noteLookup(changedTo: nil)
                    continue
                }
                record.noteLookup(changedTo: resolved.addresses)
                changed[b.id] = resolved
                Self.warnIfTruncated(b, resolved)
                lines.append("backend \(b.id) (\(b.host)): \(Self.listed(endpoints.map(\.address))) -> \(Self.listed(resolved.addresses))")
            }
        }
        guard !changed.isEmpty else { return }
        var backends: [SharedBackend] = []
        for b in config.allBackends {
            let current = generation.backends.filter { $0.backendID == b.id && $0.isSame(as: b) }
            guard let resolved = changed[b.id] else { backends += current; continue }
            backends += BackendEndpoints.make(b, addresses: resolved.addresses, current: current, workers: workerCount,
                                              tls: current.first?.tls, record: current.first?.nameRecord, keepingRuntimeChanges: true,
                                              otherFamily: resolved.otherFamily)
        }
        generation = ConfigGeneration(number: generation.number + 1, config: config, backends: backends,
                                      upstreams: generation.upstreams, maxConnections: generation.maxConnections,
                                      tls: generation.tls, httpsPort: generation.httpsPort, routeRefusals: generation.routeRefusals,
                                      previous: generation)
        var pending = UnconfirmedReload(summary: "dns: generation \(generation.number): " + lines.joined(separator: "; "),
                                        waitingFor: 0, isReload: false)
        for inbox in inboxes where inbox.post(.apply(generation, listening: [:])) { pending.waitingFor += 1 }
        // Only the checkers of upstreams with a changed backend start over (and probe at once).
        for (i, upstream) in config.allUpstreams.enumerated() where upstream.backends.contains(where: { changed[$0.id] != nil }) {
            guard i < healthCheckers.count else { continue }
            healthCheckers[i].stop()
            healthCheckers[i] = makeHealthChecker(upstream, backends)
            healthCheckers[i].start()
        }
        if pending.waitingFor > 0 { unconfirmedReloads[generation.number] = pending } else { reloadConfirmed(pending) }
    }

    /// Opens the access log destination afresh (rotation moves the old file away) and hands it
    /// to the writer thread; returns the problem when it cannot be opened (the old one stays),
    /// after logging it unless the caller reports it.
    @discardableResult
    private func reopenAccessLog(_ log: AccessLogConfig, reportingFailure: Bool = true) -> String? {
        var problem: String?
        switch AccessLogWriter.open(log.destination) {
        case .success(let opened):
            do {
                try accessLog.use(opened, maxPendingBytes: log.maxPendingBytes)
            } catch {
                if opened.owned { _ = Glibc.close(opened.0) }
                problem = error.message
            }
        case .failure(let error):
            problem = error.description
        }
        if let problem, reportingFailure { Log.error("access log: \(problem); lines keep going to the previous destination") }
        return problem
    }

    /// An `https://` backend's client context (nil for `http://`), shared by backends with the
    /// same settings; `verify: false` is said as a warning.
    private static func backendContext(_ b: BackendConfig, cache: inout [BackendTLSConfig: TLSContext]) throws(TLSSetupError) -> TLSContext? {
        guard let settings = b.tls else { return nil }
        if !settings.verify {
            Log.warning("backend \(b.id) (\(b.url)): tls.verify is false: its certificate is not checked, so anyone on the path can impersonate it")
        }
        if let made = cache[settings] { return made }
        let certificate = settings.cert.flatMap { cert in settings.key.map { (cert: cert, key: $0) } }
        let made = try TLSContext(clientCAFile: settings.ca, verify: settings.verify, alpn: ["http/1.1"], certificate: certificate)
        cache[settings] = made
        return made
    }

    /// A listener's TLS context from its certificate files.
    private static func makeContext(_ tls: ListenerTLSConfig, config: ProxyConfig) throws(TLSSetupError) -> TLSContext {
        if tls.isLocal {
            return try TLSContext(localCAIn: LocalCertificateAuthority.directory(), names: config.routeHostNames,
                                  minVersion: tls.minVersion, alpn: tls.alpn, ticketLifetimeS: config.tlsTicketKeyRotationS * 2)
        }
        return try TLSContext(certificates: tls.certificates.map { ($0.cert, $0.key) }, minVersion: tls.minVersion, alpn: tls.alpn,
                       ticketLifetimeS: config.tlsTicketKeyRotationS * 2)
    }

    /// Rotates the session ticket keys every `tls_ticket_key_rotation_s` while TLS listeners exist
    /// (the keys live for the process, so tickets survive reloads).
    /// Called at start and after each reload (a reload may add TLS or change the period).
    private func startTicketRotation() {
        ticketRotation?.close()
        ticketRotation = nil
        guard config.listeners.contains(where: { $0.tls != nil }), config.tlsTicketKeyRotationS > 0 else { return }
        let timer = Timer(loop: loop)
        let ms = UInt64(config.tlsTicketKeyRotationS) * 1000
        timer.onFire = { TLSContext.rotateTicketKeys() }
        timer.start(timeoutMs: ms, repeatMs: ms)
        ticketRotation = timer
    }

    /// One checker per upstream, over that upstream's shared backends (matched by id, which the
    /// loader keeps unique across upstreams).
    private func makeHealthCheckers(_ config: ProxyConfig, _ backends: [SharedBackend]) -> [HealthChecker] {
        config.allUpstreams.map { makeHealthChecker($0, backends) }
    }

    /// The checker of one upstream, over the endpoints of its backends.
    private func makeHealthChecker(_ upstream: UpstreamConfig, _ backends: [SharedBackend]) -> HealthChecker {
        // A static route's files are always there: never probed.
        HealthChecker(loop: loop, backends: upstream.backends.filter { $0.staticFiles == nil }.flatMap { b in backends.filter { $0.backendID == b.id } },
                      config: upstream.healthCheck, proxyProtocol: upstream.balance.sendProxyProtocol)
    }

    /// Every worker has switched: now the reload line is true (tests and operators wait for it).
    private func reloadConfirmed(_ reload: UnconfirmedReload) {
        if reload.isReload { metrics.reloaded(ok: reload.problems.isEmpty) }
        Log.info(reload.summary)
        for problem in reload.problems { Log.error("reload: \(problem)") }
    }
}

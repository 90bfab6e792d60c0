/// Keeps one `RemoteKeySet` fresh, from the supervisor's loop: fetches the JWKS at start, again
/// every `refresh_s`, and at once when a worker asks (a token named a `kid` the keys lack; the
/// worker side applies `min_refetch_s`). A failed fetch keeps the keys held so far and is tried
/// again after 1, 2, 4 … s, at most `refresh_s` and at most a minute apart. A document that is
/// not a usable JWKS counts as a failed fetch.
///
/// After every fetch, failed or not, `onFetchEnded` runs: the supervisor tells the workers, which
/// go on with the requests that waited for keys.
///
/// Threading: the supervisor's loop only.
final class KeySetFetcher {
    let keySet: RemoteKeySet
    private let loop: EventLoop
    private let timer: Timer
    private let wake: Wakeup.Sender
    private let onFetchEnded: () -> Void
    private var fetch: DocumentFetch?
    /// The config's `resolver` servers (nil: the system resolver), as for backend names.
    private let servers: DNSServers?
    private var failuresInARow = 0
    private var warnings = RateLimitedWarning(intervalMs: 60_000)

    init(_ keySet: RemoteKeySet, loop: EventLoop, wake: Wakeup.Sender, servers: DNSServers?, onFetchEnded: @escaping () -> Void) {
        self.keySet = keySet
        self.loop = loop
        self.wake = wake
        self.servers = servers
        self.onFetchEnded = onFetchEnded
        timer = Timer(loop: loop)
    }

    func start() {
        keySet.attach(wake)
        timer.onFire = { [unowned self] in fetchNow() }
        fetchNow()
    }

    /// Stops fetching; the caller tells the workers (`WorkerMessage.keysFetched`), so requests
    /// that waited for this key set are answered.
    func stop() {
        keySet.detach()
        timer.close()
        fetch?.cancel()
        fetch = nil
    }

    /// A worker may have asked for a fetch (the supervisor was woken).
    func serviceRequests() {
        if fetch == nil && !timer.isClosing && keySet.isWanted { fetchNow() }
    }

    private func fetchNow() {
        guard fetch == nil else { return }
        timer.stop()
        let source = keySet.source
        keySet.fetchStarted()
        // A context per fetch: the CA file (or the system's store) is read each time, so a
        // renewed CA needs no restart. Building it takes well under a millisecond.
        var tls: TLSContext?
        if source.tls {
            do { tls = try TLSContext(clientCAFile: source.ca, verify: true, alpn: ["http/1.1"]) } catch {
                let problem = "TLS: \(error.message)"
                // Reported from the loop, like any other failure.
                timer.onFire = { [unowned self] in
                    timer.onFire = { [unowned self] in fetchNow() }
                    ended(.failure(AddressError(message: problem)))
                }
                timer.start(timeoutMs: 0)
                return
            }
        }
        let request = DocumentFetch.Request(host: source.host, port: source.port, target: source.target, tls: tls,
                                            timeoutMs: source.timeoutMs, maxBytes: source.maxBytes, servers: servers)
        let started = DocumentFetch(loop: loop, request)
        fetch = started
        started.start { [unowned self] result in
            fetch = nil
            ended(result)
        }
    }

    private func ended(_ result: Result<[UInt8], AddressError>) {
        let source = keySet.source
        var keys: [AuthConfig.JWK]?
        var problem: String?
        switch result {
        case .success(let body):
            switch AuthConfig.JWT.parseJWKS(body, from: source.url, skippingBadKeys: true) {
            case .success(let parsed) where parsed.keys.count > source.maxKeys:
                problem = "\(source.url) holds \(parsed.keys.count) usable keys; at most \(source.maxKeys) are taken (\"max_keys\")"
            case .success(let parsed):
                keys = parsed.keys
                if !parsed.skipped.isEmpty {
                    warnings.log(now: loop.now) { _ in
                        "jwks: \(source.url): left out, not valid public keys (RSA needs 2048 to 16384 bits; EC points must lie on their curve): "
                            + parsed.skipped.joined(separator: ", ")
                    }
                }
            case .failure(let why): problem = why.message
            }
        case .failure(let why):
            problem = "\(source.url): \(why.message)"
        }
        let changed = keySet.fetchEnded(keys: keys, problem: problem, nowMs: Int64(Platform.monotonicNanos() / 1_000_000))
        let nextMs: Int
        if let keys {
            if changed {
                let kids = keys.map { $0.kid.map { JSONText.quote(String($0.prefix(64))) } ?? "(no kid)" }.joined(separator: ", ")
                Log.info("jwks: \(source.url): \(keys.count) key\(keys.count == 1 ? "" : "s") (\(kids))")
            } else if failuresInARow > 0 {
                Log.info("jwks: \(source.url): fetched again after \(failuresInARow) failed fetch\(failuresInARow == 1 ? "" : "es"); the keys are unchanged")
            }
            failuresInARow = 0
            nextMs = source.refreshS * 1000
        } else {
            failuresInARow += 1
            nextMs = min(1000 << min(failuresInARow - 1, 6), 60_000, source.refreshS * 1000)
            let held = keySet.version == 0 ? "no keys yet: tokens are answered 503" : "keeping the keys fetched before"
            warnings.log(now: loop.now) { leftOut in
                "jwks: \(problem ?? source.url); \(held); trying again in \(nextMs) ms"
                    + (leftOut > 0 ? " (\(leftOut) more failures not logged)" : "")
            }
        }
        timer.start(timeoutMs: UInt64(nextMs))
        onFetchEnded()
    }
}

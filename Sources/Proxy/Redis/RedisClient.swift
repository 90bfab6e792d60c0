/// A worker loop's client of the top-level `redis`: one pipelined connection, made when first
/// needed and made again after a failure with backoff (100 ms doubling to 5 s), never blocking
/// the loop — the host name is looked up on the thread pool, connecting and every command are
/// bounded by `connect_timeout_ms` and `timeout_ms`.
///
/// A command that cannot be sent now (no connection yet, or it failed) is refused at once
/// (`call` returns false) rather than queued: the caller applies `on_error` without waiting, and
/// the connection is (re)made in the background. A command whose reply is late fails, and so does
/// every other one waiting on that connection, which is then dropped (a Redis that is slow for one
/// is slow for all; replies come in order).
///
/// Ownership: the worker's `ProxyServer` holds it across configuration generations with the same
/// `redis`, and `close()`s it when that changes or the worker stops. Threading: the worker's loop.
final class RedisClient {
    let config: RedisConfig
    private let loop: EventLoop
    private let resolver: HostResolver
    private let timer: Timer

    private enum State {
        case idle
        case resolving(deadlineMs: UInt64)
        case connecting(RedisConnection, deadlineMs: UInt64)
        case ready(RedisConnection)
        case backingOff(untilMs: UInt64)
        case closed
    }
    private var state: State = .idle
    private struct Pending {
        let tag: UInt64
        let deadlineMs: UInt64
        let completion: (RedisConnection.Reply) -> Void
    }
    /// In the order sent (Redis answers in order); `head` is the first not yet answered.
    private var pending: [Pending] = []
    private var head = 0
    private var nextTag: UInt64 = 1
    private var backoffMs: UInt64 = 0
    /// A reload replaced this client: it takes no new commands and closes once the ones under
    /// way are answered (or time out).
    private var isRetiring = false
    /// Connection problems are logged at most every 10 s per worker.
    private var warning = RateLimitedWarning()

    /// Commands sent, and those that failed (timeout, lost connection, error reply, or refused
    /// because there was no connection).
    private(set) var commands: UInt64 = 0
    private(set) var failures: UInt64 = 0
    /// Why the last connection or command failed (also logged), nil while all is well.
    private(set) var lastError: String?

    init(config: RedisConfig, loop: EventLoop) {
        self.config = config
        self.loop = loop
        resolver = HostResolver(loop: loop)
        timer = Timer(loop: loop)
        timer.onFire = { [unowned self] in self.timerFired() }
    }

    /// Whether commands can be sent now.
    var isConnected: Bool { if case .ready = state { !isRetiring } else { false } }

    /// Sends `arguments`; `completion` gets the reply, or `.none` / `.error` on failure, later on
    /// this loop (never before `call` returns). False: not sent (no connection now; one is being
    /// made), and `completion` is never called.
    func call(_ arguments: [[UInt8]], completion: @escaping (RedisConnection.Reply) -> Void) -> Bool {
        guard case .ready(let connection) = state, !isRetiring else {
            failures += 1
            if case .idle = state { connect() }
            return false
        }
        let tag = nextTag
        nextTag += 1
        guard connection.send(tag: tag, arguments) else {
            failures += 1
            backOff("the connection refused a command")
            return false
        }
        commands += 1
        let wasEmpty = head == pending.count
        pending.append(Pending(tag: tag, deadlineMs: loop.now + UInt64(config.timeoutMs), completion: completion))
        if wasEmpty { rearm() }
        return true
    }

    /// Connects now if there is no connection and none is being made (start-up: so the first
    /// requests find one).
    func warmUp() {
        if case .idle = state { connect() }
    }

    /// Closes once the commands under way are answered or time out (a reload put another client
    /// in this one's place: requests waiting on a lease get its answer rather than a failure).
    func retire() {
        isRetiring = true
        if head == pending.count { close() }
    }

    /// Drops the connection and fails what waits on it; nothing runs after this.
    func close() {
        if case .closed = state { return }
        let gone = takeConnection()
        state = .closed
        resolver.cancelAll()
        timer.close()
        gone?.close()
        failPending(.none)
    }

    // MARK: - Connecting

    private func connect() {
        state = .resolving(deadlineMs: loop.now + UInt64(config.connectTimeoutMs))
        rearm()
        resolver.resolveAll([(host: config.host, port: config.port, servers: nil)]) { [weak self] results in
            guard let self, case .resolving = self.state else { return }
            switch results[0] {
            case .failure(let error): self.backOff("cannot look up \(self.config.host): \(error.message)")
            case .success(let resolved): self.open(resolved.addresses[0])
            }
        }
    }

    private func open(_ address: SocketAddress) {
        switch RedisConnection.connect(loop: loop, to: address) {
        case .failure(let error):
            backOff(error.message)
        case .success(let connection):
            connection.onEvent = { [unowned self, unowned connection] event in self.event(event, on: connection) }
            connection.onReply = { [unowned self] tag, reply in self.reply(tag, reply) }
            state = .connecting(connection, deadlineMs: loop.now + UInt64(config.connectTimeoutMs))
            rearm()
        }
    }

    private func event(_ event: RedisConnection.Event, on connection: RedisConnection) {
        switch (event, state) {
        case (.connected, .connecting(let current, _)) where current === connection:
            // AUTH and SELECT go first on the pipe: commands sent after them run after them,
            // and a refusal comes back as an error reply that drops the connection.
            state = .ready(connection)
            backoffMs = 0
            lastError = nil
            if let password = config.password {
                let auth = config.username.map { [Array("AUTH".utf8), Array($0.utf8), Array(password.utf8)] }
                    ?? [Array("AUTH".utf8), Array(password.utf8)]
                _ = call(auth) { [weak self] in self?.expectOK($0, "AUTH") }
            }
            if config.database != 0 {
                _ = call([Array("SELECT".utf8), Array(String(config.database).utf8)]) { [weak self] in self?.expectOK($0, "SELECT") }
            }
        case (.gone(let why), .connecting(let current, _)) where current === connection:
            backOff("cannot connect to Redis at \(config.host):\(config.port): \(why)")
        case (.gone(let why), .ready(let current)) where current === connection:
            backOff("lost the connection to Redis at \(config.host):\(config.port): \(why)")
        default:
            break
        }
    }

    /// AUTH and SELECT must succeed: otherwise the connection is dropped and made again later
    /// (a wrong password, a database out of range would else leave every bucket somewhere else).
    private func expectOK(_ reply: RedisConnection.Reply, _ command: String) {
        switch reply {
        case .text: return
        case .error(let message): backOff("Redis refused \(command): \(message)")
        default: backOff("Redis gave an unexpected answer to \(command)")
        }
    }

    // MARK: - Replies and deadlines

    private func reply(_ tag: UInt64, _ reply: RedisConnection.Reply) {
        // Replies come in order; one for a command already failed (timed out) is dropped.
        guard head < pending.count, pending[head].tag == tag else { return }
        let done = pending[head]
        head += 1
        if head == pending.count {
            pending.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= 64 && head * 2 >= pending.count {
            // Under steady load the queue is never empty: drop the answered front now and then.
            pending.removeFirst(head)
            head = 0
        }
        defer { if isRetiring && head == pending.count { close() } }
        switch reply {
        case .error(let message):
            failures += 1
            lastError = "Redis answered an error: \(message)"
            // Not authenticated (a server that began asking for a password): start over.
            if message.hasPrefix("NOAUTH") || message.hasPrefix("WRONGPASS") {
                done.completion(reply)
                return backOff(lastError!)
            }
        case .none:
            failures += 1
        default:
            break
        }
        done.completion(reply)
    }

    private func timerFired() {
        let now = loop.now
        switch state {
        case .resolving(let deadline) where now >= deadline:
            resolver.cancelAll()
            backOff("looking up \(config.host) took longer than connect_timeout_ms (\(config.connectTimeoutMs))")
        case .connecting(_, let deadline) where now >= deadline:
            backOff("connecting to Redis at \(config.host):\(config.port) took longer than connect_timeout_ms (\(config.connectTimeoutMs))")
        case .ready where head < pending.count && now >= pending[head].deadlineMs:
            backOff("Redis at \(config.host):\(config.port) did not answer within timeout_ms (\(config.timeoutMs))")
        case .backingOff(let until) where now >= until:
            connect()
        default:
            rearm()
        }
    }

    /// Arms the timer for the next thing that can happen: the connect deadline, the oldest
    /// command's deadline, the end of a backoff.
    private func rearm() {
        let now = loop.now
        let at: UInt64?
        switch state {
        case .resolving(let deadline), .connecting(_, let deadline): at = deadline
        case .ready: at = head < pending.count ? pending[head].deadlineMs : nil
        case .backingOff(let until): at = until
        default: at = nil
        }
        if let at { timer.start(timeoutMs: at > now ? at - now : 0) } else { timer.stop() }
    }

    // MARK: - Failing

    /// Drops the connection, fails what waited on it, and tries again after the backoff.
    private func backOff(_ why: String) {
        if case .closed = state { return }
        lastError = why
        warning.log(now: loop.now) { leftOut in
            "redis: \(why); requests get on_error (\(config.onError.rawValue)) until it answers" + (leftOut > 0 ? " (\(leftOut) more such problems)" : "")
        }
        if isRetiring {
            close()
            return
        }
        takeConnection()?.close()
        backoffMs = backoffMs == 0 ? 100 : min(backoffMs * 2, 5000)
        state = .backingOff(untilMs: loop.now + backoffMs)
        rearm()
        failPending(.none)
    }

    private func takeConnection() -> RedisConnection? {
        switch state {
        case .connecting(let c, _), .ready(let c): return c
        default: return nil
        }
    }

    private func failPending(_ reply: RedisConnection.Reply) {
        let failed = pending[head...]
        pending.removeAll()
        head = 0
        failures += UInt64(failed.count)
        for p in failed { p.completion(reply) }
    }
}

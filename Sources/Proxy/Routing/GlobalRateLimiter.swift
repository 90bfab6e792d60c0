/// One route's `scope: "global"` `rate_limit` on one worker: the buckets live in Redis (one
/// GCRA timestamp per key, moved by a script that runs atomically there, on Redis's clock), and
/// the worker *leases* tokens from them in batches, so most requests are decided here without a
/// round trip.
///
/// Per key, this worker keeps the tokens of its last lease (good for `holdNs`), and after Redis
/// said "none left" the time until it may ask again. A request takes a token when there is one
/// (and asks for the next lease in the background when half the batch is used); when there is
/// none it waits for a lease already asked for, or asks — the only requests that wait on Redis.
/// Redis never grants more than the limit allows, so the rate holds across every worker and
/// every proxy instance; what leasing trades is the other way: tokens a worker holds but does not
/// use (at most `leaseSize` per key and worker, and they lapse after `holdNs`) are lost to the
/// others, so the limit can bite slightly early — and tokens leased a moment ago may be spent a
/// moment later (within `holdNs`).
///
/// The local table is bounded like `RateLimiter`'s (`max_keys`, 8 probes, the stalest evicted;
/// 32 bytes a key).
/// Threading: one worker's loop.
final class GlobalRateLimiter {
    enum Verdict {
        case allowed(remaining: Int)
        case refused(waitNs: UInt64)
        /// Redis did not answer (down, slow, refusing): `redis.on_error` decides.
        case unavailable
    }

    let config: RateLimitConfig
    let redis: RedisClient
    /// The route's name as written: part of the Redis keys (a rebuilt router keeps this limiter
    /// only for a route of the same name).
    let route: String
    /// The header a `header:NAME` key reads (lowercase).
    let headerName: [UInt8]
    /// Leased tokens lapse after this long.
    static let holdNs: UInt64 = 1_000_000_000
    private let intervalNs: UInt64
    private let leaseSize: Int
    /// `EVAL`'s fixed arguments and the key prefix (`redis.key_prefix` + the route + `:`).
    private let script: [UInt8]
    private let intervalUs: [UInt8]
    private let limitUs: [UInt8]
    private let keyPrefix: [UInt8]

    private var keys: [UInt64] = []
    private var tokens: [Int] = []
    private var tokensExpire: [UInt64] = []
    private var deniedUntil: [UInt64] = []
    private var mask = 0
    /// Keys with a lease under way, and the requests waiting on it.
    private var leasing: Set<UInt64> = []
    private var waiting: [UInt64: [(Verdict) -> Void]] = [:]

    /// `route`: the route's name as written (host and path), so every proxy instance with the
    /// same route counts in the same Redis keys.
    init(_ config: RateLimitConfig, redis: RedisClient, route: String) {
        self.config = config
        self.redis = redis
        self.route = route
        if case .header(let name) = config.key { headerName = Array(name.utf8) } else { headerName = [] }
        let rate = CellRate(config)
        intervalNs = rate.intervalNs
        leaseSize = config.leaseSize
        script = Array(GlobalRateLimiter.leaseScript.utf8)
        // Whole µs on Redis's side: T rounded up (never more than the rate), τ + T in the same unit.
        let intervalMicros = max(1, (rate.intervalNs + 999) / 1000)
        intervalUs = Array(String(intervalMicros).utf8)
        limitUs = Array(String(intervalMicros * UInt64(config.burst + 1)).utf8)
        // The limit's terms are part of the key: a changed limit (or an instance still running the
        // old one during a rollout) counts apart rather than reading the other's timestamps.
        keyPrefix = Array((redis.config.keyPrefix + route + ":\(config.rate)/\(config.perMs)ms/\(config.burst):").utf8)
    }

    /// The verdict for one request of `key` (a hash) at `now` (monotonic ns) from what this
    /// worker holds, or nil when it must wait for Redis (then `wait`). No allocation: the common
    /// case of a request spending a leased token.
    func admitNow(key: UInt64, now: UInt64) -> Verdict? {
        let k = key == 0 ? 1 : key
        let slot = slot(for: k, now: now)
        if tokens[slot] > 0 && tokensExpire[slot] > now {
            tokens[slot] -= 1
            if tokens[slot] <= leaseSize / 2 && !leasing.contains(k) { lease(k, want: leaseSize) }
            return .allowed(remaining: tokens[slot])
        }
        if deniedUntil[slot] > now { return .refused(waitNs: deniedUntil[slot] - now) }
        return nil
    }

    /// After `admitNow` said nil: waits for a lease already asked for, or asks for one. `resume`
    /// gets the verdict later on this loop (never before this returns); `.unavailable` at once
    /// when nothing could be sent.
    func wait(key: UInt64, resume: @escaping (Verdict) -> Void) -> Verdict? {
        let k = key == 0 ? 1 : key
        if leasing.contains(k) {
            waiting[k, default: []].append(resume)
            return nil
        }
        guard lease(k, want: leaseSize) else { return .unavailable }
        waiting[k, default: []].append(resume)
        return nil
    }

    /// Asks Redis for up to `want` tokens of `k`. False: not sent (no connection now).
    @discardableResult
    private func lease(_ k: UInt64, want: Int) -> Bool {
        let redisKey = keyPrefix + Array(String(k, radix: 16).utf8)
        let sent = redis.call([Array("EVAL".utf8), script, [UInt8(ascii: "1")], redisKey, intervalUs, limitUs, Array(String(want).utf8)]) {
            [weak self] reply in self?.leased(k, want: want, reply)
        }
        if sent { leasing.insert(k) }
        return sent
    }

    private func leased(_ k: UInt64, want: Int, _ reply: RedisConnection.Reply) {
        leasing.remove(k)
        let now = Platform.monotonicNanos()
        var queue = waiting.removeValue(forKey: k) ?? []
        guard case .pair(let granted, let waitUs) = reply, granted >= 0, granted <= Int64(want) else {
            for resume in queue { resume(.unavailable) }
            return
        }
        let slot = slot(for: k, now: now)
        let served = min(Int(granted), queue.count)
        let spare = Int(granted) - served
        if spare > 0 {
            tokens[slot] = (tokensExpire[slot] > now ? tokens[slot] : 0) + spare
            tokensExpire[slot] = now + GlobalRateLimiter.holdNs
        }
        // Every state change is made before any request resumes (a resumed request may come back
        // into `admit`).
        var verdicts: [((Verdict) -> Void, Verdict)] = queue.prefix(served).map { ($0, .allowed(remaining: tokens[slot])) }
        queue.removeFirst(served)
        // How long until Redis has a token again: its answer when it granted none (never past one
        // interval, what a bucket can owe: a larger number is a corrupt key, not a wait), else at
        // most one interval from now.
        let wait = granted == 0 ? min(UInt64(min(max(waitUs, 1), 86_400_000_000)) * 1000, intervalNs) : intervalNs
        if !queue.isEmpty {
            if Int(granted) < want {
                // Redis is out of tokens for this key: the rest wait until it has one.
                deniedUntil[slot] = now + wait
                verdicts += queue.map { ($0, .refused(waitNs: wait)) }
            } else if lease(k, want: max(leaseSize, queue.count)) {
                // More came while the lease was under way than it asked for: ask again for them.
                waiting[k] = queue
            } else {
                verdicts += queue.map { ($0, .unavailable) }
            }
        } else if granted == 0 {
            deniedUntil[slot] = now + wait
        }
        for (resume, verdict) in verdicts { resume(verdict) }
    }

    /// The slot for `k`: its own, else one taken over (reset) — a free one, one with nothing
    /// left to remember, or the stalest of the 8 probed.
    private func slot(for k: UInt64, now: UInt64) -> Int {
        if keys.isEmpty {
            let capacity = RateLimiter.capacity(for: config.maxKeys)
            keys = [UInt64](repeating: 0, count: capacity)
            tokens = [Int](repeating: 0, count: capacity)
            tokensExpire = [UInt64](repeating: 0, count: capacity)
            deniedUntil = [UInt64](repeating: 0, count: capacity)
            mask = capacity - 1
        }
        let start = Int(truncatingIfNeeded: k) & mask
        var choice = -1, stalest = start
        func lastUse(_ i: Int) -> UInt64 { max(tokensExpire[i], deniedUntil[i]) }
        for step in 0..<8 {
            let i = (start + step) & mask
            if keys[i] == k { return i }
            if choice < 0 && (keys[i] == 0 || lastUse(i) <= now) { choice = i }
            if lastUse(i) < lastUse(stalest) { stalest = i }
        }
        let slot = choice >= 0 ? choice : stalest
        keys[slot] = k
        tokens[slot] = 0
        tokensExpire[slot] = 0
        deniedUntil[slot] = 0
        return slot
    }

    /// Slots in the table (0 until first used).
    var capacity: Int { keys.count }

    /// Leases tokens on Redis's clock (TIME), atomically: KEYS[1] holds the key's theoretical
    /// arrival time in µs; ARGV: the interval T and T + τ in µs, the tokens wanted. Grants as
    /// many as fit (at most the wanted), moves the time on by T for each and returns
    /// {granted, µs until one more would fit (0 when some were granted)}.
    static let leaseScript = """
        redis.replicate_commands()
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
        local interval = tonumber(ARGV[1])
        local limit = tonumber(ARGV[2])
        local want = tonumber(ARGV[3])
        local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
        if tat < now then tat = now end
        local room = math.floor((now + limit - tat) / interval)
        if room < 1 then return {0, tat + interval - limit - now} end
        local granted = math.min(want, room)
        tat = tat + granted * interval
        redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.floor((tat - now) / 1000) + 1000)
        return {granted, 0}
        """
}

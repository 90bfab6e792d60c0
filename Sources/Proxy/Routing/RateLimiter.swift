/// GCRA (the generic cell rate algorithm) for one `rate_limit`: each key holds one timestamp,
/// its theoretical arrival time (TAT). A request at `now` is let through when
/// `max(TAT, now) + T − now ≤ τ + T` (T = per ÷ rate, τ = T × burst), and then moves TAT on by
/// T; so `burst + 1` requests may come at once and then one every T.
struct CellRate: Equatable {
    /// T and τ, in ns.
    let intervalNs: UInt64
    let toleranceNs: UInt64

    init(_ config: RateLimitConfig) {
        intervalNs = max(1, UInt64(config.perMs) * 1_000_000 / UInt64(max(config.rate, 1)))
        toleranceNs = intervalNs * UInt64(config.burst)
    }

    /// The verdict for a request at `now` against `tat` (0: a key seen for the first time):
    /// allowed with the key's next TAT and how many could follow at once, or refused with how
    /// long to wait (a refused request leaves TAT as it was).
    @inline(__always)
    func decide(tat: UInt64, now: UInt64) -> (next: UInt64?, remaining: Int, waitNs: UInt64) {
        let next = max(tat, now) + intervalNs
        let ahead = next - now
        if ahead > toleranceNs + intervalNs { return (nil, 0, ahead - toleranceNs - intervalNs) }
        return (next, Int((toleranceNs + intervalNs - ahead) / intervalNs), 0)
    }
}

/// One route's `rate_limit` as one worker sees it. `scope: "worker"`: the buckets are this
/// worker's own, in a bounded table (allocated on first use: `max_keys` rounded up to a power of
/// two, 16 bytes a key). `scope: "proxy"`: they are a `SharedRateLimitTable` every worker of
/// the process updates without a lock.
///
/// The table never grows: a new key takes a free slot among the 8 its hash points to, else one
/// whose TAT has passed (that key would start afresh anyway), else the one with the oldest TAT
/// — a flood of distinct keys costs no memory, only the forgetting of some keys (which then
/// start afresh: lenient, never stricter).
///
/// Threading: one worker's loop (the shared table is safe from any thread).
final class RateLimiter {
    let config: RateLimitConfig
    let rate: CellRate
    /// The header a `header:NAME` key reads (lowercase).
    let headerName: [UInt8]
    /// `scope: "proxy"`: the process-wide table (nil: this worker's own, below).
    let shared: SharedRateLimitTable?
    private var keys: [UInt64] = []
    private var tats: [UInt64] = []
    private var mask = 0

    init(_ config: RateLimitConfig, shared: SharedRateLimitTable? = nil) {
        self.config = config
        self.shared = shared
        rate = CellRate(config)
        if case .header(let name) = config.key { headerName = Array(name.utf8) } else { headerName = [] }
    }

    /// The verdict for one request of `key` (a hash; 0 is reserved) at `now` (monotonic ns).
    /// `remaining`: requests that could follow at once; `waitNs`: how long a refused one must wait.
    func admit(key: UInt64, now: UInt64) -> (allowed: Bool, remaining: Int, waitNs: UInt64) {
        let k = key == 0 ? 1 : key
        if let shared { return shared.admit(key: k, now: now, rate: rate) }
        if keys.isEmpty {
            let capacity = RateLimiter.capacity(for: config.maxKeys)
            keys = [UInt64](repeating: 0, count: capacity)
            tats = [UInt64](repeating: 0, count: capacity)
            mask = capacity - 1
        }
        let slot = find(k, now: now)
        let verdict = rate.decide(tat: keys[slot] == k ? tats[slot] : 0, now: now)
        // Not stored when refused: a refused request costs the key nothing.
        guard let next = verdict.next else { return (false, 0, verdict.waitNs) }
        keys[slot] = k
        tats[slot] = next
        return (true, verdict.remaining, 0)
    }

    /// The slot for `key`: its own, else a free one, else one whose time has passed, else the
    /// stalest of the 8 probed.
    private func find(_ key: UInt64, now: UInt64) -> Int {
        let start = Int(truncatingIfNeeded: key) & mask
        var choice = -1, stalest = start
        for step in 0..<8 {
            let i = (start + step) & mask
            if keys[i] == key { return i }
            if choice < 0 && (keys[i] == 0 || tats[i] <= now) { choice = i }
            if tats[i] < tats[stalest] { stalest = i }
        }
        return choice >= 0 ? choice : stalest
    }

    /// `max_keys` rounded up to a power of two (at least 16).
    static func capacity(for maxKeys: Int) -> Int {
        var capacity = 16
        while capacity < maxKeys { capacity <<= 1 }
        return capacity
    }

    /// Slots in the table (0 until first used).
    var capacity: Int { shared?.capacity ?? keys.count }

    var policyField: String { config.policyField }
}

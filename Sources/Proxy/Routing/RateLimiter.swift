/// One route's `rate_limit` on one worker: GCRA (the generic cell rate algorithm) over a bounded
/// table of keys, each holding one timestamp — its theoretical arrival time (TAT). A request at
/// `now` is let through when `max(TAT, now) + T − now ≤ τ + T` (T = per ÷ rate, τ = T × burst),
/// and then moves TAT on by T; so `burst + 1` requests may come at once and then one every T.
///
/// The table (allocated on first use: `max_keys` rounded up to a power of two, 16 bytes a key)
/// never grows: a new key takes a free slot among the 8 its hash points to, else one whose TAT
/// has passed (that key would start afresh anyway), else the one with the oldest TAT — a flood
/// of distinct keys costs no memory, only the forgetting of some keys (which then start afresh:
/// lenient, never stricter).
///
/// Threading: one worker's loop (a route's state is per worker; `scope: "worker"`).
final class RateLimiter {
    let config: RateLimitConfig
    /// T and τ, in ns.
    private let intervalNs: UInt64
    private let toleranceNs: UInt64
    /// The header a `header:NAME` key reads (lowercase).
    let headerName: [UInt8]
    private var keys: [UInt64] = []
    private var tats: [UInt64] = []
    private var mask = 0

    init(_ config: RateLimitConfig) {
        self.config = config
        intervalNs = max(1, UInt64(config.perMs) * 1_000_000 / UInt64(max(config.rate, 1)))
        toleranceNs = intervalNs * UInt64(config.burst)
        if case .header(let name) = config.key { headerName = Array(name.utf8) } else { headerName = [] }
    }

    /// The verdict for one request of `key` (a hash; 0 is reserved) at `now` (monotonic ns).
    /// `remaining`: requests that could follow at once; `waitNs`: how long a refused one must wait.
    func admit(key: UInt64, now: UInt64) -> (allowed: Bool, remaining: Int, waitNs: UInt64) {
        if keys.isEmpty {
            var capacity = 16
            while capacity < config.maxKeys { capacity <<= 1 }
            keys = [UInt64](repeating: 0, count: capacity)
            tats = [UInt64](repeating: 0, count: capacity)
            mask = capacity - 1
        }
        let k = key == 0 ? 1 : key
        let slot = find(k, now: now)
        let tat = keys[slot] == k ? max(tats[slot], now) : now
        let next = tat + intervalNs
        let ahead = next - now
        if ahead > toleranceNs + intervalNs {
            // Not stored: a refused request costs the key nothing.
            return (false, 0, ahead - toleranceNs - intervalNs)
        }
        keys[slot] = k
        tats[slot] = next
        return (true, Int((toleranceNs + intervalNs - ahead) / intervalNs), 0)
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

    /// Slots in the table (0 until first used).
    var capacity: Int { keys.count }

    /// `RateLimit-Policy` (IETF draft-ietf-httpapi-ratelimit-headers): the quota over a window of
    /// whole seconds (`per` rounded up, the quota scaled to it, rounded down).
    var policyField: String {
        let seconds = max(1, (config.perMs + 999) / 1000)
        let quota = Int(Double(config.rate) * Double(seconds * 1000) / Double(config.perMs))
        return "\"route\";q=\(quota);w=\(seconds)"
    }
}

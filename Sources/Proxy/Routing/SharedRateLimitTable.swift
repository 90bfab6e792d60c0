/// The buckets of one `scope: "proxy"` `rate_limit`: one GCRA table (see `CellRate`) that every
/// worker loop of the process reads and updates at once, without a lock — each key's TAT moves
/// on by compare-and-swap, so workers only ever contend on the cache line of a key they share.
///
/// Layout: `capacity` slots of two words, the key's hash and its TAT (ns, `Platform`'s monotonic
/// clock, the same in every thread), allocated zeroed up front (16 bytes a slot) and never
/// grown. A new key claims a slot (CAS on the key word) among the 8 its hash points to, the way
/// `RateLimiter` picks one. Two workers racing for the same free slot with different keys: one
/// wins, the other's request goes through uncharged (lenient). A slot claimed while another
/// worker moves the evicted key's TAT may start the new key with that TAT (stricter, for that
/// one moment of a table overflowing).
///
/// Ownership: made by the supervisor for a configuration generation (`ConfigGeneration`), kept
/// by later generations whose route has the same `rate_limit`; freed with the last reference.
/// Threading: any thread.
public final class SharedRateLimitTable: @unchecked Sendable {
    let config: RateLimitConfig
    let capacity: Int
    private let mask: Int
    /// `2 × capacity` words: key, TAT, key, TAT, …
    private let words: UnsafeMutablePointer<UInt64>

    public init(_ config: RateLimitConfig) {
        self.config = config
        capacity = RateLimiter.capacity(for: config.maxKeys)
        mask = capacity - 1
        words = .allocate(capacity: 2 * capacity)
        words.initialize(repeating: 0, count: 2 * capacity)
    }

    deinit { words.deallocate() }

    /// See `RateLimiter.admit`; `key` is not 0.
    func admit(key: UInt64, now: UInt64, rate: CellRate) -> (allowed: Bool, remaining: Int, waitNs: UInt64) {
        // Beaten to a free slot by another key: this request goes through uncharged.
        guard let slot = claim(key, now: now) else { return (true, config.burst, 0) }
        let tatWord = words + (2 * slot + 1)
        var tat = Atomics.sharedLoad(tatWord)
        while true {
            let verdict = rate.decide(tat: tat, now: now)
            guard let next = verdict.next else { return (false, 0, verdict.waitNs) }
            // Another worker moved TAT since the load: decide again with its value.
            if Atomics.sharedCompareExchange(tatWord, expected: &tat, desired: next) { return (true, verdict.remaining, 0) }
        }
    }

    /// The slot holding `key`, claiming one when it has none; nil when another worker claimed
    /// that slot for another key at the same moment.
    private func claim(_ key: UInt64, now: UInt64) -> Int? {
        let start = Int(truncatingIfNeeded: key) & mask
        var choice = -1, stalest = start, stalestTAT = UInt64.max
        for step in 0..<8 {
            let i = (start + step) & mask
            let held = Atomics.sharedLoad(words + 2 * i)
            if held == key { return i }
            let tat = Atomics.sharedLoad(words + (2 * i + 1))
            if choice < 0 && (held == 0 || tat <= now) { choice = i }
            if tat < stalestTAT { (stalest, stalestTAT) = (i, tat) }
        }
        let slot = choice >= 0 ? choice : stalest
        let tatBefore = Atomics.sharedLoad(words + (2 * slot + 1))
        var held = Atomics.sharedLoad(words + 2 * slot)
        if held == key { return slot }
        guard Atomics.sharedCompareExchange(words + 2 * slot, expected: &held, desired: key) else {
            return held == key ? slot : nil
        }
        // The evicted key's TAT is not this key's: start afresh, unless a worker that found this
        // key here already moved it on.
        var expected = tatBefore
        _ = Atomics.sharedCompareExchange(words + (2 * slot + 1), expected: &expected, desired: 0)
        return slot
    }
}

/// Where request counts and latency histograms sit inside a `CounterSlab`, and how one request
/// is recorded. The same block of counters serves a backend, an upstream's requests that got no
/// backend, and the proxy's own answers, so every view (Prometheus, the status page) reads them
/// one way.
enum RequestStats {
    /// Upper bounds of the latency buckets, in microseconds (Prometheus `le`, in seconds, when
    /// exposed). Dense around a millisecond, where proxied requests on a LAN land, so the status
    /// page's p50/p99 interpolate within narrow buckets; long tail up to a minute.
    static let boundsMicros: [UInt64] = [
        250, 500, 1000, 1500, 2000, 3000, 5000, 7500, 10_000, 15_000, 25_000, 50_000, 100_000,
        250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000, 60_000_000,
    ]
    /// Buckets including the last, unbounded one (`+Inf`).
    static let bucketCount = boundsMicros.count + 1

    /// Offsets of one request-stats block, relative to its start.
    /// Responses by status class: 1xx … 5xx.
    static let responses = 0
    static let classCount = 5
    /// Request duration histogram: per-bucket (not cumulative) counts, then the sum in µs.
    static let duration = responses + classCount
    static let durationSum = duration + bucketCount
    /// Words in one block.
    static let size = durationSum + 1

    /// A backend's slab: its request stats, then the upstream response time (backend picked →
    /// response head received) histogram and sum.
    static let upstreamDuration = size
    static let upstreamDurationSum = upstreamDuration + bucketCount
    static let backendSize = upstreamDurationSum + 1

    /// 1xx → 0 … 5xx → 4; anything else (no status) counts as 5xx.
    @inline(__always) static func classIndex(_ status: UInt16) -> Int {
        status >= 100 && status < 600 ? Int(status / 100) - 1 : 4
    }

    @inline(__always) static func bucket(micros: UInt64) -> Int {
        var i = 0
        let bounds = boundsMicros
        while i < bounds.count && micros > bounds[i] { i += 1 }
        return i
    }

    /// Counts one finished request in the block that starts at `base`.
    @inline(__always) static func record(_ slab: CounterSlab, at base: Int = 0, status: UInt16, micros: UInt64) {
        slab.add(base + responses + classIndex(status))
        slab.add(base + duration + bucket(micros: micros))
        slab.add(base + durationSum, micros)
    }

    /// Counts one upstream response time in a backend's slab.
    @inline(__always) static func recordUpstream(_ slab: CounterSlab, micros: UInt64) {
        slab.add(upstreamDuration + bucket(micros: micros))
        slab.add(upstreamDurationSum, micros)
    }
}

/// One request-stats block summed over every worker: what the endpoints render.
struct RequestTotals {
    var responses = [UInt64](repeating: 0, count: RequestStats.classCount)
    var buckets = [UInt64](repeating: 0, count: RequestStats.bucketCount)
    var sumMicros: UInt64 = 0

    init() {}

    /// Sums the block at `base` (a `duration` or `upstreamDuration` histogram, with responses
    /// when `withResponses`) over `slabs`.
    init(_ slabs: [CounterSlab], histogram: Int = RequestStats.duration, sum: Int = RequestStats.durationSum,
         withResponses: Bool = true) {
        for slab in slabs {
            if withResponses {
                for c in 0..<RequestStats.classCount { responses[c] &+= slab.load(RequestStats.responses + c) }
            }
            for b in 0..<RequestStats.bucketCount { buckets[b] &+= slab.load(histogram + b) }
            sumMicros &+= slab.load(sum)
        }
    }

    static func upstreamTimes(_ slabs: [CounterSlab]) -> RequestTotals {
        RequestTotals(slabs, histogram: RequestStats.upstreamDuration, sum: RequestStats.upstreamDurationSum,
                      withResponses: false)
    }

    var requests: UInt64 { responses.reduce(0, &+) }
    var observations: UInt64 { buckets.reduce(0, &+) }
}

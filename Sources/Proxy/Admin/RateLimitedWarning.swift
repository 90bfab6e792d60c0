/// A warning that a client can trigger at will (a scanner, an abusive HTTP/2 client), logged at
/// most once per `intervalMs` per worker with a count of the ones left out, so standard error
/// cannot be flooded. Threading: a value owned by one worker, its loop thread only.
struct RateLimitedWarning {
    private let intervalMs: UInt64
    private var lastAtMs: UInt64 = 0
    private var suppressed = 0

    init(intervalMs: UInt64 = 10_000) { self.intervalMs = intervalMs }

    /// Logs `line(n)`, `n` being how many were left out since the last line, unless one was
    /// logged less than `intervalMs` before `now`.
    mutating func log(now: UInt64, _ line: (_ leftOut: Int) -> String) {
        if lastAtMs != 0 && now &- lastAtMs < intervalMs { suppressed += 1; return }
        Log.warning(line(suppressed))
        lastAtMs = now
        suppressed = 0
    }
}

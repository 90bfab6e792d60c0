/// How many retries an upstream may send now (`retries.budget_percent`, `min_retries_per_s`): a
/// token bucket that each request fills by `budget_percent` / 100 of a token and time fills by
/// `min_retries_per_s` tokens a second; a retry takes one. Its capacity — ten seconds of the
/// floor, at least 10 — bounds a burst after a quiet spell; the long-run rate is the percentage
/// of requests plus the floor, so retries cannot multiply an overload (Finagle's RetryBudget).
///
/// Per upstream on one worker: no shared counter on the request path; with connections spread
/// over workers each worker's share tracks the whole. Threading: a value, one loop.
struct RetryBudget {
    private let deposit: Double
    private let perSecond: Double
    private let capacity: Double
    private var tokens: Double
    private var refilledAt: UInt64

    init(_ config: RetriesConfig, now: UInt64) {
        deposit = Double(config.budgetPercent) / 100
        perSecond = Double(config.minRetriesPerS)
        capacity = max(10 * perSecond, 10)
        tokens = capacity
        refilledAt = now
    }

    /// A request began (its first try).
    mutating func requestStarted() {
        tokens = min(capacity, tokens + deposit)
    }

    /// Takes a retry from the budget at `now` (ns); false when it is spent.
    mutating func withdraw(now: UInt64) -> Bool {
        if now > refilledAt {
            tokens = min(capacity, tokens + perSecond * Double(now - refilledAt) / 1e9)
            refilledAt = now
        }
        guard tokens >= 1 else { return false }
        tokens -= 1
        return true
    }
}

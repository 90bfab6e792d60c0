/// Round-robin over the healthy backends.
///
/// `tried` lets one request fail over to the next backend without picking the same one twice:
/// bit `i` set means backend `i` was already tried for this request.
public struct RoundRobinBalancer: Sendable {
    private var next = 0

    public init() {}

    /// The next healthy backend not yet tried, or `nil` when there is none.
    public mutating func pick(from backends: [Backend], excluding tried: UInt64 = 0) -> Int? {
        let n = backends.count
        guard n > 0 else { return nil }
        var i = 0
        while i < n {
            let candidate = (next + i) % n
            if backends[candidate].isHealthy && (candidate >= 64 || tried & (1 << UInt64(candidate)) == 0) {
                next = (candidate + 1) % n
                return candidate
            }
            i += 1
        }
        return nil
    }

    /// Whether any backend is healthy at all.
    public static func anyHealthy(_ backends: [Backend]) -> Bool {
        backends.contains { $0.isHealthy }
    }
}

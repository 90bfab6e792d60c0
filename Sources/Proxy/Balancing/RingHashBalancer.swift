/// Consistent hashing on a ring (Ketama-style): every backend owns points on a 64-bit circle, in
/// proportion to its weight, and a request goes to the owner of the first point at or after the
/// hash of its key, or the next available, untried owner after it. When a backend leaves (down,
/// ejected, or removed by a reload) only the keys on its points move; the others keep theirs.
///
/// Points are hashes of `URL-k` (`StableHash`), not of ids (which default from list positions):
/// every worker and every proxy process builds the same ring whatever the order or names of the
/// backends. Weights are divided by their greatest common divisor; 160 points per unit of weight,
/// or — when that would pass `maxPoints` — points in proportion to weight within it.
/// Threading: a value, one loop.
struct RingHashBalancer {
    private(set) var points: [UInt64] = []
    private(set) var owners: [Int32] = []
    /// `buckets[k]`: the index of the first point whose top bits are `k` or more (one entry per
    /// prefix, about as many prefixes as points, plus an end), so a lookup searches only the
    /// few points of its key's prefix instead of the whole ring.
    private var buckets: [Int32] = []
    private var bucketShift: UInt64 = 64

    static let pointsPerWeight = 160
    static let maxPoints = 16_384

    init(names: [String], weights: [Int]) {
        let g = weights.reduce(0) { gcd($0, max($1, 1)) }
        let units = weights.map { max($0, 1) / max(g, 1) }
        let total = max(units.reduce(0, +), 1)
        // 160 points per unit while that fits; past `maxPoints`, points in proportion to weight
        // (at least one per backend).
        let counts = total * Self.pointsPerWeight <= Self.maxPoints
            ? units.map { $0 * Self.pointsPerWeight }
            : units.map { max(1, Int((Double(Self.maxPoints) * Double($0) / Double(total)).rounded())) }
        var ring: [(point: UInt64, owner: Int32)] = []
        ring.reserveCapacity(counts.reduce(0, +))
        for (i, name) in names.enumerated() {
            for k in 0..<counts[i] { ring.append((StableHash.hash("\(name)-\(k)"), Int32(i))) }
        }
        // Ties (two names hashing to one point) go to the lower hash of the name: the same on
        // every worker whatever the order.
        let nameHash = names.map { StableHash.hash($0) }
        ring.sort { $0.point != $1.point ? $0.point < $1.point : nameHash[Int($0.owner)] < nameHash[Int($1.owner)] }
        points = ring.map(\.point)
        owners = ring.map(\.owner)
        // 2^bits prefixes with bits ≈ log2(points), so about one point per prefix.
        let bits = min(16, 64 - (UInt64(max(points.count, 2)) - 1).leadingZeroBitCount)
        bucketShift = 64 - UInt64(bits)
        let prefixes = 1 << bits
        buckets = [Int32](repeating: Int32(points.count), count: prefixes + 1)
        var at = points.count
        // From the last prefix down: each prefix starts at the first point with that prefix or
        // a higher one.
        for k in stride(from: prefixes - 1, through: 0, by: -1) {
            while at > 0 && points[at - 1] >> bucketShift >= UInt64(k) { at -= 1 }
            buckets[k] = Int32(at)
        }
    }

    func pick(key: UInt64, from backends: [Backend], excluding tried: AttemptSet) -> Int? {
        guard !points.isEmpty else { return nil }
        // First point >= key (wrapping to the start), searched among the points of the key's prefix.
        let k = Int(key >> bucketShift)
        var low = 0
        buckets.withUnsafeBufferPointer { bucket in
            points.withUnsafeBufferPointer { point in
                low = Int(bucket[k])
                var high = Int(bucket[k + 1])
                while low < high {
                    let mid = (low + high) >> 1
                    if point[mid] < key { low = mid + 1 } else { high = mid }
                }
            }
        }
        var at = low == points.count ? 0 : low
        for _ in 0..<points.count {
            let owner = Int(owners[at])
            if backends.canTake(owner, tried) { return owner }
            at += 1
            if at == points.count { at = 0 }
        }
        return nil
    }
}

func gcd(_ a: Int, _ b: Int) -> Int {
    var (x, y) = (a, b)
    while y != 0 { (x, y) = (y, x % y) }
    return x
}

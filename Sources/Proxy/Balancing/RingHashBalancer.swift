/// Consistent hashing on a ring (Ketama-style): every backend owns points on a 64-bit circle —
/// `160 × weight` of them — and a request goes to the owner of the first point at or after the
/// hash of its key, or the next healthy, untried owner after it. When a backend leaves (down,
/// or removed by a reload) only the keys on its points move; the others keep their backend.
///
/// Points are hashes of `id-k` (`StableHash`): every worker and every proxy process builds the
/// same ring. Threading: a value, one loop.
struct RingHashBalancer {
    private(set) var points: [UInt64] = []
    private var owners: [Int32] = []

    static let pointsPerWeight = 160

    init(ids: [String], weights: [Int]) {
        var ring: [(point: UInt64, owner: Int32)] = []
        for (i, id) in ids.enumerated() {
            let count = Self.pointsPerWeight * max(weights[i], 1)
            ring.reserveCapacity(ring.count + count)
            for k in 0..<count { ring.append((StableHash.hash("\(id)-\(k)"), Int32(i))) }
        }
        // Ties (two ids hashing to one point) go to the lower index: the same on every worker.
        ring.sort { $0.point != $1.point ? $0.point < $1.point : $0.owner < $1.owner }
        points = ring.map(\.point)
        owners = ring.map(\.owner)
    }

    func pick(key: UInt64, from backends: [Backend], excluding tried: AttemptSet) -> Int? {
        guard !points.isEmpty else { return nil }
        // First point >= key (wrapping to the start).
        var low = 0, high = points.count
        while low < high {
            let mid = (low + high) / 2
            if points[mid] < key { low = mid + 1 } else { high = mid }
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

/// Consistent hashing through a Maglev lookup table (Eisenbud et al., NSDI 2016, weighted): each
/// available backend walks its own permutation of the `tableSize` slots (offset and skip from
/// two hashes of its URL) taking the next free one in turns until it holds its share of the
/// slots, in proportion to its weight. A request's key picks a slot: one lookup, no
/// search. When a backend leaves, the table is rebuilt over the rest and about 1/n of the
/// slots change owner (a little more than a ring moves, in exchange for a flat lookup).
///
/// The table holds only available backends (`rebuild` when availability changes, once per
/// worker sweep). A backend this request already tried is skipped by looking at the next slots,
/// a bounded number of them; when they give nothing (a stale table, every member tried) the
/// caller goes round-robin. Permutations come from hashes of the backends' URLs, and members
/// take their turns in the order of those hashes: the table does not depend on ids (which
/// default from positions) nor on the order of the list.
///
/// Memory: `tableSize` 16-bit entries (128 KiB) per upstream per worker.
/// Threading: a value, one loop.
struct MaglevBalancer {
    /// A prime well above 100 × the backends (the paper's guidance for even shares); Envoy's default.
    static let tableSize = 65_537
    /// Slots looked at past the key's one before giving up.
    static let scanLimit = 4096

    private var table: [UInt16] = []
    private let offsets: [Int]
    private let skips: [Int]
    private let weights: [Int]

    /// Member order for filling: by the hash of the name.
    private let fillOrder: [Int]

    /// No members (the state a balancer of another policy keeps).
    static var empty: MaglevBalancer { MaglevBalancer(names: [], weights: [], healthy: []) }

    init(names: [String], weights: [Int], healthy: [Bool]) {
        let m = UInt64(Self.tableSize)
        offsets = names.map { Int(StableHash.hash($0, seed: 0x6d61_676c_6576) % m) }
        skips = names.map { Int(StableHash.hash($0, seed: 0x736b_6970) % (m - 1)) + 1 }
        self.weights = weights.map { max($0, 1) }
        let order = names.map { StableHash.hash($0) }
        fillOrder = names.indices.sorted { order[$0] != order[$1] ? order[$0] < order[$1] : $0 < $1 }
        rebuild(healthy: healthy)
    }

    /// Refills the table over the backends marked healthy (empty when none is).
    mutating func rebuild(healthy: [Bool]) {
        let m = Self.tableSize
        let members = fillOrder.filter { $0 < min(healthy.count, Int(UInt16.max)) && healthy[$0] }
        guard !members.isEmpty else { table = []; return }
        // Each member's share of the slots, in proportion to weight (the rounding remainder to
        // the first members in fill order); then members take turns, each placing one entry per
        // round until its share is placed. Members that are done leave the rotation, so a pool
        // with one heavy backend and many light ones costs about one step per slot, not
        // slots × members.
        let total = members.reduce(0) { $0 + weights[$1] }
        var target = [Int](repeating: 0, count: offsets.count)
        var assigned = 0
        for i in members {
            target[i] = m * weights[i] / total
            assigned += target[i]
        }
        var k = 0
        while assigned < m { target[members[k % members.count]] += 1; assigned += 1; k += 1 }
        var filled = [UInt16](repeating: UInt16.max, count: m)
        var next = [Int](repeating: 0, count: offsets.count)
        var placed = [Int](repeating: 0, count: offsets.count)
        var active = members.filter { target[$0] > 0 }
        var count = 0
        while count < m && !active.isEmpty {
            var stillActive: [Int] = []
            stillActive.reserveCapacity(active.count)
            for i in active {
                var slot = (offsets[i] + next[i] * skips[i]) % m
                while filled[slot] != UInt16.max {
                    next[i] += 1
                    slot = (offsets[i] + next[i] * skips[i]) % m
                }
                filled[slot] = UInt16(i)
                next[i] += 1
                placed[i] += 1
                count += 1
                if placed[i] < target[i] { stillActive.append(i) }
            }
            active = stillActive
        }
        table = filled
    }

    func pick(key: UInt64, from backends: [Backend], excluding tried: AttemptSet) -> Int? {
        guard !table.isEmpty else { return nil }
        var slot = Int(key % UInt64(table.count))
        // The key's slot; for a retry (or a verdict not yet rebuilt in), the next slots that name
        // a usable backend — at most `scanLimit` of them (slots of different members interleave,
        // so that many cover every member many times over).
        for _ in 0..<min(table.count, Self.scanLimit) {
            let owner = Int(table[slot])
            if backends.canTake(owner, tried) { return owner }
            slot += 1
            if slot == table.count { slot = 0 }
        }
        return nil
    }

    /// How many slots each backend owns (tests and `/_status`).
    func shares(count: Int) -> [Int] {
        var shares = [Int](repeating: 0, count: count)
        for owner in table where Int(owner) < count { shares[Int(owner)] += 1 }
        return shares
    }
}

/// The backends already tried for one request, by index in their upstream's list — any number
/// of them.
///
/// Indices below 64 live in one inline word, so the usual pool sizes never allocate; a larger
/// index allocates a word array once (its capacity is kept across requests by `removeAll`).
/// A value owned by one exchange. Threading: loop thread only.
public struct AttemptSet: Sendable {
    private var low: UInt64 = 0
    private var high: [UInt64] = []

    public init() {}

    public var isEmpty: Bool { low == 0 && high.allSatisfy { $0 == 0 } }

    @inline(__always)
    public func contains(_ index: Int) -> Bool {
        if index < 64 { return low & (1 << UInt64(index)) != 0 }
        return containsHigh(index)
    }

    private func containsHigh(_ index: Int) -> Bool {
        let word = index / 64 - 1
        return word < high.count && high[word] & (1 << UInt64(index % 64)) != 0
    }

    public mutating func insert(_ index: Int) {
        if index < 64 { low |= 1 << UInt64(index); return }
        let word = index / 64 - 1
        if word >= high.count { high.append(contentsOf: repeatElement(0, count: word - high.count + 1)) }
        high[word] |= 1 << UInt64(index % 64)
    }

    public mutating func remove(_ index: Int) {
        if index < 64 { low &= ~(1 << UInt64(index)); return }
        let word = index / 64 - 1
        if word < high.count { high[word] &= ~(1 << UInt64(index % 64)) }
    }

    public mutating func removeAll() {
        low = 0
        if !high.isEmpty { high.removeAll(keepingCapacity: true) }
    }
}

extension Array where Element == Backend {
    /// Whether `self[index]` may take an attempt of a request that already tried `tried`:
    /// it exists, is available (healthy, not ejected), has room under its request limit and was
    /// not tried yet. What every policy asks of a candidate.
    @inline(__always)
    func canTake(_ index: Int, _ tried: AttemptSet) -> Bool {
        index < count && self[index].isAvailable && self[index].hasRoom && !tried.contains(index)
    }

    /// Whether any backend may take an attempt of a request that already tried `tried`.
    func canTakeAny(_ tried: AttemptSet) -> Bool {
        indices.contains { canTake($0, tried) }
    }
}

/// A block of 64-bit counters with a single writer — one worker loop — and any number of
/// readers: a scrape of `/_metrics` or `/_status.json` on whichever worker answers it.
///
/// Writes are a relaxed atomic load and store (`Atomics.counterAdd`), not a read-modify-write: with
/// one writer no increment can be lost, and on x86-64 and arm64 both are plain moves — the
/// request path pays no bus lock and no fence. Readers may see a counter a few increments behind,
/// which a scrape tolerates by nature.
///
/// The block is 128-byte aligned and a whole number of 128-byte lines, so two workers' slabs
/// never share a cache line (it would bounce between their cores on every request).
///
/// Threading: `Sendable`; `add` and `set` from the owning worker only, `load` from anywhere.
/// Ownership: allocated here, freed when the last reference (a config generation, a worker's
/// view) goes.
public final class CounterSlab: @unchecked Sendable {
    private let words: UnsafeMutablePointer<UInt64>
    public let count: Int

    public init(count: Int) {
        self.count = count
        let bytes = max((count * 8 + 127) & ~127, 128)
        let raw = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 128)
        raw.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
        words = raw.bindMemory(to: UInt64.self, capacity: bytes / 8)
    }

    deinit { UnsafeMutableRawPointer(words).deallocate() }

    @inline(__always) func add(_ index: Int, _ amount: UInt64 = 1) { Atomics.counterAdd(words + index, amount) }

    /// For gauges the owner tracks itself (open connections).
    @inline(__always) func set(_ index: Int, _ value: UInt64) { Atomics.counterStore(words + index, value) }

    public func load(_ index: Int) -> UInt64 { Atomics.counterLoad(words + index) }
}

extension Array where Element == CounterSlab {
    /// One counter summed over every worker's slab.
    func sum(_ index: Int) -> UInt64 { reduce(0) { $0 &+ $1.load(index) } }
}

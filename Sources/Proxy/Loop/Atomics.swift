import CUV

/// Relaxed atomic counter words for code outside `Loop/` (`CounterSlab`), so that only `Loop/`
/// imports the C modules (the layering rule, `Scripts/check-layering.sh`). Each wraps one
/// `static inline` function of `CUV/shim.h` and is `@inline(__always)`: the request path pays
/// nothing for the wrapper — on x86-64 and arm64 each compiles to a plain move.
///
/// Contract: a word has a single writer (one thread calls `counterAdd` / `counterStore` on it)
/// and any number of readers (`counterLoad`, from any thread). All accesses are relaxed atomics:
/// no ordering with other memory, and a reader may see a value a few writes behind. `counterAdd`
/// is a load then a store, not a read-modify-write: two writers would lose increments.
enum Atomics {
    /// Adds `amount` to `*word` (wrapping). Single writer only.
    @inline(__always)
    static func counterAdd(_ word: UnsafeMutablePointer<UInt64>, _ amount: UInt64) {
        cuv_counter_add(word, amount)
    }

    /// Stores `value` into `*word`. Single writer only.
    @inline(__always)
    static func counterStore(_ word: UnsafeMutablePointer<UInt64>, _ value: UInt64) {
        cuv_counter_store(word, value)
    }

    /// Reads `*word`; any thread.
    @inline(__always)
    static func counterLoad(_ word: UnsafePointer<UInt64>) -> UInt64 {
        cuv_counter_load(word)
    }

    /// Shared words (several writers, any thread): an acquire load.
    @inline(__always)
    static func sharedLoad(_ word: UnsafeMutablePointer<UInt64>) -> UInt64 {
        cuv_shared_load(word)
    }

    /// Shared words: a release store.
    @inline(__always)
    static func sharedStore(_ word: UnsafeMutablePointer<UInt64>, _ value: UInt64) {
        cuv_shared_store(word, value)
    }

    /// Shared words: replaces `*word` with `desired` if it still holds `expected`; otherwise
    /// returns false and puts what it holds in `expected`.
    @inline(__always)
    static func sharedCompareExchange(_ word: UnsafeMutablePointer<UInt64>, expected: inout UInt64, desired: UInt64) -> Bool {
        cuv_shared_cas(word, &expected, desired) != 0
    }
}

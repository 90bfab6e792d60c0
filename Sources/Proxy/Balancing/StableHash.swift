/// A 64-bit hash that is the same in every process and on every run (Swift's `Hasher` is seeded
/// per process): consistent hashing must send a key to the same backend from every worker, after
/// a restart, and from every proxy in front of the same pool.
///
/// FNV-1a over the bytes, then MurmurHash3's 64-bit finaliser (FNV alone leaves the high bits of
/// short keys poorly mixed, and the ring and Maglev tables index by them).
enum StableHash {
    static func hash(_ bytes: UnsafeRawBufferPointer, seed: UInt64 = 0) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325 ^ seed
        for b in bytes {
            h ^= UInt64(b)
            h = h &* 0x0000_0100_0000_01b3
        }
        return mix(h)
    }

    static func hash(_ text: String, seed: UInt64 = 0) -> UInt64 {
        var text = text
        return text.withUTF8 { hash(UnsafeRawBufferPointer($0), seed: seed) }
    }

    static func hash(_ bytes: [UInt8], _ range: Range<Int>, seed: UInt64 = 0) -> UInt64 {
        bytes.withUnsafeBufferPointer { hash(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: $0[range])), seed: seed) }
    }

    /// MurmurHash3's fmix64: every input bit affects every output bit.
    @inline(__always)
    static func mix(_ value: UInt64) -> UInt64 {
        var k = value
        k ^= k >> 33
        k = k &* 0xff51_afd7_ed55_8ccd
        k ^= k >> 33
        k = k &* 0xc4ce_b9fe_1a85_ec53
        k ^= k >> 33
        return k
    }
}

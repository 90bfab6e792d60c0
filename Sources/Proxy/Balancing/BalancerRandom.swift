/// The random numbers balancing choices draw on (random policy, power of two choices, ties of
/// least request): wyrand, one multiply-and-xor step per number. Not cryptographic — a client
/// cannot steer it usefully: it sees only which backend answered.
///
/// Seeded from the system generator once per balancer. Threading: a value, one loop.
struct BalancerRandom: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    init() {
        var system = SystemRandomNumberGenerator()
        state = system.next()
    }

    mutating func next() -> UInt64 {
        state &+= 0xa076_1d64_78bd_642f
        let product = state.multipliedFullWidth(by: state ^ 0xe703_7ed1_a0b4_28db)
        return product.high ^ product.low
    }

    /// Uniform in `0..<n` (`n > 0`): Lemire's multiply-shift (the bias is below 2^-32 for any
    /// pool size a proxy sees).
    mutating func below(_ n: Int) -> Int {
        Int(truncatingIfNeeded: next().multipliedFullWidth(by: UInt64(n)).high)
    }
}

import CCrypt

/// Checks a password against an htpasswd hash with libxcrypt's `crypt_rn` (bcrypt `$2y$` /
/// `$2b$` / `$2a$`, SHA-crypt `$5$` / `$6$`). Deliberately slow (that is the
/// point of those hashes): call it on the thread pool (`BackgroundWork`), never on a loop.
/// Threading: any thread; each call has its own scratch space.
enum PasswordHash {
    /// The hash kinds accepted in htpasswd files, at a cost a check can afford: bcrypt up to
    /// cost 16 (about 4 s a check here), SHA-crypt up to 1,000,000 rounds. (yescrypt is not
    /// taken: its memory cost, up to GiBs a check, is set by the file.)
    static func isSupported(_ hash: String) -> Bool {
        let parts = hash.split(separator: "$", omittingEmptySubsequences: false)
        guard parts.count >= 4, parts[0].isEmpty else { return false }
        switch parts[1] {
        case "2y", "2b", "2a":
            guard let cost = Int(parts[2]), (4...16).contains(cost) else { return false }
            return parts[3].count == 53
        case "5", "6":
            if parts[2].hasPrefix("rounds=") {
                guard let rounds = Int(parts[2].dropFirst(7)), rounds <= 1_000_000, parts.count >= 5 else { return false }
                return !parts[4].isEmpty
            }
            return !parts[3].isEmpty
        default:
            return false
        }
    }

    /// Whether `password` hashes to `hash` (compared in constant time).
    static func verify(_ password: [UInt8], against hash: String) -> Bool {
        let scratch = UnsafeMutablePointer<crypt_data>.allocate(capacity: 1)
        defer { scratch.deallocate() }
        scratch.initialize(to: crypt_data())
        var phrase = password.map { CChar(bitPattern: $0) }
        guard !phrase.contains(0) else { return false }
        phrase.append(0)
        let computed: [UInt8]? = hash.withCString { setting -> [UInt8]? in
            guard let out = crypt_rn(phrase, setting, scratch, Int32(MemoryLayout<crypt_data>.size)) else { return nil }
            return Array(String(cString: out).utf8)
        }
        guard let computed, computed.first != UInt8(ascii: "*") else { return false }
        let expected = Array(hash.utf8)
        guard computed.count == expected.count else { return false }
        var difference: UInt8 = 0
        for i in computed.indices { difference |= computed[i] ^ expected[i] }
        return difference == 0
    }
}

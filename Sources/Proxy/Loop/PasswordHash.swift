import CCrypt

/// Checks a password against an htpasswd hash with libxcrypt's `crypt_rn` (bcrypt `$2y$` /
/// `$2b$` / `$2a$`, SHA-crypt `$5$` / `$6$`, yescrypt `$y$`). Deliberately slow (that is the
/// point of those hashes): call it on the thread pool (`BackgroundWork`), never on a loop.
/// Threading: any thread; each call has its own scratch space.
enum PasswordHash {
    /// The hash kinds accepted in htpasswd files.
    static func isSupported(_ hash: String) -> Bool {
        ["$2y$", "$2b$", "$2a$", "$5$", "$6$", "$y$"].contains { hash.hasPrefix($0) }
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

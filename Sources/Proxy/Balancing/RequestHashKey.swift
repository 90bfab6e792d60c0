/// The hash of a request's `hash_key` (`StableHash`), for `ring_hash` and `maglev`: nil when the
/// request does not carry the key (no such field, cookie or query parameter, or an empty
/// value — all those would pile onto one backend), which sends it round-robin. Values are hashed as sent — no decoding, no case folding — so one client's key
/// always lands on one backend.
///
/// Threading: pure functions over the request head.
enum RequestHashKey {
    /// What is hashed, without the name (`HashKey`'s cases): switching on it costs no copy of
    /// a payload on the request path.
    enum Kind: UInt8 {
        case clientIP, path, header, cookie, query

        init(_ key: HashKey) {
            switch key {
            case .clientIP: self = .clientIP
            case .path: self = .path
            case .header: self = .header
            case .cookie: self = .cookie
            case .query: self = .query
            }
        }
    }

    /// `name`: the header, cookie or query parameter name as bytes (`LoadBalancer.keyName`),
    /// lowercase for a header.
    /// `target`: the origin-form target (`/path?query`; for an absolute-form request, its part
    /// after the authority), as routing sees it.
    static func hash(_ key: Kind, name: [UInt8], head: RequestHead, target t: Range<Int>, clientIP: [UInt8]) -> UInt64? {
        let b = head.bytes
        switch key {
        case .clientIP:
            return clientIP.withUnsafeBytes { StableHash.hash($0) }
        case .path:
            var end = t.lowerBound
            while end < t.upperBound && b[end] != UInt8(ascii: "?") && b[end] != UInt8(ascii: "#") { end += 1 }
            return StableHash.hash(b, t.lowerBound..<end)
        case .header:
            // Over raw buffers: this runs on every request of a hashing pool, and the checked
            // array accesses were most of its cost (callgrind).
            return b.withUnsafeBufferPointer { bytes -> UInt64? in
                head.fields.withUnsafeBufferPointer { fields -> UInt64? in
                    name.withUnsafeBufferPointer { lower -> UInt64? in
                        let n = lower.count
                        for field in fields where field.name.count == n {
                            var k = 0
                            let at = field.name.lowerBound
                            while k < n && asciiLower(bytes[at + k]) == lower[k] { k += 1 }
                            guard k == n else { continue }
                            return field.value.isEmpty ? nil
                                : StableHash.hash(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: bytes[field.value])))
                        }
                        return nil
                    }
                }
            }
        case .cookie:
            for field in head.fields where field.name.count == 6 && b.equalsIgnoringCase(field.name, "cookie") {
                if let value = pairValue(b, field.value, separator: UInt8(ascii: ";"), name: name) {
                    return value.isEmpty ? nil : StableHash.hash(b, value)
                }
            }
            return nil
        case .query:
            var start = t.lowerBound
            while start < t.upperBound && b[start] != UInt8(ascii: "?") { start += 1 }
            guard start < t.upperBound else { return nil }
            var end = start + 1
            while end < t.upperBound && b[end] != UInt8(ascii: "#") { end += 1 }
            guard let value = pairValue(b, (start + 1)..<end, separator: UInt8(ascii: "&"), name: name), !value.isEmpty else { return nil }
            return StableHash.hash(b, value)
        }
    }

    /// In `list` (`a=1; b=2` or `a=1&b=2`), the value of the first `name=` element; spaces
    /// around elements are skipped.
    static func pairValue(_ b: [UInt8], _ list: Range<Int>, separator: UInt8, name: [UInt8]) -> Range<Int>? {
        var i = list.lowerBound
        while i < list.upperBound {
            while i < list.upperBound && (b[i] == UInt8(ascii: " ") || b[i] == UInt8(ascii: "\t")) { i += 1 }
            var end = i
            while end < list.upperBound && b[end] != separator { end += 1 }
            // Element i..<end: does it start with "name="?
            if end - i > name.count && b[i + name.count] == UInt8(ascii: "=") {
                var same = true
                for k in 0..<name.count where b[i + k] != name[k] { same = false; break }
                if same { return (i + name.count + 1)..<end }
            }
            i = end + 1
        }
        return nil
    }
}

/// `X-Request-Id`: every request gets one, sent to the backend, returned to the client (and, with
/// the access log, written there). A well-formed id the client sent is kept, so a trace can start
/// before the proxy; otherwise the worker makes one.
///
/// A generated id is this worker's random 64-bit prefix and a 16-digit hex counter
/// (`9f3c2a61d07b44e1-000000000000002a`): unique across workers and restarts without
/// coordination. The counter is advanced in place like an odometer, so making an id costs a few
/// byte operations and no allocation. Threading: one per worker, loop thread.
struct RequestIDGenerator {
    /// The last id handed out.
    private(set) var current: [UInt8]
    private static let digits = Array("0123456789abcdef".utf8)

    init() {
        var rng = SystemRandomNumberGenerator()
        let random: UInt64 = rng.next()
        var id: [UInt8] = []
        for shift in stride(from: 60, through: 0, by: -4) { id.append(Self.digits[Int((random >> UInt64(shift)) & 0xF)]) }
        id.append(UInt8(ascii: "-"))
        id.append(contentsOf: [UInt8](repeating: UInt8(ascii: "0"), count: 16))
        current = id
    }

    /// Advances the counter and copies the new id into `id` (whose capacity is reused).
    mutating func next(into id: inout [UInt8]) {
        current.withUnsafeMutableBufferPointer { b in
            var i = b.count - 1
            while i > 16 {  // the counter digits; past 16^16 ids it wraps
                if b[i] == UInt8(ascii: "f") { b[i] = UInt8(ascii: "0"); i -= 1; continue }
                b[i] = b[i] == UInt8(ascii: "9") ? UInt8(ascii: "a") : b[i] + 1
                break
            }
        }
        if id.count == current.count {
            // The usual case (the connection's previous id was generated too): one memcpy.
            id.withUnsafeMutableBytes { dst in current.withUnsafeBytes { dst.copyMemory(from: $0) } }
        } else {
            id.removeAll(keepingCapacity: true)
            id.append(contentsOf: current)
        }
    }

    /// Whether a client's id can be passed on as is: 1–128 characters from letters, digits and
    /// `-_.:+/=` (UUIDs, ULIDs, base64, AWS/Heroku styles), so nothing odd reaches logs or backends.
    static func isWellFormed(_ b: [UInt8], _ value: Range<Int>) -> Bool {
        guard !value.isEmpty, value.count <= 128 else { return false }
        for i in value {
            let c = b[i]
            let ok = (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A)
                || c == 0x2D || c == 0x5F || c == 0x2E || c == 0x3A || c == 0x2B || c == 0x2F || c == 0x3D
            if !ok { return false }
        }
        return true
    }
}

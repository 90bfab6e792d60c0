import CTLS
import Glibc

/// What a TLS listener or TLS client is configured with, built once and shared (read-only) by
/// every worker loop: certificates picked by SNI, protocol versions, ALPN. A reload builds a new
/// one; sessions already made keep theirs alive by reference.
///
/// Wraps the engine's C context (`CTLS`, the only code that knows the TLS library).
/// Threading: immutable after `init`; sessions may be made from it on any thread.
public final class TLSContext: @unchecked Sendable {
    let context: OpaquePointer
    public let isServer: Bool

    /// A server context from PEM files: each `cert` holds a chain (leaf first), `key` its key.
    /// `minVersion` is "1.2" or "1.3"; `alpn` the protocols offered, most preferred first;
    /// tickets (sealed with the process-wide keys, `rotateTicketKeys`) stay valid for
    /// `ticketLifetimeS` seconds, 0 turning resumption off. An expired certificate or one without
    /// subjectAltName is refused. Throws a one-line reason naming the file at fault.
    public init(certificates: [(cert: String, key: String)], minVersion: String = "1.2", alpn: [String] = ["http/1.1"],
                ticketLifetimeS: Int = 7200) throws(TLSSetupError) {
        let wire = Self.alpnWire(alpn)
        var err = [CChar](repeating: 0, count: 512)
        let made: OpaquePointer? = withCStrings(certificates.map(\.cert)) { certs in
            withCStrings(certificates.map(\.key)) { keys in
                wire.withUnsafeBufferPointer { a in
                    ctls_server_context_new(certs, keys, Int32(certificates.count), minVersion == "1.3" ? 13 : 12,
                                            a.baseAddress, a.count, ticketLifetimeS, &err, err.count)
                }
            }
        }
        guard let made else { throw TLSSetupError(message: String(decoding: err.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)) }
        context = made
        isServer = true
    }

    /// A client context: `caFile` (PEM) or the system's store; `verify: false` accepts any peer;
    /// `certificate` a client certificate and key for servers that ask for one (mutual TLS).
    public init(clientCAFile caFile: String?, verify: Bool = true, alpn: [String] = ["http/1.1"],
                certificate: (cert: String, key: String)? = nil) throws(TLSSetupError) {
        let wire = Self.alpnWire(alpn)
        var err = [CChar](repeating: 0, count: 512)
        let made = wire.withUnsafeBufferPointer { a in
            ctls_client_context_new(caFile, verify ? 1 : 0, a.baseAddress, a.count, certificate?.cert, certificate?.key, &err, err.count)
        }
        guard let made else { throw TLSSetupError(message: String(decoding: err.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)) }
        context = made
        isServer = false
    }

    /// Takes ownership of a context the engine made.
    init(adopting context: OpaquePointer, isServer: Bool) {
        self.context = context
        self.isServer = isServer
    }

    deinit { ctls_context_free(context) }

    /// Seals new session tickets with a fresh key from now on; tickets sealed with the two keys
    /// before it still resume. The keys are the process's (every worker, every reload), so this
    /// is called from one place: the supervisor's timer.
    public static func rotateTicketKeys() {
        if ctls_ticket_keys_rotate() != 0 { Log.warning("TLS: no random bytes for a new session ticket key; the old one stays") }
    }

    /// The certificates' subject alternative names and expiry (seconds since the epoch), in the
    /// order given: what `proxy --check` prints.
    public var certificates: [(names: [String], notAfter: Int64)] {
        (0..<Int(ctls_context_certificate_count(context))).map { i in
            var buf = [CChar](repeating: 0, count: 4096)
            let n = ctls_context_certificate_names(context, Int32(i), &buf, buf.count)
            let text = String(decoding: buf.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            return (text.isEmpty ? [] : text.split(separator: ",").map(String.init), ctls_context_certificate_not_after(context, Int32(i)))
        }
    }

    /// ALPN's wire format: each name prefixed by its length.
    static func alpnWire(_ names: [String]) -> [UInt8] {
        var wire: [UInt8] = []
        for name in names where !name.isEmpty && name.utf8.count < 256 {
            wire.append(UInt8(name.utf8.count))
            wire.append(contentsOf: name.utf8)
        }
        return wire
    }
}

/// A client's resumable TLS session (a ticket from the server), offered by the next connection
/// to the same backend so it resumes instead of paying a full handshake. Made from one
/// `TLSContext` and only offered to sessions of that context.
///
/// Threading: immutable; owned by one worker's loop.
public final class TLSResumption {
    let pointer: UnsafeMutableRawPointer
    /// The context it came from (a session of another context cannot resume it).
    let context: TLSContext

    init(_ pointer: UnsafeMutableRawPointer, context: TLSContext) {
        self.pointer = pointer
        self.context = context
    }

    deinit { ctls_resumption_free(pointer) }
}

/// Why a TLS context could not be built (a file, a key, a setting), in one line.
public struct TLSSetupError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public var description: String { message }
}

/// Calls `body` with a C array of C strings for `strings`, valid during the call.
func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
    let copies = strings.map { strdup($0) }
    defer { copies.forEach { free($0) } }
    let pointers = copies.map { UnsafePointer<CChar>($0) }
    return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
}

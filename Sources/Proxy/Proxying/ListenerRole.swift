/// What one listener does with its connections under one configuration: speak TLS (with which
/// context and deadline) or cleartext, redirect to HTTPS, add HSTS. Built per worker with its
/// `ServerSettings`; a connection keeps the role it was accepted with.
///
/// Threading: immutable; made and read on one worker's loop.
final class ListenerRole: Sendable {
    /// The TLS context of a TLS listener; nil for cleartext.
    let tls: TLSContext?
    let handshakeTimeoutMs: UInt64
    /// A cleartext listener with `redirect_to_https`: the HTTPS port to send clients to.
    let redirectPort: UInt16?
    /// `Strict-Transport-Security: …\r\n`, added to responses on a TLS listener with `hsts`.
    let hstsField: [UInt8]?
    /// The same field's value alone, for HTTP/2 responses.
    let hstsValue: [UInt8]?
    /// Connections start with a PROXY protocol header (`proxy_protocol`).
    let expectsProxyHeader: Bool

    init(_ listener: ListenerConfig, tls: TLSContext?, httpsPort: UInt16?) {
        self.tls = tls
        handshakeTimeoutMs = UInt64(listener.tls?.handshakeTimeoutMs ?? 10000)
        redirectPort = listener.redirectToHTTPS && tls == nil ? httpsPort ?? 443 : nil
        hstsField = tls != nil ? listener.tls?.hsts.map { Array("Strict-Transport-Security: \($0)\r\n".utf8) } : nil
        hstsValue = tls != nil ? listener.tls?.hsts.map { Array($0.utf8) } : nil
        expectsProxyHeader = listener.proxyProtocol
    }

    /// A cleartext listener that is neither TLS nor redirecting (tests; the admin listener).
    static let cleartext = ListenerRole(ListenerConfig(address: ListenAddress(host: "", port: 0)), tls: nil, httpsPort: nil)
}

/// `"inspect"`: the request inspector (`/_inspect`, `admin.inspect_path`): recent exchanges
/// with their heads, bodies (up to `max_body_bytes` each), timings and attempts, a live page,
/// replay and copy-as-curl. On by default in `--to` mode, off otherwise. Served where the status
/// page is (loopback clients on the main listener, or `admin.listen`).
///
/// Memory is bounded per worker: at most `max_requests` exchanges and `max_memory_bytes` of
/// recorded heads and bodies; the oldest go first.
public struct InspectConfig: Sendable, Equatable {
    public var enabled = false
    public var maxRequests = 500
    public var maxBodyBytes = 65536
    /// Show `Authorization`, `Proxy-Authorization`, `Cookie` and `Set-Cookie` values (masked
    /// otherwise, in the page, its JSON and the curl command; replay always sends the originals).
    public var revealSecrets = false
    public var maxMemoryBytes = 64 << 20

    public init() {}
}

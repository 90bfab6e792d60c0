/// `"redis": {"url": "redis://:secret@127.0.0.1:6379/0", "timeout_ms": 50, "on_error": "allow"}`
/// (top level): the Redis server that `scope: "global"` rate limits share with every other proxy
/// instance pointed at it. Each worker loop keeps one connection to it.
public struct RedisConfig: Sendable, Equatable {
    /// What a global limit does when Redis cannot answer in time (down, slow, refusing):
    /// `allow` lets the request through (fail open; counted), `deny` answers 503.
    public enum OnError: String, Sendable, Equatable { case allow, deny }

    /// From `url`: a host name or IP address (a name is looked up off the loop), the port, the
    /// ACL user and password (`redis://user:password@host`), the database number.
    public var host = "127.0.0.1"
    public var port: UInt16 = 6379
    public var username: String?
    public var password: String?
    public var database = 0
    /// How long a command may take before its requests get `on_error`'s answer and the
    /// connection is dropped and made again.
    public var timeoutMs = 50
    /// How long connecting may take.
    public var connectTimeoutMs = 1000
    public var onError: OnError = .allow
    /// Put before every key the proxy writes, so deployments sharing a server keep apart.
    public var keyPrefix = "proxy:rl:"

    public init() {}
}

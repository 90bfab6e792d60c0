/// How many client connections the file-descriptor limit can carry, for `limits.max_connections`.
///
/// Every client connection takes one descriptor and, while it has a request in flight, a second
/// one for its upstream connection. Beyond those the proxy needs a few of its own: per worker
/// loop libuv's epoll, wake-up and signal descriptors plus its listening socket (and its
/// duplicate), one health probe per backend at a time, the access log file, the admin listener.
/// A proxy that accepts more clients than that leaves no descriptor for the backends: every
/// request then fails (502) and libuv sheds the connections it cannot take, so a surge becomes a
/// total outage. Like HAProxy, which derives `maxconn` from `ulimit -n`, the default is what the
/// limit allows, and the excess waits in the kernel's listen queue until a connection closes.
public enum ConnectionBudget {
    /// The default when the descriptor limit is unknown or unlimited: the old fixed one.
    public static let fallback = 10_000

    /// Descriptors kept for the proxy itself (and some slack: a client accepted by several
    /// workers in the same instant may overshoot the limit by one per worker).
    public static func reserve(workers: Int, backends: Int) -> Int {
        32 + 8 * max(workers, 1) + backends
    }

    /// Client connections the limit allows: `(fdLimit - reserve) / 2` (one descriptor for the
    /// client, one for its upstream connection), at least 1. `fdLimit` ≤ 0 means unknown.
    public static func maxConnections(fdLimit: Int, workers: Int, backends: Int) -> Int {
        guard fdLimit > 0 else { return fallback }
        return min(max(1, (fdLimit - reserve(workers: workers, backends: backends)) / 2), 1_000_000)
    }

    /// The limit to enforce for `limits` under `fdLimit` — the configured one if any, else the
    /// derived one — and a warning when a configured limit is more than the descriptors allow.
    public static func effective(_ limits: LimitsConfig, fdLimit: Int, workers: Int,
                                 backends: Int) -> (maxConnections: Int, warning: String?) {
        let allowed = maxConnections(fdLimit: fdLimit, workers: workers, backends: backends)
        guard let configured = limits.maxConnections else { return (allowed, nil) }
        guard fdLimit > 0, configured > allowed else { return (configured, nil) }
        return (configured, "limits.max_connections \(configured) is more than the file-descriptor limit \(fdLimit) "
            + "allows (\(allowed): two descriptors per connection, client and backend, after "
            + "\(reserve(workers: workers, backends: backends)) for the proxy itself); under that load new connections and "
            + "backend connections fail with EMFILE. Raise the limit (ulimit -n, LimitNOFILE=) or leave max_connections out "
            + "to derive it")
    }
}

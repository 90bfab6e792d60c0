import CNGHTTP2
import CTLS
import CUV
import Glibc

/// The few process and clock calls code outside `Loop/` needs, so that only `Loop/` imports the
/// C modules (the layering rule). Thread-safe: each is a plain system call.
public enum Platform {
    /// Wall-clock milliseconds since the epoch (vDSO: no system call).
    @inline(__always)
    static func wallClockMs() -> Int64 { Int64(cuv_wall_clock_ms()) }

    /// Monotonic nanoseconds from an arbitrary origin (`uv_hrtime`: `CLOCK_MONOTONIC`, vDSO, no
    /// system call). For intervals only — subtract two readings (`&-`); never compare it with
    /// the wall clock. Any thread.
    @inline(__always)
    static func monotonicNanos() -> UInt64 { uv_hrtime() }

    /// Names the calling thread (at most 15 bytes show) for `top -H` and debuggers.
    static func setThreadName(_ name: String) { cuv_set_thread_name(name) }

    /// Ignores SIGHUP until the reload handler is installed (its default action ends the process).
    static func ignoreSIGHUP() { cuv_ignore_sighup() }

    /// Clears the calling thread's signal mask (threads started afterwards inherit it).
    static func unblockAllSignals() { cuv_unblock_all_signals() }

    static func flushStandardOutput() { cuv_flush_stdout() }

    /// CPUs this process may run on (its affinity mask).
    static func availableCPUs() -> Int { Int(cuv_available_cpus()) }

    /// The linked libraries' versions, for `proxy --version`: libuv, OpenSSL, nghttp2.
    public static func libraryVersions() -> String {
        let tls = String(cString: ctls_library_version())
        let h2 = nghttp2_version(0).map { String(cString: $0.pointee.version_str) } ?? "?"
        return "libuv \(String(cString: uv_version_string())), \(tls), nghttp2 \(h2)"
    }

    /// Whether a socket can be bound to `[::1]` (IPv6 may be off on this machine).
    public static func canBindIPv6Loopback() -> Bool {
        let fd = socket(AF_INET6, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in6()
        address.sin6_family = sa_family_t(AF_INET6)
        address.sin6_addr.__in6_u.__u6_addr8.15 = 1
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
        } == 0
    }
}

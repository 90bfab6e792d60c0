import CUV

/// The few process and clock calls code outside `Loop/` needs, so that only `Loop/` imports the
/// C modules (the layering rule). Thread-safe: each is a plain system call.
enum Platform {
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
}

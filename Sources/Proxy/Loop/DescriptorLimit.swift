import CUV

/// The process's file-descriptor limit (`RLIMIT_NOFILE`), which bounds the connections the proxy
/// can hold (`ConnectionBudget`).
public enum DescriptorLimit {
    /// Raises the soft limit to the hard one (start-up) and returns the new soft limit; -1 when
    /// it cannot be read.
    public static func raiseToHard() -> Int { Int(cuv_raise_nofile_limit()) }

    /// The limit the proxy would run with after `raiseToHard()` — the hard limit — without
    /// changing anything (`--check`); -1 when unknown or unlimited.
    public static var hard: Int { Int(cuv_nofile_limit(1)) }
}

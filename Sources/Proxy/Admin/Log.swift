import Glibc

/// Minimal operational logging to standard error, one line per event.
/// Not for the per-request path (the access log is a later, buffered feature).
public enum Log {
    public static func info(_ message: String) { emit("info", message) }
    public static func warning(_ message: String) { emit("warn", message) }
    public static func error(_ message: String) { emit("error", message) }

    /// One line as is (no level prefix): start-up errors and usage text.
    public static func plain(_ message: String) { write("\(message)\n") }

    private static func emit(_ level: String, _ message: String) { write("proxy[\(level)]: \(message)\n") }

    /// Unbuffered, so nothing is lost when the process exits right after.
    private static func write(_ text: String) {
        var line = Array(text.utf8)
        line.withUnsafeMutableBytes { raw in
            var off = 0
            while off < raw.count {
                let n = Glibc.write(2, raw.baseAddress! + off, raw.count - off)
                if n <= 0 { break }
                off += n
            }
        }
    }
}

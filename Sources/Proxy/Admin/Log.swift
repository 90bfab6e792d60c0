import CUV
import Glibc

/// Minimal operational logging to standard error, one line per event.
/// Not for the per-request path (the access log is a later, buffered feature).
public enum Log {
    public static func info(_ message: String) { emit("info", message) }
    public static func warning(_ message: String) { emit("warn", message) }
    public static func error(_ message: String) { emit("error", message) }

    private static func emit(_ level: String, _ message: String) {
        var line = Array("proxy[\(level)]: \(message)\n".utf8)
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

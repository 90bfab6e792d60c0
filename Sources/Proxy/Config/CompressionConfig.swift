/// `"compress"`, at the top level (every route) or on a route (that route: it replaces the
/// top-level one; `false` turns compression off there):
///
/// ```json
/// "compress": {"types": ["text/*", "application/json", "application/javascript", "image/svg+xml"],
///              "min_bytes": 1024, "gzip_level": 5, "brotli_level": 4}
/// ```
///
/// Responses are compressed on the fly (`ResponseCompression` decides, `StreamCompressor`
/// compresses) with brotli or gzip, by the client's `Accept-Encoding` and the order of
/// `encodings`, only when the backend did not encode the body itself.
public struct CompressionConfig: Sendable, Equatable {
    /// Media types compressed: `type/subtype`, or `type/*` for every subtype. An event stream
    /// (`text/event-stream`) is compressed only when listed by its exact name, never by `text/*`.
    public var types = ["text/*", "application/json", "application/javascript", "application/xml", "image/svg+xml"]
    /// Bodies whose `Content-Length` is below this are sent as they are (bodies of unknown
    /// length are compressed).
    public var minBytes = 1024
    /// zlib's level, 1–9 (nginx's `gzip_comp_level`).
    public var gzipLevel = 5
    /// brotli's quality, 0–11.
    public var brotliLevel = 4
    /// brotli's largest window, as bits (10–24): the memory each brotli stream may use grows
    /// with it (19: 512 KiB).
    public var brotliWindowBits = 19
    /// The codings offered, most preferred first (`"br"`, `"gzip"`).
    public var encodings: [String] = ["br", "gzip"]
    /// Responses compressed at once per worker; beyond it responses go uncompressed (each
    /// stream holds a coder's state, up to about 1 MiB for brotli, 256 KiB for gzip).
    public var maxStreams = 256

    public init() {}
}

/// A route's `compress`: the top-level one, its own, or none.
public enum RouteCompression: Sendable, Equatable {
    case inherit
    case off
    case on(CompressionConfig)

    /// What applies to the route, given the top-level `compress`.
    public func resolved(over top: CompressionConfig?) -> CompressionConfig? {
        switch self {
        case .inherit: top
        case .off: nil
        case .on(let own): own
        }
    }
}

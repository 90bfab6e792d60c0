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
    /// brotli's quality, 0–6 (higher levels take tens of MiB per stream and are too slow to run
    /// on the loop: ship `.br` files made ahead for those).
    public var brotliLevel = 4
    /// brotli's largest window, as bits (10–22): the memory each brotli stream may use grows
    /// with it (19: a 512 KiB ring buffer).
    public var brotliWindowBits = 19
    /// The codings offered, most preferred first (`"br"`, `"gzip"`).
    public var encodings: [String] = ["br", "gzip"]
    /// Responses compressed at once per worker; beyond it responses go uncompressed. Each
    /// stream holds a coder's state: about 270 KiB for gzip (deflate's window and hash at
    /// memLevel 8, less for small bodies), about 1–2 MiB for brotli at level 4 and window 19
    /// (its ring buffer and hasher), up to ~10 MiB at level 6 and window 22. An event stream
    /// listed in `types` holds its coder for as long as it stays open.
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

/// `"static": {"root": "dist", "index": "index.html", "spa_fallback": true}` on a route: the
/// route is answered from files under `root` instead of a backend (`StaticFileStream`).
///
/// The loader gives each such route an upstream of its own (named `static:ROUTE`) with one
/// backend whose connections are files, not sockets: it is never health-checked or looked up,
/// and shows in `/_health`, metrics and the access log like any backend (`file:///ROOT`).
public struct StaticFilesConfig: Sendable, Equatable {
    /// As written (relative paths: to the config file's directory).
    public var root = ""
    /// `root` with every symbolic link resolved, at load: files whose real path is not under it
    /// are not served.
    public var realRoot = ""
    /// The file a directory answers with (nil: none, so a directory is 404).
    public var index: String? = "index.html"
    /// A `GET` for a path with no such file, from a client that accepts HTML, gets the root's
    /// index (single-page apps route in the browser).
    public var spaFallback = false
    /// `app.js.br` / `app.js.gz` next to `app.js` are sent to clients that accept them.
    public var precompressed = true
    /// `Cache-Control` for every file served (nil: none; the validators make revalidation cheap).
    public var cacheControl: String?
    /// How much of a file is read per step (each a job on libuv's thread pool).
    public var readChunkBytes = 256 * 1024

    public init() {}

    /// The backend's URL as shown in `/_health` and logs.
    public var url: String { "file://" + realRoot }
}

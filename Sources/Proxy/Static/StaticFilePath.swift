/// Where a request path points under a static root, decided on bytes before any file is
/// touched: the path (already in normal form: no `.`/`..` segments, no `//`) is %-decoded, and
/// refused when a segment is hidden (starts with `.`: `.git`, `.env`; `.well-known` excepted), when decoding yields a
/// `/`, `\` or NUL (a name that would mean another path than the one routed), or when it is
/// absurdly long. What is left is a relative path that cannot climb out of the root by itself;
/// symbolic links are checked after opening (the file's real path must lie under the root's).
///
/// Pure (tested directly).
enum StaticFilePath {
    enum Decision: Equatable {
        /// The file (or directory) at this relative path ("" is the root itself).
        case file(String)
        /// Not servable: answered 404 (not 403, so hidden files are not confirmed to exist).
        case refused(String)
    }

    static let maxBytes = 4096

    /// `path`: the request's path after the route's prefix, without the query (`/assets/app.js`).
    static func resolve(_ path: ArraySlice<UInt8>) -> Decision {
        guard path.count <= maxBytes else { return .refused("the path is too long") }
        var decoded: [UInt8] = []
        decoded.reserveCapacity(path.count)
        var i = path.startIndex
        while i < path.endIndex {
            let b = path[i]
            if b == UInt8(ascii: "%") {
                guard i + 2 < path.endIndex, let h = hex(path[i + 1]), let l = hex(path[i + 2]) else {
                    return .refused("invalid percent-encoding")
                }
                let c = h << 4 | l
                // A decoded separator or NUL would name another path than the one routed.
                if c == UInt8(ascii: "/") || c == UInt8(ascii: "\\") || c == 0 { return .refused("an encoded separator or NUL") }
                decoded.append(c)
                i += 3
                continue
            }
            if b == UInt8(ascii: "\\") || b == 0 { return .refused("a backslash or NUL") }
            decoded.append(b)
            i += 1
        }
        var segments: [String] = []
        for segment in decoded.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: true) {
            // `.well-known` (RFC 8615: ACME challenges, security.txt) is the one dot name served.
            if segment.first == UInt8(ascii: "."), !segment.elementsEqual(".well-known".utf8) { return .refused("a hidden file or dot segment") }
            segments.append(String(decoding: segment, as: UTF8.self))
        }
        return .file(segments.joined(separator: "/"))
    }

    /// Whether the request path ends in `/` (a directory asked for as one).
    static func endsWithSlash(_ path: ArraySlice<UInt8>) -> Bool { path.last == UInt8(ascii: "/") }

    private static func hex(_ b: UInt8) -> UInt8? {
        switch b {
        case 48...57: b - 48
        case 65...70: b - 55
        case 97...102: b - 87
        default: nil
        }
    }
}

/// The `Content-Type` of a file by its extension (lower-cased), for the types a web build
/// ships; anything else is `application/octet-stream` (no sniffing: `nosniff` is honest then).
enum MediaTypes {
    static func type(forPath path: String) -> String {
        guard let dot = path.lastIndex(of: "."), !path[dot...].contains("/") else { return "application/octet-stream" }
        return byExtension[path[path.index(after: dot)...].lowercased()] ?? "application/octet-stream"
    }

    static let byExtension: [String: String] = [
        "html": "text/html; charset=utf-8", "htm": "text/html; charset=utf-8",
        "css": "text/css; charset=utf-8", "js": "text/javascript; charset=utf-8", "mjs": "text/javascript; charset=utf-8",
        "json": "application/json", "map": "application/json", "webmanifest": "application/manifest+json",
        "txt": "text/plain; charset=utf-8", "md": "text/markdown; charset=utf-8", "csv": "text/csv; charset=utf-8",
        "xml": "application/xml", "svg": "image/svg+xml", "png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg",
        "gif": "image/gif", "webp": "image/webp", "avif": "image/avif", "ico": "image/vnd.microsoft.icon",
        "woff": "font/woff", "woff2": "font/woff2", "ttf": "font/ttf", "otf": "font/otf",
        "wasm": "application/wasm", "pdf": "application/pdf", "zip": "application/zip",
        "mp4": "video/mp4", "webm": "video/webm", "mp3": "audio/mpeg", "ogg": "audio/ogg", "wav": "audio/wav",
    ]
}

/// Which precompressed sibling (`app.js.br`, `app.js.gz`) to send, by the request's
/// `Accept-Encoding` (`AcceptedCodings`): brotli, then gzip.
enum PrecompressedChoice {
    /// The codings to look for, in order, with their file suffix.
    static func candidates(_ accepted: AcceptedCodings) -> [(coding: String, suffix: String)] {
        var out: [(String, String)] = []
        if accepted.brotli { out.append(("br", ".br")) }
        if accepted.gzip { out.append(("gzip", ".gz")) }
        return out
    }
}

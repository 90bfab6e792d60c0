import CUV

/// A libuv error: the negative errno-style code libuv returns, with its name and message.
public struct UVError: Error, Equatable, Sendable, CustomStringConvertible {
    public var code: Int32

    @inlinable public init(_ code: Int32) { self.code = code }

    /// `ECONNREFUSED`, `EADDRINUSE`, …
    public var name: String { String(cString: uv_err_name(code)) }
    public var message: String { String(cString: uv_strerror(code)) }
    public var description: String { "\(name) (\(message))" }

    public static let eof = Int32(UV_EOF.rawValue)
    public static let again = Int32(UV_EAGAIN.rawValue)
    public static let canceled = Int32(UV_ECANCELED.rawValue)
    public static let timedOut = Int32(UV_ETIMEDOUT.rawValue)
    public static let connectionRefused = Int32(UV_ECONNREFUSED.rawValue)
    public static let connectionReset = Int32(UV_ECONNRESET.rawValue)
    public static let tooManyOpenFiles = Int32(UV_EMFILE.rawValue)
    public static let tooManyOpenFilesInSystem = Int32(UV_ENFILE.rawValue)
    public static let noBufferSpace = Int32(UV_ENOBUFS.rawValue)
    public static let outOfMemory = Int32(UV_ENOMEM.rawValue)
    public static let addressNotAvailable = Int32(UV_EADDRNOTAVAIL.rawValue)
    /// A TLS session failed (a bad handshake or record): the stream ends with this code.
    public static let protocolError = Int32(UV_EPROTO.rawValue)

    /// The proxy's own machine ran short, not the peer: out of descriptors (`EMFILE` for this
    /// process, `ENFILE` for the system), of socket buffers (`ENOBUFS`), of memory (`ENOMEM`), or
    /// of local addresses and ephemeral ports (`EADDRNOTAVAIL`, which `connect` reports from the
    /// local side). Such a failure says nothing about the backend: a health probe that hits one
    /// gives no verdict, and a request that hits one should not blame the backend.
    public var isLocalResourceError: Bool { Self.isLocalResourceError(code) }

    public static func isLocalResourceError(_ code: Int32) -> Bool {
        code == tooManyOpenFiles || code == tooManyOpenFilesInSystem || code == noBufferSpace
            || code == outOfMemory || code == addressNotAvailable
    }

    /// For a local resource error, what it means in plain words, for logs and error pages
    /// ("the proxy is out of file descriptors (EMFILE)"); nil for any other error.
    public var localResourceProblem: String? {
        switch code {
        case Self.tooManyOpenFiles: "the proxy is out of file descriptors (EMFILE: its own limit, ulimit -n)"
        case Self.tooManyOpenFilesInSystem: "the system is out of file descriptors (ENFILE)"
        case Self.noBufferSpace: "the proxy's host is out of socket buffer space (ENOBUFS)"
        case Self.outOfMemory: "the proxy is out of memory (ENOMEM)"
        case Self.addressNotAvailable: "the proxy's host has no local port or address left for a new connection (EADDRNOTAVAIL)"
        default: nil
        }
    }
}

/// Throws a `UVError` for a negative libuv return code.
@inlinable
func check(_ rc: Int32) throws(UVError) {
    if rc < 0 { throw UVError(rc) }
}

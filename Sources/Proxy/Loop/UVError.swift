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
}

/// Throws a `UVError` for a negative libuv return code.
@inlinable
func check(_ rc: Int32) throws(UVError) {
    if rc < 0 { throw UVError(rc) }
}

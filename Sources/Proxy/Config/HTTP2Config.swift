/// HTTP/2 towards clients (the top-level `"http2"` object): ALPN `h2` on TLS listeners and
/// prior-knowledge h2c on cleartext ones, and the limits every HTTP/2 connection runs under.
///
/// Memory per connection is bounded by these: request body bytes a connection holds are at most
/// `connection_window_bytes` (a stream's window reopens only once its bytes reached the backend),
/// and each stream keeps at most one backend read of response bytes beyond what the client
/// window lets out.
public struct HTTP2Config: Sendable, Equatable {
    /// Prior-knowledge HTTP/2 on cleartext listeners (the 24-byte preface is recognised; HTTP/1
    /// requests on the same port keep working).
    public var h2c = true
    /// Streams a client may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS; nghttpx and
    /// HAProxy use 100, nginx 128).
    public var maxConcurrentStreams = 100
    /// Request body bytes a stream may send ahead of the backend (SETTINGS_INITIAL_WINDOW_SIZE).
    public var streamWindowBytes = 256 * 1024
    /// Request body bytes all streams of a connection together may send ahead of their backends.
    public var connectionWindowBytes = 1024 * 1024
    /// A request's header list, counted as RFC 9113 §6.5.2 does (name + value + 32 per field);
    /// beyond it the request gets a 431.
    public var maxHeaderListBytes = 65536
    /// A connection with no open stream for this long is closed (with GOAWAY).
    public var idleTimeoutMs = 60000
    /// Client RST_STREAM frames: a burst, then this many per second (Rapid Reset, CVE-2023-44487);
    /// beyond it the connection ends with GOAWAY ENHANCE_YOUR_CALM.
    public var resetBurst = 1000
    public var resetsPerSecond = 33
    /// CONTINUATION frames allowed in one header block (CVE-2024-28182).
    public var maxContinuationFrames = 8
    /// SETTINGS and PING acknowledgements the client may leave queued (it does not read them):
    /// beyond it the connection ends (SETTINGS/PING floods).
    public var maxQueuedControlFrames = 1000
    /// Protocol "glitches" a connection may cause before it is ended with GOAWAY
    /// ENHANCE_YOUR_CALM: streams it resets while the proxy still works on them, frames and
    /// header blocks the proxy had to refuse (each of which makes the proxy reset a stream:
    /// MadeYouReset, CVE-2025-8671), oversized header lists, and control frames beyond
    /// `max_control_frames_per_s`.
    public var maxGlitches = 1000
    /// SETTINGS, PING, PRIORITY, WINDOW_UPDATE and empty DATA frames a connection may send per
    /// second before each further one counts as a glitch.
    public var maxControlFramesPerS = 1000

    public init() {}
}

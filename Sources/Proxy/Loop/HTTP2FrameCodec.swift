import CNGHTTP2
import Glibc

/// What an HTTP/2 server connection hears from its `HTTP2FrameCodec`. Every call is made
/// synchronously from inside `receive` (frames read) or `takeOutput` (the body provider), on the
/// loop thread; none of them may call `receive` or `takeOutput` again.
protocol HTTP2FrameCodecDelegate: AnyObject {
    /// A client opened `stream` with a HEADERS frame (its fields follow).
    func codecStreamOpened(_ stream: Int32)
    /// One header field of `stream`'s request head (`trailers`: of its trailer section), as
    /// nghttp2 checked it (no CR, LF or NUL; lowercase names; pseudo-fields first). Returns false
    /// to reset the stream.
    func codecField(_ stream: Int32, name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer, trailers: Bool) -> Bool
    /// The whole header block of `stream` arrived (`endStream`: the request has no body).
    func codecHeadersComplete(_ stream: Int32, endStream: Bool, trailers: Bool)
    /// Request body bytes of `stream` (flow control: the window reopens only through `consume`).
    func codecData(_ stream: Int32, _ data: UnsafeRawBufferPointer)
    /// The request body of `stream` ended (END_STREAM on DATA).
    func codecRequestEnded(_ stream: Int32)
    /// `stream` is closed (`errorCode` 0: normally; otherwise reset by either side).
    func codecStreamClosed(_ stream: Int32, errorCode: UInt32)
    /// A frame of `type` arrived on the connection (for flood accounting: SETTINGS, PING,
    /// RST_STREAM, WINDOW_UPDATE, PRIORITY, empty DATA). `length` is the payload's length; for
    /// WINDOW_UPDATE, the window increment.
    func codecFrameReceived(type: UInt8, flags: UInt8, stream: Int32, length: Int)
    /// The client broke the protocol in a way nghttp2 answered with a stream or connection error.
    func codecInvalidFrame(type: UInt8, stream: Int32)
    /// Fills `buffer` with response body bytes of `stream`: how many, and whether the body ends
    /// with them. `nil`: nothing to send yet (the stream is deferred until `resumeBody`).
    func codecResponseBody(_ stream: Int32, into buffer: UnsafeMutableRawBufferPointer) -> (count: Int, end: Bool)?
    /// The response of `stream` ended: a frame with END_STREAM was just serialised for it.
    func codecResponseEnded(_ stream: Int32)
    /// A HEADERS frame of `stream` could not be sent (nghttp2 dropped it, e.g. too large to
    /// encode): the stream will never get its response.
    func codecResponseFailed(_ stream: Int32)
}

/// The limits an HTTP/2 session is created with (from the `http2` config object).
struct HTTP2SessionLimits {
    var maxConcurrentStreams: UInt32
    var initialStreamWindow: UInt32
    var connectionWindow: UInt32
    var maxHeaderListBytes: UInt32
    /// Client RST_STREAM frames: a burst, then so many per second (nghttp2's Rapid Reset limit).
    var resetBurst: UInt64
    var resetsPerSecond: UInt64
    /// CONTINUATION frames allowed in one header block.
    var maxContinuations: Int
    /// SETTINGS/PING acknowledgements queued before the connection is ended as a flood.
    var maxOutboundAcks: Int
}

/// nghttp2 as an HTTP/2 server-side frame codec: bytes in (`receive`), frames out (`takeOutput`),
/// HPACK, stream states, flow-control bookkeeping and the HTTP messaging checks (pseudo-fields,
/// connection-specific fields refused, content-length against DATA). It owns no socket, timer or
/// buffer of ours: the connection decides when to read, when to write and what streams do.
///
/// Flow control is manual (`no_auto_window_update`): a stream's window reopens only when the
/// connection calls `consume` — once the bytes reached the backend.
///
/// Ownership: one per HTTP/2 connection, which holds it strongly and is its delegate (held
/// unretained: the connection outlives it). Threading: the connection's loop thread only.
final class HTTP2FrameCodec {
    private var session: OpaquePointer?
    unowned(unsafe) var delegate: HTTP2FrameCodecDelegate

    /// nghttp2's callbacks, the same for every session (it copies them at creation; never
    /// written after this initialiser, so every worker thread may read it).
    nonisolated(unsafe) private static let callbacks: OpaquePointer = makeCallbacks()

    /// The highest stream id a client HEADERS frame carried, and the ids it skipped (the last
    /// `maxGaps` runs; see `checkNewStreamID`).
    private var highestHeadersStreamID: Int32 = 0
    private var skippedIDs: [ClosedRange<Int32>] = []
    private static let maxGaps = 16

    init(delegate: HTTP2FrameCodecDelegate, limits: HTTP2SessionLimits) {
        self.delegate = delegate
        pairs = .allocate(capacity: 16)
        var option: OpaquePointer?
        nghttp2_option_new(&option)
        nghttp2_option_set_no_auto_window_update(option, 1)
        nghttp2_option_set_max_outbound_ack(option, max(limits.maxOutboundAcks, 1))
        nghttp2_option_set_stream_reset_rate_limit(option, limits.resetBurst, limits.resetsPerSecond)
        nghttp2_option_set_max_continuations(option, max(limits.maxContinuations, 1))
        // The client's SETTINGS_MAX_CONCURRENT_STREAMS does not bound a server's own streams (it
        // opens none); ours is announced below and enforced by nghttp2.
        var s: OpaquePointer?
        var allocator = nghttp2_mem(mem_user_data: UnsafeMutableRawPointer(frameBuffer), malloc: Self.allocate, free: Self.release,
                                    calloc: Self.allocateZeroed, realloc: Self.reallocate)
        frameBuffer.pointee.noting = true
        let rc = nghttp2_session_server_new3(&s, Self.callbacks, Unmanaged.passUnretained(self).toOpaque(), option, &allocator)
        frameBuffer.pointee.noting = false
        nghttp2_option_del(option)
        precondition(rc == 0, "nghttp2_session_server_new3 failed: out of memory")
        session = s
        var settings = [
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS.rawValue), value: limits.maxConcurrentStreams),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue), value: limits.initialStreamWindow),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE.rawValue), value: limits.maxHeaderListBytes),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_ENABLE_PUSH.rawValue), value: 0),
        ]
        _ = nghttp2_submit_settings(s, UInt8(NGHTTP2_FLAG_NONE.rawValue), &settings, settings.count)
        if limits.connectionWindow > 65_535 {
            _ = nghttp2_session_set_local_window_size(s, UInt8(NGHTTP2_FLAG_NONE.rawValue), 0, Int32(clamping: limits.connectionWindow))
        }
    }

    deinit {
        nghttp2_session_del(session)
        pairs.deallocate()
        statusDigits.deallocate()
        frameBuffer.deallocate()
    }

    /// Feeds bytes read from the client (the 24-byte preface first). Returns false on a fatal
    /// error: nghttp2 will send nothing more (not even a GOAWAY: `fatalGoAwayFrame` is one to
    /// send instead); `failure` says why, `failureIsAbuse` whether it was a flood.
    func receive(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return true }
        let n = nghttp2_session_mem_recv(session, base.assumingMemoryBound(to: UInt8.self), bytes.count)
        if n < 0 {
            failureCode = Int32(n)
            failure = Self.describe(Int32(n))
            return false
        }
        return true
    }

    /// Why `receive` failed, in words, and nghttp2's code for it.
    private(set) var failure: String?
    private var failureCode: Int32 = 0

    /// The fatal error was abuse: a SETTINGS/PING flood (acknowledgements the client does not
    /// read), or more CONTINUATION frames than allowed in one header block.
    var failureIsAbuse: Bool {
        failureCode == NGHTTP2_ERR_FLOODED.rawValue || failureCode == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS.rawValue
            || failureCode == NGHTTP2_ERR_TOO_MANY_SETTINGS.rawValue
    }

    /// A GOAWAY frame for a fatal error, written by hand (nghttp2's session sends nothing more
    /// after one): ENHANCE_YOUR_CALM for abuse, PROTOCOL_ERROR otherwise; the last stream is
    /// the last one handed to the connection.
    var fatalGoAwayFrame: [UInt8] {
        let code = failureIsAbuse ? Self.enhanceYourCalm : Self.protocolError
        let last = UInt32(bitPattern: lastStreamID)
        return [0, 0, 8, 0x7, 0, 0, 0, 0, 0,
                UInt8(last >> 24 & 0x7f), UInt8(last >> 16 & 0xff), UInt8(last >> 8 & 0xff), UInt8(last & 0xff),
                UInt8(code >> 24), UInt8(code >> 16 & 0xff), UInt8(code >> 8 & 0xff), UInt8(code & 0xff)]
    }

    /// The next frames to write, or an empty buffer when there is nothing to send. Valid until
    /// the next call into the codec: write (copy) it before. Response bodies are pulled from the
    /// delegate here.
    func takeOutput() -> UnsafeRawBufferPointer {
        var data: UnsafePointer<UInt8>?
        let n = nghttp2_session_mem_send(session, &data)
        guard n > 0, let data else {
            if n < 0 {
                failureCode = Int32(n)
                failure = Self.describe(Int32(n))
            }
            return UnsafeRawBufferPointer(start: nil, count: 0)
        }
        if n > Self.pageSize { frameBufferTouched = true }
        return UnsafeRawBufferPointer(start: data, count: n)
    }

    // MARK: Memory of an idle session

    /// nghttp2's outbound frame buffer (16,394 bytes, for the session's life): the block of
    /// `minimumSize` bytes or more that nghttp2 allocates (with `realloc(NULL, …)`) while the
    /// session is created — nothing else is ever noted: other large blocks (a long HPACK literal,
    /// a grown queue) hold live data. Kept in plain memory that nghttp2's allocator callbacks
    /// reach without touching a Swift object (no reference counting per allocation).
    fileprivate struct FrameBuffer {
        var block: UnsafeMutableRawPointer?
        var size = 0
        /// Only during `nghttp2_session_server_new3`.
        var noting = false
        static let minimumSize = 16 * 1024
    }
    private let frameBuffer: UnsafeMutablePointer<FrameBuffer> = {
        let p = UnsafeMutablePointer<FrameBuffer>.allocate(capacity: 1)
        p.initialize(to: FrameBuffer())
        return p
    }()
    /// A frame bigger than a page was written into the frame buffer since its pages were last
    /// given back.
    private var frameBufferTouched = false
    private static let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))

    /// The connection has no stream left and its output was written: the frame buffer's contents
    /// are dead, so its whole pages go back to the kernel (they read as zeros when next touched).
    /// An idle connection then holds the page or so of it that small frames use, not 16 KiB; a
    /// connection that only ever sent small frames pays no system call.
    func releaseIdleMemory() {
        guard frameBufferTouched, !wantsToWrite else { return }
        frameBufferTouched = false
        Self.releasePages(frameBuffer)
    }

    private static func releasePages(_ buffer: UnsafeMutablePointer<FrameBuffer>) {
        guard let block = buffer.pointee.block else { return }
        let page = UInt(pageSize)
        let first = (UInt(bitPattern: block) + page - 1) & ~(page - 1)
        let end = (UInt(bitPattern: block) + UInt(buffer.pointee.size)) & ~(page - 1)
        if end > first { _ = madvise(UnsafeMutableRawPointer(bitPattern: first), Int(end - first), MADV_DONTNEED) }
    }

    // nghttp2's allocator: the C library's, watching for the frame buffer, whose pages are
    // released as soon as it is allocated (a new session has written nothing in it). Called on
    // the loop thread from inside nghttp2 (and from `nghttp2_session_del` in `deinit`); only
    // `realloc` and `free` look at the record (nghttp2 allocates its buffers with `realloc`).
    private static func noteAllocation(_ block: UnsafeMutableRawPointer?, size: Int, _ buffer: UnsafeMutableRawPointer?) {
        guard let block, size >= FrameBuffer.minimumSize else { return }
        let b = buffer!.assumingMemoryBound(to: FrameBuffer.self)
        guard b.pointee.noting, b.pointee.block == nil else { return }
        b.pointee.block = block
        b.pointee.size = size
        releasePages(b)
    }
    private static func noteRelease(_ block: UnsafeMutableRawPointer?, _ buffer: UnsafeMutableRawPointer?) {
        let b = buffer!.assumingMemoryBound(to: FrameBuffer.self)
        if let block, block == b.pointee.block { b.pointee.block = nil; b.pointee.size = 0 }
    }
    private static let allocate: nghttp2_malloc = { size, _ in malloc(size) }
    private static let release: nghttp2_free = { block, buffer in
        noteRelease(block, buffer)
        free(block)
    }
    private static let allocateZeroed: nghttp2_calloc = { count, size, _ in calloc(count, size) }
    private static let reallocate: nghttp2_realloc = { block, size, buffer in
        guard block == nil else {
            // A block that grows keeps its contents: never released. (The frame buffer does not grow.)
            noteRelease(block, buffer)
            return realloc(block, size)
        }
        let fresh = realloc(nil, size)
        noteAllocation(fresh, size: size, buffer)
        return fresh
    }

    /// Whether the session still wants to read or write anything (false once a GOAWAY went out
    /// with no stream left, or after a fatal error).
    var isAlive: Bool { nghttp2_session_want_read(session) != 0 || nghttp2_session_want_write(session) != 0 }
    var wantsToWrite: Bool { nghttp2_session_want_write(session) != 0 }

    /// The highest stream id the connection handed to its delegate (the GOAWAY's last stream).
    var lastStreamID: Int32 { nghttp2_session_get_last_proc_stream_id(session) }

    // MARK: Responses

    /// Submits a response head: `fields` holds name/value pairs (lowercase names) as ranges into
    /// `bytes`. `hasBody`: DATA follows, pulled through `codecResponseBody`; otherwise the
    /// HEADERS frame ends the stream.
    func submitResponse(_ stream: Int32, status: UInt16, fields: [(name: Range<Int>, value: Range<Int>, neverIndexed: Bool)],
                        in bytes: UnsafeRawBufferPointer, hasBody: Bool) -> Bool {
        let count = fillPairs(status: status, fields, in: bytes)
        if hasBody {
            var provider = nghttp2_data_provider(source: nghttp2_data_source(ptr: nil), read_callback: Self.readBody)
            return nghttp2_submit_response(session, stream, pairs, count, &provider) == 0
        }
        return nghttp2_submit_response(session, stream, pairs, count, nil) == 0
    }

    /// Submits an interim (1xx) head on `stream`; the final one follows.
    func submitInterim(_ stream: Int32, status: UInt16, fields: [(name: Range<Int>, value: Range<Int>, neverIndexed: Bool)],
                       in bytes: UnsafeRawBufferPointer) {
        let count = fillPairs(status: status, fields, in: bytes)
        _ = nghttp2_submit_headers(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), stream, nil, pairs, count, nil)
    }

    /// nghttp2 name/value pairs for the head being submitted: reused for every head (nghttp2
    /// copies them when a frame is submitted), grown when a head has more fields.
    private var pairs: UnsafeMutablePointer<nghttp2_nv>
    private var pairCapacity = 16
    /// The three digits of the status being submitted (the pairs point here).
    private let statusDigits = UnsafeMutablePointer<UInt8>.allocate(capacity: 3)

    /// Writes `:status` and `fields` into `pairs`; returns how many. The pairs point into
    /// `bytes` and `statusDigits`: valid until `bytes` changes.
    private func fillPairs(status: UInt16, _ fields: [(name: Range<Int>, value: Range<Int>, neverIndexed: Bool)],
                           in bytes: UnsafeRawBufferPointer) -> Int {
        if fields.count + 1 > pairCapacity {
            pairs.deallocate()
            pairCapacity = max(fields.count + 1, pairCapacity * 2)
            pairs = .allocate(capacity: pairCapacity)
        }
        statusDigits[0] = UInt8(48 + status / 100 % 10)
        statusDigits[1] = UInt8(48 + status / 10 % 10)
        statusDigits[2] = UInt8(48 + status % 10)
        pairs[0] = Self.nv(Self.statusName, statusDigits, 7, 3)
        let base = UnsafeMutablePointer(mutating: (bytes.baseAddress ?? UnsafeRawPointer(statusDigits)).assumingMemoryBound(to: UInt8.self))
        var i = 1
        for f in fields {
            pairs[i] = Self.nv(base + f.name.lowerBound, base + f.value.lowerBound, f.name.count, f.value.count,
                               neverIndexed: f.neverIndexed)
            i += 1
        }
        return i
    }

    /// More response body bytes (or its end) are ready for `stream`, deferred until now.
    func resumeBody(_ stream: Int32) {
        _ = nghttp2_session_resume_data(session, stream)
    }

    /// `count` request body bytes of `stream` reached the backend: reopen that much window
    /// (stream and connection).
    func consume(_ stream: Int32, _ count: Int) {
        // The connection's window gets them back even when the stream is gone already.
        guard count > 0 else { return }
        _ = nghttp2_session_consume(session, stream, count)
    }

    /// Resets `stream` with `errorCode` (RFC 9113 §7: 0x8 CANCEL, 0x2 INTERNAL_ERROR, …).
    func reset(_ stream: Int32, errorCode: UInt32) {
        _ = nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), stream, errorCode)
    }

    /// Sends GOAWAY: no stream above `lastStreamID` will be processed; streams at or below it
    /// finish. `errorCode` 0 for a graceful end, 0xb ENHANCE_YOUR_CALM for abuse.
    func goAway(errorCode: UInt32, lastStreamID: Int32? = nil, debug: String = "") {
        var text = Array(debug.utf8.prefix(256))
        _ = text.withUnsafeMutableBufferPointer { d in
            nghttp2_submit_goaway(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), lastStreamID ?? self.lastStreamID, errorCode,
                                  d.baseAddress, d.count)
        }
    }

    /// GOAWAY with `errorCode`, after which the session wants nothing more once it is sent.
    func terminate(errorCode: UInt32) {
        _ = nghttp2_session_terminate_session(session, errorCode)
    }

    /// Error codes (RFC 9113 §7).
    static let noError: UInt32 = 0x0
    static let protocolError: UInt32 = 0x1
    static let internalError: UInt32 = 0x2
    static let refusedStream: UInt32 = 0x7
    static let cancel: UInt32 = 0x8
    static let enhanceYourCalm: UInt32 = 0xb

    /// Frame types (RFC 9113 §6).
    static let dataFrame: UInt8 = 0x0
    static let headersFrame: UInt8 = 0x1
    static let priorityFrame: UInt8 = 0x2
    static let rstStreamFrame: UInt8 = 0x3
    static let settingsFrame: UInt8 = 0x4
    static let pingFrame: UInt8 = 0x6
    static let windowUpdateFrame: UInt8 = 0x8

    /// The 24 bytes every HTTP/2 connection begins with (RFC 9113 §3.4).
    static let preface: [UInt8] = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    // MARK: nghttp2 glue

    /// ":status", never written after this initialiser (nghttp2 only reads it).
    nonisolated(unsafe) private static let statusName: UnsafeMutablePointer<UInt8> = {
        let p = UnsafeMutablePointer<UInt8>.allocate(capacity: 7)
        for (i, c) in ":status".utf8.enumerated() { p[i] = c }
        return p
    }()

    private static func nv(_ name: UnsafeMutablePointer<UInt8>, _ value: UnsafeMutablePointer<UInt8>, _ nameLength: Int,
                           _ valueLength: Int, neverIndexed: Bool = false) -> nghttp2_nv {
        nghttp2_nv(name: name, value: value, namelen: nameLength, valuelen: valueLength,
                   flags: UInt8(neverIndexed ? NGHTTP2_NV_FLAG_NO_INDEX.rawValue : NGHTTP2_NV_FLAG_NONE.rawValue))
    }

    private static func describe(_ code: Int32) -> String {
        String(cString: nghttp2_strerror(code))
    }

    @inline(__always)
    private static func codec(_ userData: UnsafeMutableRawPointer?) -> HTTP2FrameCodec {
        Unmanaged<HTTP2FrameCodec>.fromOpaque(userData!).takeUnretainedValue()
    }

    private static let readBody: nghttp2_data_source_read_callback = { _, stream, buffer, length, flags, _, userData in
        let me = HTTP2FrameCodec.codec(userData)
        guard let got = me.delegate.codecResponseBody(stream, into: UnsafeMutableRawBufferPointer(start: buffer, count: length)) else {
            return Int(NGHTTP2_ERR_DEFERRED.rawValue)
        }
        if got.end { flags!.pointee |= UInt32(NGHTTP2_DATA_FLAG_EOF.rawValue) }
        return got.count
    }

    /// RFC 9113 §5.1.1: a new stream's id must be higher than every id the client used before;
    /// one it skipped (never opened) is a connection error (PROTOCOL_ERROR). nghttp2 silently
    /// ignores a HEADERS frame on a lower id it no longer knows: caught here, before it is read.
    /// Ids that were opened once and are forgotten now (trailers after the proxy reset that
    /// stream) are left to nghttp2, which ignores them, as its authors advise.
    private func checkNewStreamID(_ id: Int32) {
        // Client streams are odd; an even id is nghttp2's to refuse (this runs before it looks).
        guard id & 1 == 1 else { return }
        if id > highestHeadersStreamID {
            // The next id the client could have used; ids are odd, so `id > next` means
            // `next <= id - 2`. (`highest` is odd and below `id`, so `+ 2` cannot overflow.)
            let next = highestHeadersStreamID == 0 ? 1 : highestHeadersStreamID + 2
            if id > next {
                if skippedIDs.count == Self.maxGaps { skippedIDs.removeFirst() }
                skippedIDs.append(next...(id - 2))
            }
            highestHeadersStreamID = id
        } else if nghttp2_session_find_stream(session, id) == nil && skippedIDs.contains(where: { $0.contains(id) }) {
            _ = nghttp2_session_terminate_session(session, UInt32(HTTP2FrameCodec.protocolError))
        }
    }

    private static func makeCallbacks() -> OpaquePointer {
        var cbs: OpaquePointer?
        nghttp2_session_callbacks_new(&cbs)
        nghttp2_session_callbacks_set_on_begin_frame_callback(cbs) { _, hd, userData in
            guard let hd, hd.pointee.type == HTTP2FrameCodec.headersFrame else { return 0 }
            HTTP2FrameCodec.codec(userData).checkNewStreamID(hd.pointee.stream_id)
            return 0
        }
        nghttp2_session_callbacks_set_on_begin_headers_callback(cbs) { _, frame, userData in
            guard let frame, frame.pointee.hd.type == HTTP2FrameCodec.headersFrame,
                  frame.pointee.headers.cat == NGHTTP2_HCAT_REQUEST else { return 0 }
            HTTP2FrameCodec.codec(userData).delegate.codecStreamOpened(frame.pointee.hd.stream_id)
            return 0
        }
        nghttp2_session_callbacks_set_on_header_callback(cbs) { _, frame, name, nameLength, value, valueLength, _, userData in
            guard let frame, frame.pointee.hd.type == HTTP2FrameCodec.headersFrame else { return 0 }
            let trailers = frame.pointee.headers.cat == NGHTTP2_HCAT_HEADERS
            let ok = HTTP2FrameCodec.codec(userData).delegate.codecField(frame.pointee.hd.stream_id,
                                                         name: UnsafeRawBufferPointer(start: name, count: nameLength),
                                                         value: UnsafeRawBufferPointer(start: value, count: valueLength),
                                                         trailers: trailers)
            return ok ? 0 : Int32(NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue)
        }
        nghttp2_session_callbacks_set_on_frame_recv_callback(cbs) { _, frame, userData in
            guard let frame else { return 0 }
            let me = HTTP2FrameCodec.codec(userData)
            let type = frame.pointee.hd.type, flags = frame.pointee.hd.flags, stream = frame.pointee.hd.stream_id
            let endStream = flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0
            switch type {
            case HTTP2FrameCodec.headersFrame:
                let cat = frame.pointee.headers.cat
                if cat == NGHTTP2_HCAT_REQUEST {
                    me.delegate.codecHeadersComplete(stream, endStream: endStream, trailers: false)
                } else if cat == NGHTTP2_HCAT_HEADERS {
                    me.delegate.codecHeadersComplete(stream, endStream: endStream, trailers: true)
                }
            case HTTP2FrameCodec.dataFrame:
                me.delegate.codecFrameReceived(type: type, flags: flags, stream: stream, length: frame.pointee.hd.length)
                if endStream { me.delegate.codecRequestEnded(stream) }
            case HTTP2FrameCodec.windowUpdateFrame:
                me.delegate.codecFrameReceived(type: type, flags: flags, stream: stream,
                                               length: Int(frame.pointee.window_update.window_size_increment))
            default:
                me.delegate.codecFrameReceived(type: type, flags: flags, stream: stream, length: frame.pointee.hd.length)
            }
            return 0
        }
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs) { _, _, stream, data, length, userData in
            HTTP2FrameCodec.codec(userData).delegate.codecData(stream, UnsafeRawBufferPointer(start: data, count: length))
            return 0
        }
        nghttp2_session_callbacks_set_on_stream_close_callback(cbs) { _, stream, errorCode, userData in
            HTTP2FrameCodec.codec(userData).delegate.codecStreamClosed(stream, errorCode: errorCode)
            return 0
        }
        nghttp2_session_callbacks_set_on_frame_send_callback(cbs) { _, frame, userData in
            guard let frame else { return 0 }
            let type = frame.pointee.hd.type
            if (type == HTTP2FrameCodec.dataFrame || type == HTTP2FrameCodec.headersFrame)
                && frame.pointee.hd.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0 {
                HTTP2FrameCodec.codec(userData).delegate.codecResponseEnded(frame.pointee.hd.stream_id)
            }
            return 0
        }
        nghttp2_session_callbacks_set_on_frame_not_send_callback(cbs) { _, frame, _, userData in
            guard let frame, frame.pointee.hd.type == HTTP2FrameCodec.headersFrame else { return 0 }
            HTTP2FrameCodec.codec(userData).delegate.codecResponseFailed(frame.pointee.hd.stream_id)
            return 0
        }
        nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cbs) { _, frame, _, userData in
            guard let frame else { return 0 }
            HTTP2FrameCodec.codec(userData).delegate.codecInvalidFrame(type: frame.pointee.hd.type, stream: frame.pointee.hd.stream_id)
            return 0
        }
        return cbs!
    }
}

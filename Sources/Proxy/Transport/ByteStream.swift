/// A connected, ordered, reliable byte stream with backpressure: what the HTTP connections read
/// from and write to, whatever carries the bytes. `TCPStream` is one implementation (a libuv TCP
/// handle); `MemoryStream` in the tests is another (bytes in and out of arrays, no sockets); a
/// TLS stream will be a third.
///
/// Contract, the same for every implementation:
/// - Reads arrive through `onRead` while reading is started and no pause reason is set; the
///   buffer is valid only during the call. The end of input arrives once through `onReadEnd`
///   (`UVError.eof` for an orderly end, another code for an error), after which no reads come.
/// - `write` takes up to four buffers and copies what it cannot send at once; nothing of the
///   caller's buffers is kept after it returns. `isCongested` means the queue passed its
///   high-water mark: stop producing until `onDrain`. A failed write fires `onWriteError` once;
///   later writes are dropped.
/// - `shutdown` sends the end of output once everything queued is out, then calls back.
/// - After `close()` no callback fires any more.
/// - No call calls back synchronously: reads, drains and completions arrive later, from the
///   loop (the connection relies on it: `resumeReading` inside an exchange must not re-enter it).
///
/// Class-bound and used through generics (`HTTP1ServerConnection<Client>`, `Pipe<Source, Sink>`), so
/// the release build specialises every call for `TCPStream`: the seam costs nothing per request.
/// Threading: one loop thread.
public protocol ByteStream: AnyObject {
    var onRead: ((UnsafeRawBufferPointer) -> Void)? { get set }
    var onReadEnd: ((Int32) -> Void)? { get set }
    var onWriteError: ((Int32) -> Void)? { get set }
    var onDrain: (() -> Void)? { get set }

    func startReading()
    func pauseReading(_ reason: ReadPause)
    func resumeReading(_ reason: ReadPause)
    var isReadPaused: Bool { get }

    func write(_ b0: UnsafeRawBufferPointer, _ b1: UnsafeRawBufferPointer,
               _ b2: UnsafeRawBufferPointer, _ b3: UnsafeRawBufferPointer)
    var isCongested: Bool { get }
    var hasWriteFailed: Bool { get }
    /// Bytes handed to `write` and bytes delivered by `onRead` since the stream opened.
    var bytesWritten: UInt64 { get }
    var bytesRead: UInt64 { get }

    /// Input or the end of input is waiting that has not been delivered yet (a pooled connection
    /// that has it is stale; a draining server answers a request that has it).
    var hasPendingInputOrEOF: Bool { get }

    func shutdown(_ completion: @escaping (Int32) -> Void)
    func close()
    var isClosing: Bool { get }

    /// The peer's address, if the transport has one.
    var peerAddress: SocketAddress? { get }
    /// This end's address (the listener's, for an accepted connection); a system call each time.
    var localAddress: SocketAddress? { get }
    /// Turns off write coalescing (Nagle) where the transport has it.
    func setNoDelay(_ on: Bool)
}

extension ByteStream {
    @inline(__always)
    public func write(_ b0: UnsafeRawBufferPointer, _ b1: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0)) {
        write(b0, b1, UnsafeRawBufferPointer(start: nil, count: 0), UnsafeRawBufferPointer(start: nil, count: 0))
    }

    public func write(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { write($0) }
    }

    public func setNoDelay() { setNoDelay(true) }
}

/// A `ByteStream` that is opened by connecting to an address: what an upstream connection runs
/// on. `TCPStream` in the proxy; a `MemoryStream` in the tests and fuzz targets, whose "backend"
/// is driven by the test (`MemoryWorker`).
public protocol ConnectingStream: ByteStream {
    /// Starts connecting; `completion` gets 0 or an error code later, on the loop thread (never
    /// from inside this call). Throws when the attempt cannot even start (a local error).
    func connect(to address: SocketAddress, _ completion: @escaping (Int32) -> Void) throws(UVError)
    /// Bytes that go out before anything else on the connection, below any TLS (the PROXY
    /// protocol header): called right after `connect`, they are sent as soon as it is connected.
    func sendFirst(_ bytes: [UInt8])
    /// `hasPendingInputOrEOF`, as far as it can be known without a system call (see `TCPStream`).
    var hasPendingInputInCurrentPoll: Bool { get }
    /// The connection to the address is made (for TLS: the TCP connect, before the handshake).
    /// Happy eyeballs races addresses on this, not on the handshake.
    var isTransportConnected: Bool { get }
}

extension ConnectingStream {
    /// Streams with no network connect of their own (in memory, files) count as connected.
    public var isTransportConnected: Bool { true }
}

/// Reasons a stream's reading can be paused independently of each other; reading resumes when
/// none is left.
public struct ReadPause: OptionSet, Sendable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// The other side of a pipe cannot take more.
    public static let backpressure = ReadPause(rawValue: 1)
    /// Enough pipelined input is buffered.
    public static let pipelined = ReadPause(rawValue: 2)
    /// This stream's own write queue is past its high-water mark: a peer that does not read
    /// its answers is not given more to answer (resumed from `onDrain`).
    public static let outputQueued = ReadPause(rawValue: 4)
}

/// A stream that keeps its reader's wishes in a `ReadWish` and acts on every change of them in
/// one place (`readWishChanged`): the reading-control half of `ByteStream`, written once for
/// `TCPStream` and `TLSStream`.
public protocol ReadWishDriven: AnyObject {
    var readWish: ReadWish { get set }
    /// Start or stop reading (and deliver what is held) to match `readWish`.
    func readWishChanged()
}

extension ReadWishDriven {
    public func startReading() {
        readWish.start()
        readWishChanged()
    }

    public func pauseReading(_ reason: ReadPause) {
        readWish.pause(reason)
        readWishChanged()
    }

    public func resumeReading(_ reason: ReadPause) {
        readWish.resume(reason)
        readWishChanged()
    }

    public var isReadPaused: Bool { readWish.isPaused }
}

/// A stream's reader's wishes: reading started (and not stopped) and which pause reasons are set.
/// Every transport keeps one and reads while `wantsInput`.
public struct ReadWish {
    public private(set) var started = false
    private var pauses: UInt8 = 0
    public init() {}
    public mutating func start() { started = true }
    public mutating func stop() { started = false }
    public mutating func pause(_ reason: ReadPause) { pauses |= reason.rawValue }
    public mutating func resume(_ reason: ReadPause) { pauses &= ~reason.rawValue }
    public var isPaused: Bool { pauses != 0 }
    /// Started and no pause reason set.
    public var wantsInput: Bool { started && pauses == 0 }
}

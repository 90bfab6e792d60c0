import CTLS
import CUV
import Glibc

/// A `ByteStream` that speaks TLS over a `TCPStream`: ciphertext from the socket's reads goes
/// into the engine, plaintext comes out through `onRead`; plaintext written goes out as
/// ciphertext through the socket's write path (and its congestion and drain). The engine never
/// touches the socket, so nothing blocks and no thread is added.
///
/// - The handshake starts at once and has its own deadline; until it completes nothing is
///   delivered, and plaintext written meanwhile waits. `onHandshake` reports the outcome once.
/// - Output the engine makes at any time (handshake records, session tickets, alerts, key
///   updates) is flushed after every engine call.
/// - Plaintext the engine still holds when reading is paused (a record decrypts to more than
///   the reader took before pausing) is delivered from a deferred callback after the resume:
///   the socket raises no event for bytes already read.
/// - Reading from the socket follows the reader's wishes once the handshake is done, so the
///   engine's input buffer stays bounded by one socket read.
/// - `close()` sends one close_notify after a completed handshake (never during one or after a
///   failure), then closes the socket. An end of input without close_notify is reported as an
///   orderly end: HTTP framing says whether a message was complete.
///
/// - A server stream whose first bytes are plain HTTP (a request line where a TLS record should
///   start) reports `.plaintextHTTP` and then passes bytes through unencrypted, so the HTTP
///   connection can answer with a readable `400` instead of a silent close.
///
/// Threading: loop thread only.
public final class TLSStream: ConnectingStream, ReadWishDriven {
    public let transport: TCPStream
    /// Keeps the engine's context alive as long as the session made from it.
    public let context: TLSContext
    private let session: OpaquePointer
    /// The handshake deadline, then the deferred delivery of plaintext held across a pause.
    private let timer: Timer

    public var onRead: ((UnsafeRawBufferPointer) -> Void)?
    public var onReadEnd: ((Int32) -> Void)?
    public var onWriteError: ((Int32) -> Void)?
    public var onDrain: (() -> Void)?
    /// How the handshake ended; called once, before any read.
    public var onHandshake: ((TLSHandshakeOutcome) -> Void)?

    public private(set) var isHandshakeDone = false
    public private(set) var bytesWritten: UInt64 = 0
    public private(set) var bytesRead: UInt64 = 0
    /// When the stream was made (loop milliseconds): the handshake's duration is measured from it.
    public let startedAtMs: UInt64

    public var readWish = ReadWish()
    private var failed = false
    /// Encryption failed inside `write`: `onWriteError` fires from the timer, on the loop.
    private var writeErrorPending = false
    private var writeFailed = false
    /// The socket's end of input, held until the plaintext before it was delivered.
    private var transportEnd: Int32?
    private var endDelivered = false
    /// Plaintext written before the handshake completed.
    private var earlyOutput: [UInt8] = []
    /// The peer spoke plain HTTP: bytes pass through unencrypted (see the type's comment).
    public private(set) var isPlaintextHTTP = false
    /// Plain HTTP bytes read before the reader took them (the first read, in that mode).
    private var plaintextInput: [UInt8] = []
    /// Nothing was fed to the engine yet: the first byte decides whether this is TLS at all.
    private var sawFirstByte = false

    /// A server-side (`context.isServer`) or client-side session on `transport`, which is
    /// connected (or accepted) and owned from here on. A client sends `serverName` as SNI.
    public convenience init(transport: TCPStream, context: TLSContext, serverName: String? = nil, handshakeTimeoutMs: UInt64) throws(UVError) {
        try self.init(connecting: transport, context: context, serverName: serverName, handshakeTimeoutMs: handshakeTimeoutMs)
        begin()
    }

    /// A client session on `transport`, which is not connected yet: `connect(to:_:)` connects it
    /// and completes once the TLS handshake did. `resumption` (a ticket an earlier connection to
    /// the same server got, from this context) is offered to resume instead of a full handshake.
    public init(connecting transport: TCPStream, context: TLSContext, serverName: String?, handshakeTimeoutMs: UInt64,
                resumption: TLSResumption? = nil) throws(UVError) {
        guard let session = ctls_session_new(context.context, context.isServer ? 1 : 0, serverName) else {
            throw UVError(UVError.outOfMemory)
        }
        if let resumption, resumption.context === context { ctls_session_resume(session, resumption.pointer) }
        self.transport = transport
        self.context = context
        self.session = session
        self.handshakeTimeoutMs = handshakeTimeoutMs
        timer = Timer(loop: transport.loop)
        startedAtMs = transport.loop.now
        transport.onRead = { [unowned self] bytes in self.ciphertextArrived(bytes) }
        transport.onReadEnd = { [unowned self] code in self.transportEnded(code) }
        transport.onWriteError = { [unowned self] code in self.writeFailedNow(code) }
        transport.onDrain = { [unowned self] in self.onDrain?() }
        timer.onFire = { [unowned self] in self.timerFired() }
    }

    private let handshakeTimeoutMs: UInt64
    /// The caller of `connect(to:_:)`, told once the handshake is done (0) or failed.
    private var connectCompletion: ((Int32) -> Void)?
    /// Why the handshake or the session failed, for messages (nil while it has not).
    public private(set) var failureReason: String?
    /// A client's session became resumable (a ticket arrived): keep it for the next connection.
    public var onResumption: ((TLSResumption) -> Void)?

    /// Starts the handshake on the connected transport.
    private func begin() {
        if handshakeTimeoutMs > 0 { timer.start(timeoutMs: handshakeTimeoutMs) }
        if !context.isServer { advanceHandshake() }  // the ClientHello goes out now
        transport.startReading()
    }

    /// Reports the handshake's end to whoever waits for it (once).
    private func reportHandshake(_ outcome: TLSHandshakeOutcome) {
        let report = onHandshake
        onHandshake = nil
        let completion = connectCompletion
        connectCompletion = nil
        report?(outcome)
        if let completion { completion(outcome == .done ? 0 : UVError.protocolError) }
    }

    /// Hands a resumable session the engine got (a client's ticket) to `onResumption`.
    @inline(__always)
    private func takeResumption() {
        guard let onResumption, let taken = ctls_session_take_resumption(session) else { return }
        onResumption(TLSResumption(taken, context: context))
    }

    deinit {
        if !transport.isClosing { transport.close() }
        timer.close()
        ctls_session_free(session)
    }

    // MARK: Facts about the session (after the handshake)

    public var version: String { String(cString: ctls_session_version(session)) }
    public var cipher: String { String(cString: ctls_session_cipher(session)) }
    public var serverName: String? { ctls_session_server_name(session).map { String(cString: $0) } }
    public var isResumed: Bool { ctls_session_resumed(session) != 0 }
    public var negotiatedProtocol: [UInt8] {
        var p: UnsafePointer<UInt8>?
        let n = ctls_session_alpn(session, &p)
        guard let p, n > 0 else { return [] }
        return Array(UnsafeBufferPointer(start: p, count: n))
    }

    /// Sends a TLS 1.3 KeyUpdate (fresh keys for this side's output); false when it cannot.
    @discardableResult
    public func sendKeyUpdate() -> Bool {
        guard isHandshakeDone, !failed else { return false }
        let ok = ctls_session_key_update(session) == 0
        flushOutput()
        return ok
    }

    // MARK: Input

    private func ciphertextArrived(_ bytes: UnsafeRawBufferPointer) {
        if failed { return }
        if isPlaintextHTTP { return passPlaintext(bytes) }
        if !sawFirstByte, let first = bytes.first {
            sawFirstByte = true
            // A TLS record starts with its content type (22, handshake); an HTTP request with a
            // method's capital letter.
            if context.isServer && first >= UInt8(ascii: "A") && first <= UInt8(ascii: "Z") {
                isPlaintextHTTP = true
                timer.stop()
                plaintextInput.append(contentsOf: bytes)
                reportHandshake(.plaintextHTTP)
                readWishChanged()
                return
            }
        }
        // The engine reads these bytes in place (libuv's read buffer); what it leaves is copied
        // into the session before this callback returns and the buffer is reused.
        if ctls_session_feed(session, bytes.baseAddress, bytes.count) != 0 { return fail("too much TLS input left unread") }
        defer { if ctls_session_release_input(session) != 0 { fail("too much TLS input left unread") } }
        if !isHandshakeDone { advanceHandshake() }
        if isHandshakeDone { deliver() }
        takeResumption()
    }

    private func advanceHandshake() {
        let rc = ctls_session_handshake(session)
        flushOutput()
        switch rc {
        case Int32(CTLS_HANDSHAKE_DONE):
            isHandshakeDone = true
            timer.stop()
            reportHandshake(.done)
            if transport.isClosing { return }
            if !earlyOutput.isEmpty {
                let early = earlyOutput
                earlyOutput = []
                early.withUnsafeBytes { write($0) }
            }
            updateTransportReading()
        case Int32(CTLS_HANDSHAKE_WANT_INPUT):
            break
        default:
            fail(String(cString: ctls_session_error(session)))
        }
    }

    /// Plain HTTP mode: bytes go to the reader as they are, the first read's once it reads.
    private func passPlaintext(_ bytes: UnsafeRawBufferPointer) {
        guard readWish.wantsInput, !endDelivered, plaintextInput.isEmpty else {
            plaintextInput.append(contentsOf: bytes)
            transport.pauseReading(.backpressure)
            return
        }
        bytesRead &+= UInt64(bytes.count)
        onRead?(bytes)
    }

    private func deliverPlaintext() {
        while readWish.wantsInput && !endDelivered && !transport.isClosing && !plaintextInput.isEmpty {
            let held = plaintextInput
            plaintextInput = []
            bytesRead &+= UInt64(held.count)
            held.withUnsafeBytes { onRead?($0) }
        }
        if plaintextInput.isEmpty, let end = transportEnd, readWish.wantsInput { endInput(end) }
    }

    /// Decrypts into the loop's read buffer (the ciphertext there was copied into the engine
    /// already) and hands plaintext on while the reader wants it.
    private func deliver() {
        let loop = transport.loop
        while readWish.wantsInput && !failed && !transport.isClosing && !endDelivered {
            let n = ctls_session_read(session, loop.plaintextBuffer, loop.readBufferSize)
            flushOutput()  // tickets, key updates, alerts
            if n > 0 {
                bytesRead &+= UInt64(n)
                onRead?(UnsafeRawBufferPointer(start: loop.plaintextBuffer, count: n))
                // Nothing left to decrypt (no plaintext inside the engine, no input it has not
                // read: it never reads ahead of a record): another read could only say "want
                // input", so it is not made. An end of input still has to be seen.
                if transportEnd == nil && ctls_session_has_buffered_input(session) == 0 { return }
                continue
            }
            switch Int32(n) {
            case Int32(CTLS_READ_WANT_INPUT):
                if let end = transportEnd { endInput(truncationAware(end)) }
                return
            case Int32(CTLS_READ_CLOSED):
                return endInput(UVError.eof)
            default:
                return fail(String(cString: ctls_session_error(session)))
            }
        }
    }

    private func transportEnded(_ code: Int32) {
        if failed || endDelivered { return }
        if isPlaintextHTTP {
            transportEnd = code
            return deliverPlaintext()
        }
        if !isHandshakeDone {
            return fail(code == UVError.eof ? "the peer closed during the TLS handshake" : "the connection failed during the TLS handshake: \(UVError(code))",
                        kind: .peerClosed)
        }
        transportEnd = code
        deliver()
    }

    /// A server that closes without close_notify may have cut its response short: for a client
    /// that is a broken end (a close-delimited body must not pass as complete). Clients of the
    /// proxy often skip close_notify; HTTP framing tells whether their request was whole.
    private func truncationAware(_ code: Int32) -> Int32 {
        guard code == UVError.eof, !context.isServer, ctls_session_received_close_notify(session) == 0 else { return code }
        failureReason = "the server closed the connection without a TLS close_notify"
        return UVError.protocolError
    }

    private func endInput(_ code: Int32) {
        guard !endDelivered else { return }
        endDelivered = true
        transport.pauseReading(.backpressure)
        onReadEnd?(code)
    }

    /// A failed handshake or a broken record: the alert (if any) goes out, the reader hears of
    /// it as the end of its input, and the session is not used again.
    private func fail(_ reason: String, kind: TLSHandshakeFailure.Kind = .protocolError) {
        guard !failed else { return }
        failed = true
        failureReason = reason
        flushOutput()
        timer.stop()
        if onHandshake != nil || connectCompletion != nil {
            reportHandshake(.failed(TLSHandshakeFailure(kind: kind, reason: reason)))
        }
        if !endDelivered && !transport.isClosing {
            endDelivered = true
            transport.pauseReading(.backpressure)
            onReadEnd?(UVError.protocolError)
        }
    }

    private func timerFired() {
        if writeErrorPending {
            writeErrorPending = false
            return writeFailedNow(UVError.protocolError)
        }
        if isPlaintextHTTP { return deliverPlaintext() }
        if !isHandshakeDone {
            fail("the TLS handshake did not complete in time", kind: .timeout)
        } else {
            deliver()
        }
    }

    // MARK: Reading control

    public func readWishChanged() {
        if isPlaintextHTTP {
            if readWish.wantsInput { transport.resumeReading(.backpressure) } else { transport.pauseReading(.backpressure) }
            if readWish.wantsInput && (!plaintextInput.isEmpty || transportEnd != nil) && !endDelivered && !timer.isActive {
                timer.start(timeoutMs: 0)
            }
            return
        }
        updateTransportReading()
        // Plaintext (or the end) already inside the engine raises no socket event: deliver it
        // on the next loop turn, never from inside this call.
        if isHandshakeDone && readWish.wantsInput && !endDelivered
            && (ctls_session_has_buffered_input(session) != 0 || transportEnd != nil) && !timer.isActive {
            timer.start(timeoutMs: 0)
        }
    }

    /// During the handshake the socket is always read; afterwards only while the reader reads.
    private func updateTransportReading() {
        if !isHandshakeDone || readWish.wantsInput {
            transport.resumeReading(.backpressure)
        } else {
            transport.pauseReading(.backpressure)
        }
    }

    // MARK: Output

    public func write(_ b0: UnsafeRawBufferPointer, _ b1: UnsafeRawBufferPointer,
                      _ b2: UnsafeRawBufferPointer, _ b3: UnsafeRawBufferPointer) {
        guard !failed, !writeFailed, !writeErrorPending, !transport.isClosing else { return }
        let total = b0.count + b1.count + b2.count + b3.count
        guard total > 0 else { return }
        if isPlaintextHTTP {
            bytesWritten &+= UInt64(total)
            return transport.write(b0, b1, b2, b3)
        }
        guard isHandshakeDone else {
            earlyOutput.append(contentsOf: b0); earlyOutput.append(contentsOf: b1)
            earlyOutput.append(contentsOf: b2); earlyOutput.append(contentsOf: b3)
            return
        }
        bytesWritten &+= UInt64(total)
        // Each buffer in turn (no array per write); the first failure ends the stream's output,
        // reported from the loop (never from inside `write`, as with every other stream).
        guard encrypt(b0), encrypt(b1), encrypt(b2), encrypt(b3) else {
            failureReason = String(cString: ctls_session_error(session))
            writeErrorPending = true
            timer.start(timeoutMs: 0)
            return
        }
        flushOutput()
    }

    /// Hands `bytes` to the engine; false when it failed.
    private func encrypt(_ bytes: UnsafeRawBufferPointer) -> Bool {
        bytes.isEmpty || ctls_session_write(session, bytes.baseAddress, bytes.count) == 0
    }

    private func flushOutput() {
        var bytes: UnsafeRawPointer?
        let n = ctls_session_output(session, &bytes)
        guard n > 0, let bytes else { return }
        transport.write(UnsafeRawBufferPointer(start: bytes, count: n))
        ctls_session_output_sent(session)
    }

    private func writeFailedNow(_ code: Int32) {
        guard !writeFailed else { return }
        writeFailed = true
        onWriteError?(code)
    }

    public var isCongested: Bool { transport.isCongested }
    public var hasWriteFailed: Bool { writeFailed || writeErrorPending || transport.hasWriteFailed }

    public var hasPendingInputOrEOF: Bool {
        if !plaintextInput.isEmpty || transportEnd != nil || failed { return true }
        if isHandshakeDone && !context.isServer { return absorbWaitingInput() }
        return ctls_session_has_buffered_input(session) != 0 || transport.hasPendingInputOrEOF
    }

    /// An idle client connection (pooled, not reading) decides whether it is stale: what waits on
    /// the socket is read into the engine and processed without taking plaintext, so a TLS 1.3
    /// ticket or key update that arrived while idle does not count — data or a close does.
    private func absorbWaitingInput() -> Bool {
        // Not the loop's read buffer: this runs inside other streams' read callbacks (a pooled
        // connection taken while a client's request is being handled), whose bytes live there.
        // A peek first, so the usual case (nothing waiting) needs no buffer at all.
        var byte: UInt8 = 0
        let peeked = recv(transport.fileDescriptor, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT))
        if peeked == 0 { transportEnd = UVError.eof; return true }
        if peeked < 0 {
            if errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR { transportEnd = -errno; return true }
        } else {
            let size = 16 * 1024
            let scratch = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 16)
            defer { scratch.deallocate() }
            while true {
                let n = recv(transport.fileDescriptor, scratch, size, Int32(MSG_DONTWAIT))
                if n > 0 {
                    // Kept by the session at once: the scratch is read into again.
                    if ctls_session_feed(session, scratch, n) != 0 || ctls_session_release_input(session) != 0 { return true }
                    continue
                }
                if n == 0 { transportEnd = UVError.eof; return true }
                if errno == EINTR { continue }
                if errno != EAGAIN && errno != EWOULDBLOCK { transportEnd = -errno; return true }
                break
            }
        }
        let state = ctls_session_peek(session)
        flushOutput()
        takeResumption()
        return state != 0
    }

    // MARK: Ending

    public func shutdown(_ completion: @escaping (Int32) -> Void) {
        if isHandshakeDone && !failed { ctls_session_close_notify(session); flushOutput() }
        transport.shutdown(completion)
    }

    public func close() {
        guard !transport.isClosing else { return }
        if isHandshakeDone && !failed { ctls_session_close_notify(session); flushOutput() }
        onRead = nil
        onReadEnd = nil
        onWriteError = nil
        onDrain = nil
        onHandshake = nil
        onResumption = nil
        connectCompletion = nil
        timer.stop()
        transport.close()
    }

    public var isClosing: Bool { transport.isClosing }

    /// Whether input from the socket's current poll batch (or buffered in the engine) waits; for
    /// a client it is the idle check of `hasPendingInputOrEOF` when the socket is in the batch.
    public var hasPendingInputInCurrentPoll: Bool {
        if !plaintextInput.isEmpty || transportEnd != nil || failed { return true }
        if isHandshakeDone && !context.isServer {
            return transport.hasPendingInputInCurrentPoll ? absorbWaitingInput() : ctls_session_has_buffered_input(session) != 0
        }
        return ctls_session_has_buffered_input(session) != 0 || transport.hasPendingInputInCurrentPoll
    }

    /// Connects the transport, then runs the client handshake; `completion` gets 0 once it is
    /// done, the connect's error, or `UVError.protocolError` when TLS failed (`failureReason`).
    public func connect(to address: SocketAddress, _ completion: @escaping (Int32) -> Void) throws(UVError) {
        try transport.connect(to: address) { [unowned self] status in
            guard status == 0 else { return completion(status) }
            guard !self.transport.isClosing else { return }
            self.connectCompletion = completion
            self.begin()
        }
    }
    /// Written to the TCP connection itself, so it precedes the ClientHello (which goes out once
    /// connected).
    public func sendFirst(_ bytes: [UInt8]) { transport.sendFirst(bytes) }
    public var isTransportConnected: Bool { transport.isTransportConnected }
    public var peerAddress: SocketAddress? { transport.peerAddress }
    public var localAddress: SocketAddress? { transport.localAddress }
    public func setNoDelay(_ on: Bool) { transport.setNoDelay(on) }
}

/// How a server's TLS handshake ended (`TLSStream.onHandshake`).
public enum TLSHandshakeOutcome: Equatable, Sendable {
    case done
    /// The client sent plain HTTP; the stream passes it through so it can be answered.
    case plaintextHTTP
    case failed(TLSHandshakeFailure)
}

public struct TLSHandshakeFailure: Equatable, Sendable {
    public enum Kind: Sendable {
        /// A bad ClientHello, no common version or cipher, a broken record, a refused certificate.
        case protocolError
        /// `handshake_timeout_ms` passed.
        case timeout
        /// The peer closed or reset the connection before the handshake completed.
        case peerClosed
    }
    public let kind: Kind
    public let reason: String
}

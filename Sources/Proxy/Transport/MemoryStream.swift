/// A `ByteStream` over memory: the test drives the peer's side — what it sends, when it stops
/// reading, when it half-closes — and reads back exactly what the proxy wrote, with no sockets,
/// no loop iterations and no timing (like swift-nio's `EmbeddedChannel`).
///
/// While `peerIsReading` the peer takes every write at once; otherwise writes are queued,
/// `isCongested` past `highWater`, and `onDrain` fires when `peerReads` brings the queue back to
/// `lowWater`. Input is delivered synchronously while reading is on and
/// held (in order, end of input last) while it is paused. What libuv would report later — held
/// input after `startReading`/`resumeReading`, a `shutdown` completion — waits for `runPending()`
/// (a loop iteration), so the connection sees the same ordering as over TCP and is never
/// re-entered from its own calls.
/// Threading: the test's thread only.
public final class MemoryStream: ConnectingStream {
    public var onRead: ((UnsafeRawBufferPointer) -> Void)?
    public var onReadEnd: ((Int32) -> Void)?
    public var onWriteError: ((Int32) -> Void)?
    public var onDrain: (() -> Void)?

    /// What the peer has received (taken from the window), in order.
    public private(set) var received: [UInt8] = []
    /// Written but not yet taken by the peer.
    public private(set) var queued: [UInt8] = []
    /// The peer takes every write at once; when false, only what `peerReads` takes.
    public var peerIsReading = true
    public var highWater = 256 * 1024
    public var lowWater = 64 * 1024
    public private(set) var bytesWritten: UInt64 = 0
    public private(set) var bytesRead: UInt64 = 0
    /// The end of output was sent (after everything queued).
    public private(set) var sentEndOfOutput = false
    public private(set) var isClosing = false
    public var peerAddress: SocketAddress? = SocketAddress(ip: "127.0.0.1", port: 40_000)
    public var localAddress: SocketAddress? = SocketAddress(ip: "127.0.0.1", port: 8080)

    private var inbound: [[UInt8]] = []
    private var inboundEnd: Int32?
    private var endDelivered = false
    private var readWish = ReadWish()
    private var congested = false
    private var writeFailed = false
    private var pendingShutdown: ((Int32) -> Void)?
    private var pending: [() -> Void] = []
    private var delivering = false

    public init() {}

    // MARK: The peer's side (driven by the test)

    /// The peer sends `bytes` (delivered at once if the proxy is reading, else when it resumes).
    public func peerSends(_ bytes: [UInt8]) {
        guard !isClosing, inboundEnd == nil, !bytes.isEmpty else { return }
        inbound.append(bytes)
        deliver()
    }

    public func peerSends(_ text: String) { peerSends(Array(text.utf8)) }

    /// The peer half-closes (`UVError.eof`) or resets (another code) its sending side.
    public func peerEnds(_ code: Int32 = UVError.eof) {
        guard !isClosing, inboundEnd == nil else { return }
        inboundEnd = code
        deliver()
    }

    /// The peer reads up to `count` queued bytes (all when nil).
    public func peerReads(_ count: Int? = nil) {
        let n = min(count ?? queued.count, queued.count)
        received.append(contentsOf: queued[..<n])
        queued.removeFirst(n)
        afterQueueShrank()
    }

    /// Runs the completions a real transport would report later (shutdown); returns how many ran.
    @discardableResult
    public func runPending() -> Int {
        var ran = 0
        while !pending.isEmpty {
            let next = pending.removeFirst()
            next()
            ran += 1
        }
        return ran
    }

    /// What the peer received, as text (ISO-8859-1, so every byte shows).
    public var receivedText: String { String(decoding: received, as: UTF8.self) }

    /// Input the proxy has not taken yet (held while its reading is paused).
    public var heldInputBytes: Int { inbound.reduce(0) { $0 + $1.count } }

    // MARK: ByteStream

    public func startReading() {
        readWish.start()
        scheduleDelivery()
    }

    public func pauseReading(_ reason: ReadPause) { readWish.pause(reason) }

    public func resumeReading(_ reason: ReadPause) {
        readWish.resume(reason)
        scheduleDelivery()
    }

    public var isReadPaused: Bool { readWish.isPaused }

    public func write(_ b0: UnsafeRawBufferPointer, _ b1: UnsafeRawBufferPointer,
                      _ b2: UnsafeRawBufferPointer, _ b3: UnsafeRawBufferPointer) {
        guard !isClosing, !writeFailed else { return }
        for b in [b0, b1, b2, b3] where b.count > 0 {
            bytesWritten &+= UInt64(b.count)
            queued.append(contentsOf: b)
        }
        if peerIsReading { peerReads() }
        if queued.count > highWater { congested = true }
    }

    public var isCongested: Bool { queued.count > highWater }
    public var hasWriteFailed: Bool { writeFailed }

    public var hasPendingInputOrEOF: Bool { !inbound.isEmpty || (inboundEnd != nil && !endDelivered) }

    public func shutdown(_ completion: @escaping (Int32) -> Void) {
        guard !isClosing, pendingShutdown == nil, !sentEndOfOutput else { return }
        pendingShutdown = completion
        afterQueueShrank()
    }

    public func close() {
        guard !isClosing else { return }
        isClosing = true
        onRead = nil
        onReadEnd = nil
        onWriteError = nil
        onDrain = nil
        pendingShutdown = nil
        pending.removeAll()
    }

    public func setNoDelay(_ on: Bool) {}

    // MARK: ConnectingStream (a MemoryStream as an upstream connection)

    /// Connects on the next `runPending()` (as a loop would report it), or fails with `connectResult`.
    public func connect(to address: SocketAddress, _ completion: @escaping (Int32) -> Void) throws(UVError) {
        let result = connectResult
        pending.append { [weak self] in
            guard let self, !self.isClosing else { return }
            completion(result)
        }
    }

    /// Goes out first, like every write (the test's backend reads it from `queued`).
    public func sendFirst(_ bytes: [UInt8]) { write(bytes) }

    /// What `connect` reports: 0, or a libuv error code (a refused connection: `UV_ECONNREFUSED`).
    public var connectResult: Int32 = 0

    public var hasPendingInputInCurrentPoll: Bool { hasPendingInputOrEOF }

    // MARK: Internals

    private var isReading: Bool { readWish.wantsInput && !isClosing && !endDelivered }

    private var deliveryScheduled = false

    /// Held input goes to the reader on the next `runPending()`, as a loop would deliver it.
    private func scheduleDelivery() {
        guard !deliveryScheduled, !inbound.isEmpty || (inboundEnd != nil && !endDelivered) else { return }
        deliveryScheduled = true
        pending.append { [weak self] in
            guard let self else { return }
            self.deliveryScheduled = false
            self.deliver()
        }
    }

    /// Hands held input to the reader while it reads; re-entrant calls (from inside `onRead`)
    /// leave the delivery to the outer loop, so bytes are never delivered out of order.
    private func deliver() {
        guard !delivering else { return }
        delivering = true
        defer { delivering = false }
        while isReading {
            if !inbound.isEmpty {
                let chunk = inbound.removeFirst()
                bytesRead &+= UInt64(chunk.count)
                chunk.withUnsafeBytes { onRead?($0) }
            } else if let code = inboundEnd, !endDelivered {
                endDelivered = true
                readWish.stop()
                onReadEnd?(code)
            } else {
                break
            }
        }
    }

    private func afterQueueShrank() {
        if congested && queued.count <= lowWater {
            congested = false
            onDrain?()
        }
        if queued.isEmpty, let completion = pendingShutdown {
            pendingShutdown = nil
            sentEndOfOutput = true
            pending.append { [weak self] in
                guard let self, !self.isClosing else { return }
                completion(0)
            }
        }
    }
}

/// One worker's access log: lines are formatted into a buffer on the loop thread and the buffer
/// goes to the `AccessLogWriter` thread when it is full or `flush_ms` after its first line — the
/// loop itself never writes to the log.
///
/// Threading: its worker's loop only. Ownership: owned by the worker's `ProxyServer`.
final class AccessLogBuffer {
    private let writer: AccessLogWriter
    private var bytes: ByteBuffer
    private var lines = 0
    private var clock = AccessLogClock()
    private let flushTimer: Timer
    private var timerArmed = false
    private(set) var format: AccessLogConfig.Format
    private var bufferBytes: Int
    private var flushMs: Int

    init(loop: EventLoop, writer: AccessLogWriter, config: AccessLogConfig) {
        self.writer = writer
        format = config.format
        bufferBytes = config.bufferBytes
        flushMs = config.flushMs
        bytes = ByteBuffer(capacity: config.bufferBytes + 4096)
        flushTimer = Timer(loop: loop)
        flushTimer.onFire = { [unowned self] in
            self.timerArmed = false
            self.flush()
        }
    }


    /// A reload changed the format or sizes: lines already buffered keep theirs.
    func configure(_ config: AccessLogConfig) {
        format = config.format
        bufferBytes = config.bufferBytes
        flushMs = config.flushMs
    }

    /// `request` is `inout` only to pass the connection's stored head by address; not modified.
    func write(_ entry: AccessLogEntry, upstream: Upstream?, backend: Backend?, tls: TLSSessionFacts?, request: inout RequestHead) {
        clock.update(nowMs: Platform.wallClockMs())
        switch format {
        case .combined: AccessLogFormatter.combined(entry, request, upstream: upstream, backend: backend, tls: tls, time: clock, into: &bytes)
        case .json: AccessLogFormatter.json(entry, request, upstream: upstream, backend: backend, tls: tls, time: clock, into: &bytes)
        }
        lines += 1
        if bytes.count >= bufferBytes {
            flush()
        } else if !timerArmed {
            timerArmed = true
            flushTimer.start(timeoutMs: UInt64(flushMs))
        }
    }

    /// Hands the buffered lines to the writer thread (or counts them dropped).
    func flush() {
        guard lines > 0 else { return }
        writer.submit(bytes.array, lines: lines)
        bytes.removeAll()
        lines = 0
        if timerArmed {
            timerArmed = false
            flushTimer.stop()
        }
    }

    /// Flushes and closes the timer (the worker is stopping).
    func close() {
        flush()
        flushTimer.close()
    }
}

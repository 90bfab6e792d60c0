import Glibc
import Synchronization

/// The access log's one writing thread: workers hand it filled buffers and never wait for the
/// disk (or a terminal, or a pipe nobody reads).
///
/// A buffer is queued under a mutex — once per buffer of a few hundred lines, never per request.
/// When the queue already holds `maxPendingBytes`, the buffer is dropped and its lines counted in
/// `counts.dropped` (and in `/_metrics`): traffic never stalls behind logging.
///
/// The destination is opened by the caller (the supervisor, at start and on SIGHUP), so an
/// unwritable path is reported there; the thread closes a replaced descriptor once it no longer
/// writes to it. Threading: `Sendable`; `submit` from any worker, the rest from the supervisor.
public final class AccessLogWriter: @unchecked Sendable {
    private struct Chunk {
        var bytes: [UInt8]
        var lines: Int
    }

    /// Guarded by `mutex`.
    private var queue: [Chunk] = []
    private var pendingBytes = 0
    private var maxPendingBytes = 8 << 20
    private var descriptor: Int32 = -1
    private var ownsDescriptor = false
    /// Replaced descriptors the thread closes after its current batch.
    private var retired: [Int32] = []
    private var stopping = false
    /// The thread has written its last line and closed the destination.
    private var finished = false
    private var failureReported = false

    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let wake = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var thread: NativeThread?
    private let written = Atomic<UInt64>(0)
    private let dropped = Atomic<UInt64>(0)

    public init() {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(wake, nil)
    }

    deinit {
        pthread_cond_destroy(wake)
        pthread_mutex_destroy(mutex)
        wake.deallocate()
        mutex.deallocate()
    }

    /// Lines written and dropped since start.
    public var counts: (written: UInt64, dropped: UInt64) {
        (written.load(ordering: .relaxed), dropped.load(ordering: .relaxed))
    }

    /// Opens `destination` for appending: a descriptor to hand to `use`, or why it cannot be.
    public static func open(_ destination: AccessLogConfig.Destination) -> Result<(Int32, owned: Bool), AccessLogOpenError> {
        switch destination {
        case .off: return .success((-1, false))
        case .stdout: return .success((1, false))
        case .stderr: return .success((2, false))
        case .file(let path):
            let fd = Glibc.open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
            guard fd >= 0 else { return .failure(AccessLogOpenError(path: path, reason: String(cString: strerror(errno)))) }
            return .success((fd, true))
        }
    }

    /// Switches to a descriptor from `open` (at start, on reload, on SIGHUP for rotation); starts
    /// the thread the first time.
    /// If the thread cannot be started, nothing changes and the caller still owns `opened`.
    public func use(_ opened: (Int32, owned: Bool), maxPendingBytes: Int) throws(ProxyStartError) {
        if thread == nil && opened.0 >= 0 {
            // Started before any state changes: it waits until there is something to write.
            thread = try NativeThread(name: "proxy-log") { [self] in run() }
        }
        pthread_mutex_lock(mutex)
        if ownsDescriptor && descriptor != opened.0 { retired.append(descriptor) }
        descriptor = opened.0
        ownsDescriptor = opened.owned
        self.maxPendingBytes = maxPendingBytes
        failureReported = false
        pthread_cond_broadcast(wake)
        pthread_mutex_unlock(mutex)
    }

    /// Queues one buffer of `lines` lines; false when it was dropped.
    @discardableResult
    func submit(_ bytes: [UInt8], lines: Int) -> Bool {
        pthread_mutex_lock(mutex)
        guard descriptor >= 0, pendingBytes + bytes.count <= maxPendingBytes, !stopping else {
            pthread_mutex_unlock(mutex)
            dropped.wrappingAdd(UInt64(lines), ordering: .relaxed)
            return false
        }
        queue.append(Chunk(bytes: bytes, lines: lines))
        pendingBytes += bytes.count
        pthread_cond_broadcast(wake)
        pthread_mutex_unlock(mutex)
        return true
    }

    /// Writes what is queued, then ends the thread (at exit, after the workers flushed). Waits at
    /// most `timeoutMs`: a destination that blocks for good (a pipe nobody reads) must not keep
    /// the process from exiting; what is still queued then is lost with it.
    public func stop(timeoutMs: Int = 2000) {
        pthread_mutex_lock(mutex)
        stopping = true
        pthread_cond_broadcast(wake)
        var deadline = timespec()
        clock_gettime(CLOCK_REALTIME, &deadline)
        let nanos = Int(deadline.tv_nsec) + (timeoutMs % 1000) * 1_000_000
        deadline.tv_sec += timeoutMs / 1000 + nanos / 1_000_000_000
        deadline.tv_nsec = nanos % 1_000_000_000
        while !finished && thread != nil {
            if pthread_cond_timedwait(wake, mutex, &deadline) == ETIMEDOUT { break }
        }
        let done = finished
        pthread_mutex_unlock(mutex)
        if done { thread?.join() }
        thread = nil
    }

    private func run() {
        while true {
            pthread_mutex_lock(mutex)
            while queue.isEmpty && retired.isEmpty && !stopping { pthread_cond_wait(wake, mutex) }
            let batch = queue
            queue.removeAll()
            let fd = descriptor
            let toClose = retired
            retired.removeAll()
            let done = stopping
            pthread_mutex_unlock(mutex)

            for chunk in batch {
                if fd >= 0 && writeAll(fd, chunk.bytes) {
                    written.wrappingAdd(UInt64(chunk.lines), ordering: .relaxed)
                } else {
                    dropped.wrappingAdd(UInt64(chunk.lines), ordering: .relaxed)
                }
                pthread_mutex_lock(mutex)
                pendingBytes -= chunk.bytes.count
                pthread_mutex_unlock(mutex)
            }
            for old in toClose { _ = Glibc.close(old) }
            if done {
                pthread_mutex_lock(mutex)
                let leftover = queue.isEmpty
                pthread_mutex_unlock(mutex)
                if leftover { break }
            }
        }
        pthread_mutex_lock(mutex)
        if ownsDescriptor { _ = Glibc.close(descriptor) }
        descriptor = -1
        finished = true
        pthread_cond_broadcast(wake)
        pthread_mutex_unlock(mutex)
    }

    /// The whole buffer, or false (reported once per destination) when the write fails.
    private func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        let ok = bytes.withUnsafeBytes { raw -> Bool in
            var offset = 0
            while offset < raw.count {
                let n = Glibc.write(fd, raw.baseAddress! + offset, raw.count - offset)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { return false }
                offset += n
            }
            return true
        }
        if !ok {
            let reason = String(cString: strerror(errno))
            pthread_mutex_lock(mutex)
            let report = !failureReported
            failureReported = true
            pthread_mutex_unlock(mutex)
            if report { Log.error("access log: write failed: \(reason); lines are dropped (counted in proxy_access_log_dropped_lines_total)") }
        }
        return ok
    }
}

public struct AccessLogOpenError: Error, CustomStringConvertible {
    public let path: String
    public let reason: String
    public var description: String { "access_log.path: cannot open \(JSONValue.quoted(path)) for appending: \(reason)" }
}

import CUV

/// One libuv loop and the per-loop resources every handle on it shares.
///
/// Threading: an `EventLoop` and every handle created on it belong to the thread that runs it;
/// none of them may be touched from another thread (use `Wakeup` to get there). That is why
/// these classes are deliberately not `Sendable`.
///
/// The loop owns one 64 KiB read buffer, handed out by every stream's allocation callback:
/// read callbacks consume it synchronously, so memory scales with data that is *stalled*
/// (copied into write queues), not with the number of connections.
public final class EventLoop {
    /// The libuv loop. Only `Loop/` code touches it.
    let uvLoop: UnsafeMutablePointer<uv_loop_t>
    /// The shared read buffer.
    let readBuffer: UnsafeMutableRawPointer
    let readBufferSize: Int
    /// Where TLS streams decrypt into (`readBufferSize` bytes): the ciphertext they decrypt is
    /// read in place from `readBuffer`, so plaintext needs a buffer of its own.
    let plaintextBuffer: UnsafeMutableRawPointer

    public init(readBufferSize: Int = 64 * 1024) {
        cuv_ignore_sigpipe()
        uvLoop = .allocate(capacity: 1)
        let rc = uv_loop_init(uvLoop)
        precondition(rc == 0, "uv_loop_init failed: \(UVError(rc))")
        self.readBufferSize = readBufferSize
        readBuffer = .allocate(byteCount: readBufferSize, alignment: 16)
        plaintextBuffer = .allocate(byteCount: readBufferSize, alignment: 16)
    }

    deinit {
        // Handles still open at this point would be freed under libuv's feet: close and drain them.
        closeAllHandles()
        uv_run(uvLoop, UV_RUN_DEFAULT)
        uv_loop_close(uvLoop)
        uvLoop.deallocate()
        readBuffer.deallocate()
        plaintextBuffer.deallocate()
    }

    /// Runs until no active handle is left (or `stop()`).
    public func run() {
        uv_run(uvLoop, UV_RUN_DEFAULT)
    }

    /// Runs one iteration without blocking when nothing is ready (tests).
    @discardableResult
    public func runOnce(wait: Bool = true) -> Bool {
        uv_run(uvLoop, wait ? UV_RUN_ONCE : UV_RUN_NOWAIT) != 0
    }

    /// Makes `run()` return after the current iteration.
    public func stop() { uv_stop(uvLoop) }

    /// The loop's cached clock in milliseconds (updated once per iteration; cheap).
    public var now: UInt64 { uv_now(uvLoop) }

    /// Closes every handle on the loop; `run()` then returns once their close callbacks ran.
    /// `uv_run` is not re-entrant, so this is how a callback shuts the loop down.
    public func closeAllHandles() {
        uv_walk(uvLoop, { handle, _ in
            guard let handle, uv_is_closing(handle) == 0, let data = uv_handle_get_data(handle) else { return }
            Unmanaged<Handle>.fromOpaque(data).takeUnretainedValue().close()
        }, nil)
    }
}

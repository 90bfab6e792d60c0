import CUV

/// A libuv timer. Fires `onFire` on the loop thread.
public final class Timer: Handle {
    private let timer: UnsafeMutablePointer<uv_timer_t>
    public var onFire: (() -> Void)?

    public init(loop: EventLoop) {
        timer = .allocate(capacity: 1)
        super.init(loop: loop, handle: cuv_timer_as_handle(timer))
        uv_timer_init(loop.uvLoop, timer)
        attach()
    }

    deinit { timer.deallocate() }

    /// (Re)arms the timer: first fire after `timeoutMs`, then every `repeatMs` if non-zero.
    public func start(timeoutMs: UInt64, repeatMs: UInt64 = 0) {
        guard !isClosing else { return }
        uv_timer_start(timer, { t in
            guard let t, let data = uv_handle_get_data(cuv_timer_as_handle(t)) else { return }
            let me = Unmanaged<Timer>.fromOpaque(data).takeUnretainedValue()
            me.onFire?()
        }, timeoutMs, repeatMs)
    }

    public func stop() { uv_timer_stop(timer) }

    public var isActive: Bool { uv_is_active(handle) != 0 }

    override func didClose() { onFire = nil }
}

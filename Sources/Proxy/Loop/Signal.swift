import CUV

/// A libuv signal watcher: the signal is delivered as a callback on the loop thread.
public final class SignalWatcher: Handle {
    private let signal: UnsafeMutablePointer<uv_signal_t>
    public var onSignal: ((Int32) -> Void)?

    public init(loop: EventLoop) {
        signal = .allocate(capacity: 1)
        super.init(loop: loop, handle: cuv_signal_as_handle(signal))
        uv_signal_init(loop.uvLoop, signal)
        attach()
    }

    deinit { signal.deallocate() }

    public func start(_ signum: Int32) throws(UVError) {
        try check(uv_signal_start(signal, { s, signum in
            guard let s, let data = uv_handle_get_data(cuv_signal_as_handle(s)) else { return }
            Unmanaged<SignalWatcher>.fromOpaque(data).takeUnretainedValue().onSignal?(signum)
        }, signum))
    }

    override func didClose() { onSignal = nil }
}

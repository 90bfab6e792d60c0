import CUV

/// A libuv idle handle: while started, `onFire` runs once per loop iteration, before the loop
/// polls for I/O, and the poll does not block. Used to batch work that many callbacks of one
/// iteration schedule (an HTTP/2 connection's frames from all its streams become one write), then
/// stopped again so an idle loop sleeps.
public final class LoopIdle: Handle {
    private let idle: UnsafeMutablePointer<uv_idle_t>
    public var onFire: (() -> Void)?
    public private(set) var isStarted = false

    public init(loop: EventLoop) {
        idle = .allocate(capacity: 1)
        super.init(loop: loop, handle: cuv_idle_as_handle(idle))
        uv_idle_init(loop.uvLoop, idle)
        attach()
    }

    deinit { idle.deallocate() }

    public func start() {
        guard !isStarted, !isClosing else { return }
        isStarted = true
        uv_idle_start(idle) { i in
            guard let i, let data = uv_handle_get_data(cuv_idle_as_handle(i)) else { return }
            Unmanaged<LoopIdle>.fromOpaque(data).takeUnretainedValue().onFire?()
        }
    }

    public func stop() {
        guard isStarted else { return }
        isStarted = false
        uv_idle_stop(idle)
    }

    override func didClose() { onFire = nil }
}

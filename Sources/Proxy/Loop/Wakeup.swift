import CUV
import Synchronization

/// A `uv_async_t`: the one way another thread can wake this loop.
///
/// The `Wakeup` object itself belongs to the loop thread; `sender` hands out the only piece that
/// may cross threads.
public final class Wakeup: Handle {
    private let async: UnsafeMutablePointer<uv_async_t>
    public var onWake: (() -> Void)?

    public init(loop: EventLoop) {
        async = .allocate(capacity: 1)
        super.init(loop: loop, handle: cuv_async_as_handle(async))
        uv_async_init(loop.uvLoop, async) { a in
            guard let a, let data = uv_handle_get_data(cuv_async_as_handle(a)) else { return }
            Unmanaged<Wakeup>.fromOpaque(data).takeUnretainedValue().onWake?()
        }
        attach()
    }

    deinit { async.deallocate() }

    /// The thread-safe sending half. Valid until the `Wakeup` is closed.
    public var sender: Sender { Sender(async: async) }

    override func didClose() { onWake = nil }

    /// `uv_async_send` is libuv's only thread-safe call; this is the one legitimately
    /// `@unchecked Sendable` type in the loop layer.
    public struct Sender: @unchecked Sendable {
        let async: UnsafeMutablePointer<uv_async_t>
        public func send() { uv_async_send(async) }
    }
}

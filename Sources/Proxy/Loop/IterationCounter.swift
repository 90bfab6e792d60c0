import CUV

/// Counts the loop's polls for I/O (a `uv_prepare_t`: it runs right before each poll).
///
/// During one batch of I/O callbacks `current` stays the same, so code can tell that two events
/// came out of the same poll without a system call. The upstream pool uses it to detect, for
/// free, a backend that spoke on an idle connection just as it was taken (see
/// `ClientConnection.upstreamRead`). Unreferenced: it never keeps `run()` alive by itself.
/// Threading: loop thread only.
public final class IterationCounter: Handle {
    private let prepare: UnsafeMutablePointer<uv_prepare_t>
    /// Polls so far; the same for every callback of one batch.
    public private(set) var current: UInt64 = 0

    public init(loop: EventLoop) {
        prepare = .allocate(capacity: 1)
        super.init(loop: loop, handle: cuv_prepare_as_handle(prepare))
        uv_prepare_init(loop.uvLoop, prepare)
        attach()
        uv_prepare_start(prepare) { p in
            guard let p, let data = uv_handle_get_data(cuv_prepare_as_handle(p)) else { return }
            Unmanaged<IterationCounter>.fromOpaque(data).takeUnretainedValue().current &+= 1
        }
        unref()
    }

    deinit { prepare.deallocate() }
}

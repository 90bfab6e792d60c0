import CUV

/// Base of every libuv handle wrapper.
///
/// Ownership (the rule that survived AddressSanitizer and LeakSanitizer): the subclass allocates
/// the C handle storage; after a successful `uv_*_init` it calls `attach()`, which stores one
/// retain of `self` in `handle->data` — the loop now keeps the object alive. `close()` calls
/// `uv_close`; the close callback gives that retain back, calls `didClose()` (where subclasses
/// drop their closures to break capture cycles), and the storage is freed in `deinit`, never earlier.
public class Handle {
    /// The loop outlives every handle on it (it is closed only once they all are), so this
    /// reference skips ARC: `unowned` (safe) cost a runtime retain and release on every read
    /// callback (the read buffer lives on the loop).
    public unowned(unsafe) let loop: EventLoop
    /// The handle's storage viewed as `uv_handle_t`.
    let handle: UnsafeMutablePointer<uv_handle_t>
    public private(set) var isClosing = false
    private var isAttached = false

    init(loop: EventLoop, handle: UnsafeMutablePointer<uv_handle_t>) {
        self.loop = loop
        self.handle = handle
    }

    /// Called right after a successful `uv_*_init`.
    final func attach() {
        uv_handle_set_data(handle, Unmanaged.passRetained(self).toOpaque())
        isAttached = true
    }

    /// Closes the handle. Safe to call more than once.
    public final func close() {
        guard !isClosing else { return }
        isClosing = true
        guard isAttached else { didClose(); return }
        uv_close(handle) { handle in
            guard let handle, let data = uv_handle_get_data(handle) else { return }
            uv_handle_set_data(handle, nil)
            let object = Unmanaged<Handle>.fromOpaque(data).takeRetainedValue()
            object.didClose()
        }
    }

    /// Runs once the close callback came (or at once for a handle never attached).
    /// Subclasses clear their callbacks here; the storage stays until `deinit`.
    func didClose() {}

    /// Stops the handle from keeping `run()` alive on its own.
    public final func unref() { uv_unref(handle) }
}

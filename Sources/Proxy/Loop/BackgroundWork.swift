import CUV

/// Runs a slow, self-contained computation (a password hash) on libuv's thread pool and hands
/// the result back on the loop's thread. The work closure must not touch loop state: it gets only
/// what it captured (immutable, `Sendable`).
///
/// Ownership: each job keeps itself alive (one retain in the request's `data`) until libuv runs
/// its completion, which it always does. Threading: `run` and `done` on the loop thread; `work`
/// on a pool thread.
final class BackgroundWork: @unchecked Sendable {
    private let work: () -> Void
    private let done: () -> Void

    private init(work: @escaping () -> Void, done: @escaping () -> Void) {
        self.work = work
        self.done = done
    }

    /// Queues `work`; `done` gets its result later on `loop`. False when libuv refused the job
    /// (then neither runs).
    @discardableResult
    static func run<R: Sendable>(on loop: EventLoop, _ work: @escaping @Sendable () -> R, done: @escaping (R) -> Void) -> Bool {
        // Written by the pool thread before libuv hands the request back (`uv_queue_work` orders
        // the two), read on the loop thread after.
        let box = ResultBox<R>()
        let job = BackgroundWork(work: { box.value = work() }, done: { if let value = box.value { done(value) } })
        let req = UnsafeMutablePointer<uv_work_t>.allocate(capacity: 1)
        req.pointee.data = Unmanaged.passRetained(job).toOpaque()
        let rc = uv_queue_work(loop.uvLoop, req, { req in
            guard let req else { return }
            Unmanaged<BackgroundWork>.fromOpaque(req.pointee.data).takeUnretainedValue().work()
        }, { req, _ in
            guard let req else { return }
            let me = Unmanaged<BackgroundWork>.fromOpaque(req.pointee.data).takeRetainedValue()
            req.deallocate()
            me.done()
        })
        if rc < 0 {
            Unmanaged<BackgroundWork>.fromOpaque(req.pointee.data).release()
            req.deallocate()
            return false
        }
        return true
    }
}

private final class ResultBox<R>: @unchecked Sendable {
    var value: R?
}

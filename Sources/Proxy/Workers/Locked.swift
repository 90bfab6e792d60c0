import Glibc

/// A value behind a `pthread_mutex_t`, for the little state that crosses threads on the control
/// path (mailboxes, probe records) — never on a request path.
///
/// Why not `Synchronization.Mutex`: on Linux (Swift 6.3) its lock is a futex that
/// ThreadSanitizer cannot see, so `make test-tsan` reported every correctly locked access as a
/// data race. TSan understands pthread mutexes, so with this type it checks the real thing.
/// `@unchecked Sendable` is sound because every access to `value` goes through `withLock`.
final class Locked<Value: Sendable>: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private var value: Value

    init(_ value: Value) {
        mutex = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        self.value = value
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    func withLock<R>(_ body: (inout Value) throws -> R) rethrows -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }
}

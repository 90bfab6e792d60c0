import Glibc

/// A POSIX thread running one `@Sendable` closure: the body is the only thing that crosses to
/// the new thread, so Swift's concurrency checking sees everything a worker starts with.
/// Threading: created and joined by one thread (the supervisor's).
final class NativeThread {
    private var thread = pthread_t()
    private var joined = false

    private final class Body: Sendable {
        let run: @Sendable () -> Void
        let name: String
        init(_ run: @escaping @Sendable () -> Void, name: String) {
            self.run = run
            self.name = name
        }
    }

    /// Starts the thread; `name` (at most 15 bytes) shows in `top -H` and debuggers.
    init(name: String, _ body: @escaping @Sendable () -> Void) throws(ProxyStartError) {
        let context = Unmanaged.passRetained(Body(body, name: name)).toOpaque()
        let rc = pthread_create(&thread, nil, { raw in
            let body = Unmanaged<Body>.fromOpaque(raw!).takeRetainedValue()
            Platform.setThreadName(String(body.name.prefix(15)))
            body.run()
            return nil
        }, context)
        guard rc == 0 else {
            Unmanaged<Body>.fromOpaque(context).release()
            throw ProxyStartError(message: "cannot start thread \(name): \(String(cString: strerror(rc)))")
        }
    }

    /// Waits for the body to return.
    func join() {
        guard !joined else { return }
        joined = true
        pthread_join(thread, nil)
    }
}

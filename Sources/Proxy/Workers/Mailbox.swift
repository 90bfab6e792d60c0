/// Messages for one loop from other threads: a queue behind a lock (`Locked`), and the loop's `Wakeup`
/// to tell it to look. This is the only way the supervisor and the workers talk; it is on the
/// control path (start, reload, shutdown), never on the request path.
///
/// The sender is used under the lock, and `detach()` takes it away under the same lock before
/// the owning loop closes its `Wakeup`: `uv_async_send` on a closed handle would be undefined.
/// Threading: `Sendable`; any thread may `post`, only the owning loop takes.
public final class Mailbox<Message: Sendable>: Sendable {
    private struct State {
        var messages: [Message] = []
        var wake: Wakeup.Sender?
        var closed = false
    }
    private let state = Locked(State())

    public init() {}

    /// Queues `message` and wakes the owner. Returns false when the owner has stopped listening.
    @discardableResult
    public func post(_ message: Message) -> Bool {
        state.withLock { s in
            guard !s.closed else { return false }
            s.messages.append(message)
            s.wake?.send()
            return true
        }
    }

    /// The owner starts listening; messages posted before are returned by the next `takeAll()`.
    public func attach(_ wake: Wakeup.Sender) {
        state.withLock { $0.wake = wake }
    }

    /// Everything posted so far, oldest first.
    public func takeAll() -> [Message] {
        state.withLock { s in
            let taken = s.messages
            s.messages.removeAll()
            return taken
        }
    }

    /// The owner stops listening (before closing its `Wakeup`); later posts are refused.
    /// Returns what was still queued, so the owner can release what it carries.
    @discardableResult
    public func detach() -> [Message] {
        state.withLock { s in
            s.wake = nil
            s.closed = true
            let left = s.messages
            s.messages.removeAll()
            return left
        }
    }
}

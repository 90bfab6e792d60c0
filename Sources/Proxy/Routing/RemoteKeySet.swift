/// The keys of one JWKS URL (`auth.jwt.jwks` naming `https://…`), shared by the supervisor,
/// which fetches them (`KeySetFetcher`), and every worker, which checks tokens with them
/// (`JWTAuthenticator`).
///
/// Workers read `version` (an acquire load) before a signature check and take the lock only
/// when it moved, so checking tokens never waits on the supervisor. A worker that finds no key
/// for a token — none fetched yet, or none with the token's `kid` — asks for a fetch through
/// `needKeys`, which applies the rate limit (`min_refetch_s`) and wakes the supervisor.
///
/// Ownership: `ConfigGeneration.keySets` holds one per distinct source; a generation whose
/// routes name the same source keeps the same object, so keys survive reloads and
/// re-resolutions. Threading: `Sendable`; every mutable part is behind `state`'s lock or is the
/// atomic version word.
public final class RemoteKeySet: @unchecked Sendable {
    public let source: AuthConfig.JWKSSource
    private let versionWord: UnsafeMutablePointer<UInt64>
    private let state: Locked<RemoteKeyState>

    /// `carrying`: the key set of the same URL and CA under other settings (a reload changed
    /// `refresh_s`, say): its keys serve until this one's first fetch.
    public init(_ source: AuthConfig.JWKSSource, carrying previous: RemoteKeySet? = nil) {
        self.source = source
        var start = RemoteKeyState(minRefetchMs: Int64(source.minRefetchS) * 1000)
        if let previous {
            let held = previous.current()
            start.keys = held.keys
            start.version = held.version
        }
        versionWord = .allocate(capacity: 1)
        versionWord.initialize(to: start.version)
        state = Locked(start)
    }

    deinit { versionWord.deallocate() }

    /// Bumped each time the keys change; 0 until a fetch succeeds. Any thread.
    var version: UInt64 { Atomics.sharedLoad(versionWord) }

    /// The keys now, their version and the last fetch's problem (nil after a success).
    func current() -> (keys: [AuthConfig.JWK], version: UInt64, problem: String?) {
        state.withLock { ($0.keys, $0.version, $0.problem) }
    }

    /// A worker found no key for a token: `.wait` when a fetch is under way or has just been
    /// asked for (the worker is told when it ends: `WorkerMessage.keysFetched`), `.refuse` when
    /// the last fetch ended less than `min_refetch_s` ago, when the request already waited once
    /// (`mayWait` false), or when no fetcher serves this key set any more.
    /// `.lookAgain` when the keys changed since the caller's `haveVersion` (a fetch ended
    /// between its look and this call): it checks the token with the new keys first.
    func needKeys(nowMs: Int64, mayWait: Bool, haveVersion: UInt64) -> RemoteKeyState.Answer {
        state.withLock { s in
            guard !s.retired else { return .refuse }
            if s.version != haveVersion { return .lookAgain }
            let answer = s.needKeys(nowMs: nowMs, mayWait: mayWait)
            if answer == .wait && s.refetchWanted { s.wake?.send() }
            return answer
        }
    }

    // MARK: The supervisor's side

    /// `wake` is sent when a worker asks for a fetch. A key set not attached yet (its generation
    /// is being handed out) still tells workers to wait: its fetch is about to start.
    func attach(_ wake: Wakeup.Sender) {
        state.withLock { $0.wake = wake }
    }

    /// No fetcher any more (a reload dropped the last route naming this source, or the proxy is
    /// stopping; before the supervisor closes its `Wakeup`): a fetch that was under way or asked
    /// for will not happen, so workers still holding this key set are refused from now on rather
    /// than told to wait.
    func detach() {
        state.withLock { s in
            s.wake = nil
            s.retired = true
            s.fetching = false
            s.refetchWanted = false
        }
    }

    /// Whether a worker asked for a fetch since the last one started.
    var isWanted: Bool { state.withLock { $0.refetchWanted } }

    func fetchStarted() {
        state.withLock { $0.startFetch() }
    }

    /// A fetch ended with `keys` (nil: it failed, `problem` says why; the keys held so far stay).
    /// Returns whether the keys changed.
    @discardableResult
    func fetchEnded(keys: [AuthConfig.JWK]?, problem: String?, nowMs: Int64) -> Bool {
        state.withLock { s in
            let changed = s.finishFetch(keys: keys, problem: problem, nowMs: nowMs)
            if changed { Atomics.sharedStore(versionWord, s.version) }
            return changed
        }
    }
}

/// `RemoteKeySet`'s bookkeeping as a value: what a worker that lacks a key is told, and what a
/// fetch changes. No I/O, no clock of its own (tested directly).
struct RemoteKeyState {
    enum Answer: Equatable { case wait, refuse, lookAgain }

    var keys: [AuthConfig.JWK] = []
    /// 0 until the first fetch succeeds; +1 whenever the keys change.
    var version: UInt64 = 0
    /// Why the last fetch failed; nil after a success.
    var problem: String?
    var fetching = false
    /// A worker asked for a fetch that has not started yet.
    var refetchWanted = false
    /// When the last fetch ended (nil: none has). Measured from the end, so a fetch slower than
    /// `min_refetch_s` cannot be followed at once by the next.
    var lastEndMs: Int64?
    let minRefetchMs: Int64
    /// The supervisor's wake-up for `refetchWanted`.
    var wake: Wakeup.Sender?
    /// No fetcher will serve this key set again.
    var retired = false

    init(minRefetchMs: Int64) { self.minRefetchMs = minRefetchMs }

    /// `mayWait` false (the request was resumed after some fetch ended — maybe another key
    /// set's): it may wait for a fetch of this set already asked for or under way, but never asks
    /// for one itself, so no request can keep fetches going back to back.
    mutating func needKeys(nowMs: Int64, mayWait: Bool) -> Answer {
        if fetching || refetchWanted { return .wait }
        guard mayWait else { return .refuse }
        if let last = lastEndMs, nowMs - last < minRefetchMs { return .refuse }
        refetchWanted = true
        return .wait
    }

    mutating func startFetch() {
        fetching = true
        refetchWanted = false
    }

    mutating func finishFetch(keys fetched: [AuthConfig.JWK]?, problem why: String?, nowMs: Int64) -> Bool {
        fetching = false
        lastEndMs = nowMs
        guard let fetched else {
            problem = why ?? "the fetch failed"
            return false
        }
        problem = nil
        guard fetched != keys || version == 0 else { return false }
        keys = fetched
        version += 1
        return true
    }
}

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

    public init(_ source: AuthConfig.JWKSSource) {
        self.source = source
        versionWord = .allocate(capacity: 1)
        versionWord.initialize(to: 0)
        state = Locked(RemoteKeyState(minRefetchMs: Int64(source.minRefetchS) * 1000))
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
    /// the last fetch started less than `min_refetch_s` ago.
    func needKeys(nowMs: Int64) -> RemoteKeyState.Answer {
        state.withLock { s in
            guard let wake = s.wake else { return .refuse }
            let answer = s.needKeys(nowMs: nowMs)
            if answer == .wait && s.refetchWanted { wake.send() }
            return answer
        }
    }

    // MARK: The supervisor's side

    /// `wake` is sent when a worker asks for a fetch.
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
            s.fetching = false
            s.refetchWanted = false
        }
    }

    /// Whether a worker asked for a fetch since the last one started.
    var isWanted: Bool { state.withLock { $0.refetchWanted } }

    func fetchStarted(nowMs: Int64) {
        state.withLock { $0.startFetch(nowMs: nowMs) }
    }

    /// A fetch ended with `keys` (nil: it failed, `problem` says why; the keys held so far stay).
    /// Returns whether the keys changed.
    @discardableResult
    func fetchEnded(keys: [AuthConfig.JWK]?, problem: String?) -> Bool {
        state.withLock { s in
            let changed = s.finishFetch(keys: keys, problem: problem)
            if changed { Atomics.sharedStore(versionWord, s.version) }
            return changed
        }
    }
}

/// `RemoteKeySet`'s bookkeeping as a value: what a worker that lacks a key is told, and what a
/// fetch changes. No I/O, no clock of its own (tested directly).
struct RemoteKeyState {
    enum Answer: Equatable { case wait, refuse }

    var keys: [AuthConfig.JWK] = []
    /// 0 until the first fetch succeeds; +1 whenever the keys change.
    var version: UInt64 = 0
    /// Why the last fetch failed; nil after a success.
    var problem: String?
    var fetching = false
    /// A worker asked for a fetch that has not started yet.
    var refetchWanted = false
    /// When the last fetch started (nil: never).
    var lastStartMs: Int64?
    let minRefetchMs: Int64
    /// The supervisor's wake-up for `refetchWanted`.
    var wake: Wakeup.Sender?

    init(minRefetchMs: Int64) { self.minRefetchMs = minRefetchMs }

    mutating func needKeys(nowMs: Int64) -> Answer {
        if fetching || refetchWanted { return .wait }
        if let last = lastStartMs, nowMs - last < minRefetchMs { return .refuse }
        refetchWanted = true
        return .wait
    }

    mutating func startFetch(nowMs: Int64) {
        fetching = true
        refetchWanted = false
        lastStartMs = nowMs
    }

    mutating func finishFetch(keys fetched: [AuthConfig.JWK]?, problem why: String?) -> Bool {
        fetching = false
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

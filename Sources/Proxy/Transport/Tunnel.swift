/// What the client connection calls on its tunnel, whatever the upstream's stream type.
protocol ClientTunnel: AnyObject {
    func clientRead(_ bytes: UnsafeRawBufferPointer)
    func clientDrained()
    /// The client finished sending (FIN) or failed.
    func clientEnded(_ code: Int32)
    /// Ends the tunnel at once; the owner closes both streams.
    func end()
}

/// Two connections joined byte for byte after a `101 Switching Protocols` (WebSocket or another
/// upgrade): whatever one side sends goes to the other, with backpressure both ways, until both
/// have finished.
///
/// A clean close (FIN) from one side is passed on as a half-close of the other (`shutdown` once
/// what is queued for it is out), so a protocol's closing handshake can still complete in the
/// other direction; the tunnel ends when both half-closes have completed — never while bytes
/// are still queued for a side. A reset or write error on
/// either side ends it at once. `timeouts.tunnel_idle_ms` (default 1 hour) bounds silence in
/// both directions together — not `upstream_ms`, since a WebSocket may legitimately be quiet for
/// minutes.
///
/// The owning `HTTP1ServerConnection` routes the client stream's callbacks here, the upstream
/// connection reports here directly (the tunnel is its delegate), and the connection closes both
/// streams when `onEnd` fires. Threading: loop thread only.
final class Tunnel<Client: ByteStream, Upstream: ByteStream>: UpstreamConnectionDelegate, ClientTunnel {
    private let loop: EventLoop
    private let client: Client
    private let upstream: Upstream
    private var toUpstream: Pipe<Client, Upstream>
    private var toClient: Pipe<Upstream, Client>
    private let timer: Timer
    private let idleLimitMs: UInt64
    private var lastActivity: UInt64
    /// Our FIN went out to each side (after everything queued for it).
    private var upstreamShutDown = false
    private var clientShutDown = false
    private var onEnd: (() -> Void)?

    init(loop: EventLoop, client: Client, upstream: Upstream, idleLimitMs: Int, onEnd: @escaping () -> Void) {
        self.loop = loop
        self.client = client
        self.upstream = upstream
        toUpstream = Pipe(from: client, to: upstream)
        toClient = Pipe(from: upstream, to: client)
        timer = Timer(loop: loop)
        self.idleLimitMs = UInt64(max(idleLimitMs, 1))
        lastActivity = loop.now
        self.onEnd = onEnd
    }

    /// Starts relaying. `fromClient` are bytes the client sent behind its upgrade request,
    /// `fromUpstream` those the backend sent right after its 101 head: both go through first.
    func start(fromClient: [UInt8], fromUpstream: UnsafeRawBufferPointer) {
        timer.onFire = { [unowned self] in self.checkIdle() }
        timer.start(timeoutMs: idleLimitMs)
        if !fromUpstream.isEmpty { toClient.send(fromUpstream) }
        if !fromClient.isEmpty { fromClient.withUnsafeBytes { toUpstream.send($0) } }
    }

    func clientRead(_ bytes: UnsafeRawBufferPointer) {
        lastActivity = loop.now
        toUpstream.send(bytes)
    }

    func upstreamRead(_ bytes: UnsafeRawBufferPointer) {
        lastActivity = loop.now
        toClient.send(bytes)
    }

    func upstreamWriteFailed(_ code: Int32) { upstreamEnded(code) }

    func clientDrained() { toClient.sinkDrained() }
    func upstreamDrained() { toUpstream.sinkDrained() }

    /// The client finished sending (FIN) or failed.
    func clientEnded(_ code: Int32) { passOn(code, to: upstream, done: \.upstreamShutDown, other: \.clientShutDown) }

    /// The backend finished sending (FIN) or failed.
    func upstreamEnded(_ code: Int32) { passOn(code, to: client, done: \.clientShutDown, other: \.upstreamShutDown) }

    /// One side's end: a FIN becomes a half-close of `sink` (after what is queued for it); the
    /// tunnel ends once both directions are shut down, or at once on an error.
    private func passOn<Sink: ByteStream>(_ code: Int32, to sink: Sink, done: ReferenceWritableKeyPath<Tunnel, Bool>,
                        other: KeyPath<Tunnel, Bool>) {
        guard code == UVError.eof else { return end() }
        sink.shutdown { [weak self] status in
            guard let self else { return }
            self[keyPath: done] = true
            if status < 0 || self[keyPath: other] { end() }
        }
    }

    private func checkIdle() {
        let silent = loop.now &- lastActivity
        if silent >= idleLimitMs { return end() }
        timer.start(timeoutMs: idleLimitMs - silent)
    }

    /// Ends the tunnel; the owner closes both streams.
    func end() {
        guard let onEnd else { return }
        self.onEnd = nil
        timer.close()
        toUpstream.detach()
        toClient.detach()
        onEnd()
    }
}

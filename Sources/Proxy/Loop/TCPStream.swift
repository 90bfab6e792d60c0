import CUV
import Glibc

/// A connected TCP stream: reads delivered as closures, writes with `uv_try_write` first.
///
/// Reads hand out a view of the loop's shared read buffer: it is valid only during `onRead`.
/// Writes go out at once when the kernel takes them; only what it does not take is copied into
/// one heap block per write (the request and the bytes together) and queued. `queuedBytes`
/// above `highWater` means "stop producing"; `onDrain` fires when the queue falls to `lowWater`.
///
/// After `close()` no callback fires any more, though libuv may still complete requests.
/// Threading: loop thread only.
public final class TCPStream: Handle, ConnectingStream, ReadWishDriven {
    let tcp: UnsafeMutablePointer<uv_tcp_t>
    var stream: UnsafeMutablePointer<uv_stream_t> { cuv_tcp_as_stream(tcp) }

    /// Bytes arrived; the buffer is only valid during the call.
    public var onRead: ((UnsafeRawBufferPointer) -> Void)?
    /// The read side ended: `UVError.eof` for an orderly close, another code for an error.
    public var onReadEnd: ((Int32) -> Void)?
    /// A queued write failed (the peer reset or closed); fired once.
    public var onWriteError: ((Int32) -> Void)?
    /// The write queue fell back to `lowWater` after having exceeded `highWater`.
    public var onDrain: (() -> Void)?

    /// Bytes handed to `uv_write` whose callback has not come yet.
    public private(set) var queuedBytes = 0
    /// Bytes handed to `write` (queued or sent) and bytes read, since the stream opened: the
    /// metrics' client traffic and the access log's bytes sent.
    public private(set) var bytesWritten: UInt64 = 0
    public private(set) var bytesRead: UInt64 = 0
    public var highWater = 256 * 1024
    public var lowWater = 64 * 1024
    private var congested = false
    private var writeFailed = false

    public var readWish = ReadWish()
    private var reading = false

    private var onConnect: ((Int32) -> Void)?
    /// `connect` completed successfully.
    public private(set) var isTransportConnected = false
    private var onShutdown: ((Int32) -> Void)?

    public init(loop: EventLoop) {
        tcp = .allocate(capacity: 1)
        super.init(loop: loop, handle: cuv_tcp_as_handle(tcp))
        uv_tcp_init(loop.uvLoop, tcp)
        attach()
    }

    deinit { tcp.deallocate() }

    override func didClose() {
        onRead = nil
        onReadEnd = nil
        onWriteError = nil
        onDrain = nil
        onConnect = nil
        onShutdown = nil
    }

    // MARK: Options and addresses

    public func setNoDelay(_ on: Bool = true) { uv_tcp_nodelay(tcp, on ? 1 : 0) }

    public var peerAddress: SocketAddress? { proxiedSource ?? SocketAddress.of(tcp, uv_tcp_getpeername) }

    /// The client a PROXY protocol header named (a listener's `proxy_protocol`): what
    /// `peerAddress` reports from then on.
    var proxiedSource: SocketAddress?
    /// Bytes read after a PROXY protocol header, for the next reader (`deliverReplay`).
    var replay: [UInt8] = []

    /// libuv holds writes made while connecting and sends them, in order, once connected.
    public func sendFirst(_ bytes: [UInt8]) { write(bytes) }

    /// Hands `replay` to `onRead` (the reader that follows the PROXY header, once it is set up).
    func deliverReplay() {
        guard !replay.isEmpty, !isClosing, let onRead else { return }
        let bytes = replay
        replay = []
        bytes.withUnsafeBytes { onRead($0) }
    }

    public var localAddress: SocketAddress? { SocketAddress.of(tcp, uv_tcp_getsockname) }

    /// The OS file descriptor (for `/proc` checks and socket options libuv does not wrap).
    public var fileDescriptor: Int32 {
        var fd: uv_os_fd_t = -1
        uv_fileno(handle, &fd)
        return fd
    }

    // MARK: Connecting

    /// Starts connecting; `completion` gets 0 or a libuv error code on the loop thread.
    public func connect(to address: SocketAddress, _ completion: @escaping (Int32) -> Void) throws(UVError) {
        let req = UnsafeMutablePointer<uv_connect_t>.allocate(capacity: 1)
        let rc = address.withSockAddr { addr in
            uv_tcp_connect(req, tcp, addr) { req, status in
                guard let req else { return }
                let streamPtr = req.pointee.handle
                req.deallocate()
                guard let streamPtr, let data = uv_handle_get_data(UnsafeMutableRawPointer(streamPtr).assumingMemoryBound(to: uv_handle_t.self)) else { return }
                let me = Unmanaged<TCPStream>.fromOpaque(data).takeUnretainedValue()
                let completion = me.onConnect
                me.onConnect = nil
                if status == 0 { me.isTransportConnected = true }
                if !me.isClosing { completion?(status) }
            }
        }
        if rc < 0 {
            req.deallocate()
            throw UVError(rc)
        }
        onConnect = completion
    }

    // MARK: Reading

    public func stopReading() {
        readWish.stop()
        readWishChanged()
    }

    public func readWishChanged() {
        let should = readWish.wantsInput && !isClosing
        guard should != reading else { return }
        reading = should
        if should {
            // `_withUnsafeGuaranteedRef`: `handle->data` holds a retain until the close
            // callback, so the callbacks need not retain the stream again.
            uv_read_start(stream, { h, _, buf in
                guard let h, let buf, let data = uv_handle_get_data(h) else { return }
                Unmanaged<TCPStream>.fromOpaque(data)._withUnsafeGuaranteedRef { me in
                    buf.pointee = uv_buf_init(me.loop.readBuffer.assumingMemoryBound(to: CChar.self), UInt32(me.loop.readBufferSize))
                }
            }, { s, nread, buf in
                guard let s, let data = uv_handle_get_data(UnsafeMutableRawPointer(s).assumingMemoryBound(to: uv_handle_t.self)) else { return }
                Unmanaged<TCPStream>.fromOpaque(data)._withUnsafeGuaranteedRef { me in
                    if me.isClosing { return }
                    if nread > 0 {
                        me.bytesRead &+= UInt64(nread)
                        me.onRead?(UnsafeRawBufferPointer(start: buf!.pointee.base, count: nread))
                    } else if nread < 0 {
                        me.readWish.stop()
                        me.readWishChanged()
                        me.onReadEnd?(Int32(nread))
                    }
                }
            })
        } else {
            uv_read_stop(stream)
        }
    }

    // MARK: Writing

    /// Writes up to four buffers as one gathered write. Nothing is retained from the caller's
    /// buffers after the call returns. Inlined: it is on every request's path, and with callers
    /// in several streams (TLS too) the compiler would otherwise outline it (+170 instructions
    /// per proxied request in callgrind).
    @inline(__always)
    public func write(_ b0: UnsafeRawBufferPointer,
                      _ b1: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0),
                      _ b2: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0),
                      _ b3: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0)) {
        guard !isClosing, !writeFailed else { return }
        let total = b0.count + b1.count + b2.count + b3.count
        guard total > 0 else { return }
        bytesWritten &+= UInt64(total)
        withUnsafeTemporaryAllocation(of: uv_buf_t.self, capacity: 4) { bufs in
            var n = 0
            // Written out rather than a nested function: that became an outlined closure call per buffer.
            if b0.count > 0 { bufs[n] = Self.uvBuf(b0); n += 1 }
            if b1.count > 0 { bufs[n] = Self.uvBuf(b1); n += 1 }
            if b2.count > 0 { bufs[n] = Self.uvBuf(b2); n += 1 }
            if b3.count > 0 { bufs[n] = Self.uvBuf(b3); n += 1 }
            var written = 0
            if queuedBytes == 0 {
                let rc = uv_try_write(stream, bufs.baseAddress!, UInt32(n))
                if rc == total { return }
                if rc > 0 { written = Int(rc) }
                // On EAGAIN queue it; on a hard error queue it too, so the failure is reported
                // from uv_write's callback on a clean stack rather than re-entering the caller.
            }
            enqueue(bufs: bufs, count: n, skipping: written, total: total)
        }
    }


    @inline(__always)
    private static func uvBuf(_ b: UnsafeRawBufferPointer) -> uv_buf_t {
        uv_buf_init(UnsafeMutableRawPointer(mutating: b.baseAddress!).assumingMemoryBound(to: CChar.self), UInt32(b.count))
    }

    private func enqueue(bufs: UnsafeMutableBufferPointer<uv_buf_t>, count: Int, skipping: Int, total: Int) {
        let remaining = total - skipping
        let headerSize = MemoryLayout<uv_write_t>.stride
        let block = UnsafeMutableRawPointer.allocate(byteCount: headerSize + remaining, alignment: 16)
        var dst = block + headerSize
        var skip = skipping
        for i in 0..<count {
            var len = Int(bufs[i].len)
            var src = UnsafeRawPointer(bufs[i].base!)
            if skip >= len { skip -= len; continue }
            src += skip
            len -= skip
            skip = 0
            dst.copyMemory(from: src, byteCount: len)
            dst += len
        }
        let req = block.bindMemory(to: uv_write_t.self, capacity: 1)
        uv_req_set_data(UnsafeMutableRawPointer(req).assumingMemoryBound(to: uv_req_t.self), UnsafeMutableRawPointer(bitPattern: remaining))
        var buf = uv_buf_init((block + headerSize).assumingMemoryBound(to: CChar.self), UInt32(remaining))
        queuedBytes += remaining
        let rc = uv_write(req, stream, &buf, 1) { req, status in
            guard let req else { return }
            let size = Int(bitPattern: uv_req_get_data(UnsafeMutableRawPointer(req).assumingMemoryBound(to: uv_req_t.self)))
            let streamPtr = req.pointee.handle
            UnsafeMutableRawPointer(req).deallocate()
            guard let streamPtr, let data = uv_handle_get_data(UnsafeMutableRawPointer(streamPtr).assumingMemoryBound(to: uv_handle_t.self)) else { return }
            Unmanaged<TCPStream>.fromOpaque(data).takeUnretainedValue().writeCompleted(size: size, status: status)
        }
        if rc < 0 {
            queuedBytes -= remaining
            block.deallocate()
            // uv_write refuses only a stream that can no longer write (closed or shut down);
            // the owner learns of that socket's end through onReadEnd, so this is not reported
            // again here — calling back from inside write() would re-enter the caller.
            writeFailed = true
        }
        if queuedBytes > highWater { congested = true }
    }

    private func writeCompleted(size: Int, status: Int32) {
        queuedBytes -= size
        // libuv completes writes that finished before `uv_close` after it, with their real
        // status: whoever closed the stream is done with it and must not hear about them.
        guard !isClosing else { return }
        if status < 0 {
            if status != UVError.canceled && !writeFailed {
                writeFailed = true
                onWriteError?(status)
            }
            return
        }
        if congested && queuedBytes <= lowWater {
            congested = false
            onDrain?()
        }
    }

    /// Whether producers should stop feeding this stream.
    public var isCongested: Bool { queuedBytes > highWater }
    public var hasWriteFailed: Bool { writeFailed }

    // MARK: Shutdown

    /// Whether the kernel holds unread input or a FIN for this socket that libuv has not
    /// delivered yet (a non-blocking `recv(MSG_PEEK)`). Used before reusing an idle pooled
    /// connection: its read event may sit later in the same epoll batch.
    public var hasPendingInputOrEOF: Bool {
        var byte: UInt8 = 0
        let n = recv(fileDescriptor, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT))
        if n < 0 { return errno != EAGAIN && errno != EWOULDBLOCK }
        return true  // data (n > 0) or EOF (n == 0)
    }

    /// `hasPendingInputOrEOF`, asked only when this socket is listed in the batch of poll events
    /// the loop is dispatching now (a scan of that batch, no system call): input that was
    /// already waiting when the batch was polled shows up there, whatever its position in the
    /// batch. What arrives after the poll is not seen — the keep-alive race every HTTP/1
    /// client has. Outside an I/O callback (or on a libuv that hides its batch) it asks the socket.
    public var hasPendingInputInCurrentPoll: Bool {
        cuv_fd_in_current_poll_batch(loop.uvLoop, fileDescriptor) != 0 && hasPendingInputOrEOF  // -1: unknown, ask
    }

    /// Sends FIN once every queued write is out; `completion` gets 0 or an error.
    public func shutdown(_ completion: @escaping (Int32) -> Void) {
        guard !isClosing, onShutdown == nil else { return }
        let req = UnsafeMutablePointer<uv_shutdown_t>.allocate(capacity: 1)
        let rc = uv_shutdown(req, stream) { req, status in
            guard let req else { return }
            let streamPtr = req.pointee.handle
            req.deallocate()
            guard let streamPtr, let data = uv_handle_get_data(UnsafeMutableRawPointer(streamPtr).assumingMemoryBound(to: uv_handle_t.self)) else { return }
            let me = Unmanaged<TCPStream>.fromOpaque(data).takeUnretainedValue()
            let completion = me.onShutdown
            me.onShutdown = nil
            if !me.isClosing { completion?(status) }
        }
        if rc < 0 {
            req.deallocate()
            completion(rc)
            return
        }
        onShutdown = completion
    }
}

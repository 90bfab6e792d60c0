/// A static route's "backend connection": a `ConnectingStream` that reads the request the
/// exchange forwards and answers it from files, as an HTTP/1.1 origin would — so static files
/// go through the same relay as proxied responses (HTTP/1.1 and HTTP/2 clients, `HEAD`,
/// backpressure, access log, metrics, policies, response header rules) with nothing special
/// on the request path.
///
/// What it answers (`StaticFilesConfig`):
/// - `GET`/`HEAD` only (405 with `Allow` otherwise); paths decided by `StaticFilePath` (hidden
///   files, encoded separators: 404) and opened by `FileAccess` (symbolic links out of the root,
///   devices, FIFOs: 404);
/// - a directory: 301 to the path with `/`, then its `index`; no listings;
/// - `spa_fallback`: a `GET`/`HEAD` with no such file, from a client that accepts HTML, gets the
///   root's index;
/// - `precompressed`: `FILE.br` / `FILE.gz` for clients that accept them (`Content-Encoding`,
///   `Vary: Accept-Encoding`, the original's type);
/// - validators `ETag` / `Last-Modified`, conditionals (304, 412) and one byte `Range` (206,
///   416) by `ConditionalRequest`.
///
/// The body is read a chunk (`read_chunk_bytes`) at a time on the thread pool, the next only
/// after the relay took the previous one and wants more: one chunk in memory per response, and
/// a slow client slows the reading. Every answer ends with `Connection: close`, so the stream is
/// never pooled.
///
/// Threading: one worker's loop. Contract as `ByteStream`: nothing calls back from inside a
/// call; after `close()` nothing calls back at all.
final class StaticFileStream: ConnectingStream {
    var onRead: ((UnsafeRawBufferPointer) -> Void)?
    var onReadEnd: ((Int32) -> Void)?
    var onWriteError: ((Int32) -> Void)?
    var onDrain: (() -> Void)?

    private let loop: EventLoop
    private let files: StaticFilesConfig
    private let soon: Timer
    /// Reports the "connect" from the loop.
    private let connected: Timer
    private var readWish = ReadWish()
    private(set) var isClosing = false
    private(set) var bytesWritten: UInt64 = 0
    private(set) var bytesRead: UInt64 = 0

    /// The forwarded request until its head is complete.
    private var request: [UInt8] = []
    private var begun = false
    /// Bytes ready for the reader (the head, then one chunk at a time).
    private var ready: [UInt8] = []
    /// The file being sent, where the next read starts and where the body ends (exclusive).
    private var descriptor: Int32 = -1
    private var nextOffset: UInt64 = 0
    private var endOffset: UInt64 = 0
    private var reading = false
    private var finished = false
    private var endDelivered = false

    init(loop: EventLoop, files: StaticFilesConfig) {
        self.loop = loop
        self.files = files
        soon = Timer(loop: loop)
        connected = Timer(loop: loop)
        soon.onFire = { [unowned self] in pump() }
    }

    // MARK: ConnectingStream

    func connect(to address: SocketAddress, _ completion: @escaping (Int32) -> Void) throws(UVError) {
        connected.onFire = { [unowned self] in
            connected.close()
            if !isClosing { completion(0) }
        }
        connected.start(timeoutMs: 0)
    }

    func sendFirst(_ bytes: [UInt8]) {}
    var hasPendingInputInCurrentPoll: Bool { false }

    // MARK: ByteStream

    func startReading() {
        readWish.start()
        schedule()
    }

    func pauseReading(_ reason: ReadPause) { readWish.pause(reason) }

    func resumeReading(_ reason: ReadPause) {
        readWish.resume(reason)
        schedule()
    }

    var isReadPaused: Bool { readWish.isPaused }

    func write(_ b0: UnsafeRawBufferPointer, _ b1: UnsafeRawBufferPointer, _ b2: UnsafeRawBufferPointer, _ b3: UnsafeRawBufferPointer) {
        guard !isClosing else { return }
        for b in [b0, b1, b2, b3] where b.count > 0 {
            bytesWritten &+= UInt64(b.count)
            // Only the head matters (a GET has no body; another method is refused unread).
            if !begun { request.append(raw: b) }
        }
        guard !begun else { return }
        if let end = HeadParser.endOfHead(in: request) {
            begun = true
            request.removeSubrange(end...)
            schedule { $0.begin() }
        } else if request.count > 1 << 20 {
            begun = true
            schedule { $0.answer(status: 431, text: "the request head is too large") }
        }
    }

    var isCongested: Bool { false }
    var hasWriteFailed: Bool { false }
    var hasPendingInputOrEOF: Bool { !ready.isEmpty || (finished && !endDelivered) }

    func shutdown(_ completion: @escaping (Int32) -> Void) {
        schedule { _ in completion(0) }
    }

    func close() {
        guard !isClosing else { return }
        isClosing = true
        onRead = nil
        onReadEnd = nil
        onWriteError = nil
        onDrain = nil
        soon.close()
        connected.close()
        // A read still running on the pool uses the descriptor: its completion closes it.
        if !reading { FileAccess.close(descriptor, on: loop) }
        descriptor = -1
    }

    var peerAddress: SocketAddress? { nil }
    var localAddress: SocketAddress? { nil }
    func setNoDelay(_ on: Bool) {}

    // MARK: Answering

    private var steps: [(StaticFileStream) -> Void] = []

    /// Runs `step` (if any) and then delivers what is ready, from the loop — never inside the
    /// caller's call.
    private func schedule(_ step: ((StaticFileStream) -> Void)? = nil) {
        guard !isClosing else { return }
        if let step { steps.append(step) }
        soon.start(timeoutMs: 0)
    }

    private func pump() {
        guard !isClosing else { return }
        while !steps.isEmpty && !isClosing {
            let step = steps.removeFirst()
            step(self)
        }
        deliver()
    }

    /// Hands what is ready to the reader while it wants input; reads the next chunk when the
    /// previous one is gone; ends with EOF when the body is done.
    private func deliver() {
        while readWish.wantsInput && !isClosing {
            if !ready.isEmpty {
                let out = ready
                ready.removeAll(keepingCapacity: true)
                bytesRead &+= UInt64(out.count)
                out.withUnsafeBytes { onRead?($0) }
                continue
            }
            if descriptor >= 0 && nextOffset < endOffset {
                readNextChunk()
                return
            }
            if finished && !endDelivered {
                endDelivered = true
                readWish.stop()
                onReadEnd?(UVError.eof)
            }
            return
        }
    }

    private func readNextChunk() {
        guard !reading else { return }
        reading = true
        let count = Int(min(UInt64(files.readChunkBytes), endOffset - nextOffset))
        let fd = descriptor
        FileAccess.read(fd, offset: nextOffset, count: count, on: loop) { [weak self, loop] result in
            guard let self, !self.isClosing else {
                FileAccess.close(fd, on: loop)  // closed meanwhile: the descriptor is this read's to close
                return
            }
            self.reading = false
            switch result {
            case .success(let bytes) where !bytes.isEmpty:
                self.nextOffset += UInt64(bytes.count)
                self.ready = bytes
                if self.nextOffset >= self.endOffset { self.endOfFile() }
            default:
                // Shorter than its size said (truncated meanwhile) or unreadable: the response
                // cannot be completed; the reader sees the connection end early.
                self.nextOffset = self.endOffset
                self.endOfFile()
            }
            self.schedule()
        }
    }

    private func endOfFile() {
        FileAccess.close(descriptor, on: loop)
        descriptor = -1
        finished = true
    }

    // MARK: The request

    private var head = RequestHead()
    private var path: ArraySlice<UInt8> = []
    private var query: ArraySlice<UInt8> = []
    private var isHEAD = false

    private func begin() {
        do { head = try HeadParser.parseRequest(request, limits: HeadLimits(maxHeadBytes: 1 << 20, maxTargetBytes: 1 << 16, maxHeaderCount: 10_000)) } catch {
            return answer(status: error.status, text: error.reason)
        }
        isHEAD = head.isHEAD
        guard isHEAD || head.bytes.equals(head.method, "GET") else {
            return answer(status: 405, text: "static files answer GET and HEAD only", extra: "Allow: GET, HEAD\r\n")
        }
        let target = head.bytes[head.target]
        let q = target.firstIndex(of: UInt8(ascii: "?")) ?? target.endIndex
        path = target[..<q]
        query = target[q...]
        switch StaticFilePath.resolve(path) {
        case .refused:
            notFound()
        case .file(let relative):
            open(relative, fallback: true)
        }
    }

    private func fullPath(_ relative: String) -> String {
        relative.isEmpty ? files.realRoot : files.realRoot + "/" + relative
    }

    /// Opens `relative`; a directory goes on to its index, a missing file to the SPA index.
    private func open(_ relative: String, fallback: Bool) {
        FileAccess.open(fullPath(relative), root: files.realRoot, readWhole: files.readChunkBytes, on: loop) { [weak self, loop] result in
            guard let self, !self.isClosing else {
                if case .success(let opened) = result { FileAccess.close(opened.descriptor, on: loop) }
                return
            }
            switch result {
            case .success(let opened) where opened.isDirectory:
                // The index (or the SPA fallback's) is itself a directory: nothing to serve.
                guard fallback else { return self.notFound() }
                guard StaticFilePath.endsWithSlash(self.path) else {
                    // `/docs` → `/docs/` (relative links in its index then resolve right), under
                    // the prefix a `strip_prefix` route took off (the proxy's own
                    // `X-Forwarded-Prefix`: a client's copy never gets here).
                    // One leading slash only: `//docs` must not become a redirect to the host `docs`.
                    let prefix = self.head.value(of: "x-forwarded-prefix") ?? ""
                    let local = "/" + String(decoding: self.path.drop { $0 == UInt8(ascii: "/") }, as: UTF8.self)
                    let location = prefix + local + "/" + String(decoding: self.query, as: UTF8.self)
                    return self.answer(status: 301, text: "moved to \(location)", extra: "Location: \(location)\r\n")
                }
                guard let index = self.files.index else { return self.notFound() }
                self.open(relative.isEmpty ? index : relative + "/" + index, fallback: false)
            case .success(let opened) where fallback && StaticFilePath.endsWithSlash(self.path):
                // A file asked for as a directory (`/a.txt/`): not what was asked for.
                FileAccess.close(opened.descriptor, on: loop)
                self.notFound()
            case .success(let opened):
                self.chooseVariant(relative, opened)
            case .failure(.notFound):
                if fallback, self.files.spaFallback, let index = self.files.index, self.acceptsHTML {
                    return self.open(index, fallback: false)
                }
                self.notFound()
            case .failure(.denied(let why)):
                self.answer(status: 403, text: "the file cannot be read: \(why)")
            case .failure(.unavailable(let why)):
                self.answer(status: 503, text: "the file cannot be read now (\(why)); try again shortly", extra: "Retry-After: 1\r\n")
            }
            self.schedule()
        }
    }

    private var acceptsHTML: Bool {
        guard let accept = head.value(of: "accept") else { return false }
        return accept.contains("text/html")
    }

    /// A precompressed sibling the client takes, else the file itself.
    private func chooseVariant(_ relative: String, _ original: FileAccess.Opened) {
        let candidates = files.precompressed ? PrecompressedChoice.candidates(AcceptedCodings(head)) : []
        func tryNext(_ rest: ArraySlice<(coding: String, suffix: String)>) {
            guard let candidate = rest.first else { return send(relative, original, coding: nil) }
            FileAccess.open(fullPath(relative) + candidate.suffix, root: files.realRoot, readWhole: files.readChunkBytes, on: loop) { [weak self, loop] result in
                guard let self, !self.isClosing else {
                    if case .success(let v) = result { FileAccess.close(v.descriptor, on: loop) }
                    FileAccess.close(original.descriptor, on: loop)
                    return
                }
                if case .success(let variant) = result, !variant.isDirectory {
                    FileAccess.close(original.descriptor, on: self.loop)
                    self.send(relative, variant, coding: candidate.coding)
                } else {
                    tryNext(rest.dropFirst())
                }
                self.schedule()
            }
        }
        tryNext(candidates[...])
    }

    /// The response for `file` (the original or a precompressed `coding` of it).
    private func send(_ relative: String, _ file: FileAccess.Opened, coding: String?) {
        defer { schedule() }
        descriptor = file.descriptor
        var validators = ConditionalRequest.Validators(size: file.size, modifiedS: file.modifiedS, modifiedNs: file.modifiedNs)
        // Each representation its own strong tag: the brotli and gzip siblings never share one.
        if let coding { validators.etag = String(validators.etag.dropLast()) + "-\(coding)\"" }
        var fields = "ETag: \(validators.etag)\r\nLast-Modified: \(HTTPDate.format(file.modifiedS))\r\n"
        if let cache = files.cacheControl { fields += "Cache-Control: \(cache)\r\n" }
        if files.precompressed { fields += "Vary: Accept-Encoding\r\n" }
        let type = "Content-Type: \(MediaTypes.type(forPath: relative))\r\n" + (coding.map { "Content-Encoding: \($0)\r\n" } ?? "")
        switch ConditionalRequest(head).evaluate(validators) {
        case .notModified:
            endOfFile()
            ready = Array("HTTP/1.1 304 Not Modified\r\n\(fields)Connection: close\r\n\r\n".utf8)
        case .preconditionFailed:
            endOfFile()
            answer(status: 412, text: "the file does not match the request's precondition")
        case .rangeNotSatisfiable:
            endOfFile()
            answer(status: 416, text: "the range is beyond the file's \(file.size) bytes", extra: "Content-Range: bytes */\(file.size)\r\n")
        case .full:
            startBody(status: "200 OK", from: 0, length: file.size, fields: fields + type + "Accept-Ranges: bytes\r\n", contents: file.contents)
        case .partial(let first, let last):
            startBody(status: "206 Partial Content", from: first, length: last - first + 1,
                      fields: fields + type + "Content-Range: bytes \(first)-\(last)/\(file.size)\r\n", contents: file.contents)
        }
    }

    /// The head, then the body: from `contents` when the file was read whole with its opening,
    /// else a chunk at a time from the descriptor.
    private func startBody(status: String, from offset: UInt64, length: UInt64, fields: String, contents: [UInt8]?) {
        ready = Array("HTTP/1.1 \(status)\r\n\(fields)Content-Length: \(length)\r\nConnection: close\r\n\r\n".utf8)
        if isHEAD || length == 0 {
            endOfFile()
        } else if let contents, UInt64(contents.count) >= offset + length {
            ready += contents[Int(offset)..<Int(offset + length)]
            endOfFile()
        } else {
            nextOffset = offset
            endOffset = offset + length
        }
    }

    private func notFound() {
        answer(status: 404, text: "no file for \(String(decoding: path, as: UTF8.self))")
    }

    /// A short text answer of the file server's own.
    private func answer(status: UInt16, text: String, extra: String = "") {
        let body = Array("\(StatusText.reason(status)): \(text)\n".utf8)
        ready = Array("HTTP/1.1 \(status) \(StatusText.reason(status))\r\nContent-Type: text/plain; charset=utf-8\r\n\(extra)Content-Length: \(body.count)\r\nConnection: close\r\n\r\n".utf8)
            + (isHEAD ? [] : body)
        endOfFile()
        schedule()
    }

}

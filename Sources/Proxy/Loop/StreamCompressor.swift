import CCompress

/// The content codings the proxy can apply to a response body (`compress`).
enum ContentCoding: UInt8, Sendable, CaseIterable {
    case brotli
    case gzip

    /// The `Content-Encoding` token (RFC 9110 §8.4.1).
    var token: String {
        switch self {
        case .brotli: "br"
        case .gzip: "gzip"
        }
    }
}

/// One response body being compressed as it passes: gzip through zlib's deflate, or brotli
/// through its encoder. Input goes in as it arrives; compressed bytes come out through the
/// caller's closure, synchronously, in pieces of at most `outputChunkBytes`, so memory stays
/// the coder's state plus one output chunk whatever the body's size.
///
/// `flush` makes everything given so far decodable by the client (a sync flush: deflate's
/// `Z_SYNC_FLUSH`, brotli's `BROTLI_OPERATION_FLUSH`), so a streamed response (Server-Sent
/// Events, a long poll's chunks) is never held back in the coder; `finish` ends the stream
/// (the gzip trailer, brotli's last meta-block). Nothing may be written after `finish`.
///
/// Ownership: the exchange that compresses the response; the native state is freed in `deinit`.
/// Threading: one loop thread.
final class StreamCompressor {
    enum Step { case process, flush, finish }

    static let outputChunkBytes = 16 * 1024

    let coding: ContentCoding
    private var zstream: UnsafeMutablePointer<z_stream>?
    private var brotli: OpaquePointer?
    private let output: UnsafeMutableRawBufferPointer
    private(set) var finished = false
    /// The library reported an error (out of memory): the stream is broken, what was given out
    /// is not a complete body.
    private(set) var failed = false
    /// Bytes taken in and given out so far.
    private(set) var bytesIn: UInt64 = 0
    private(set) var bytesOut: UInt64 = 0
    /// Called once when the compressor goes (its owner counts compressors alive).
    private let onRelease: (() -> Void)?

    /// A compressor at `level` (gzip 1–9, brotli 0–11). `sizeHint`: the body's length when the
    /// backend said it; small bodies get a smaller window, so less memory (as nginx sizes its
    /// deflate window by `Content-Length`). `brotliWindowBits`: brotli's largest window (10–24).
    /// Nil when the library refuses (out of memory).
    init?(coding: ContentCoding, level: Int, brotliWindowBits: Int = 19, sizeHint: UInt64? = nil, onRelease: (() -> Void)? = nil) {
        self.coding = coding
        switch coding {
        case .gzip:
            // windowBits 9…15 (+16: the gzip wrapper); memLevel 1…8 follows the window.
            var bits: Int32 = 15
            if let sizeHint { while bits > 9 && UInt64(1) << UInt64(bits - 1) >= sizeHint { bits -= 1 } }
            let memLevel = max(1, min(8, bits - 7))
            let stream = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
            stream.initialize(to: z_stream())
            guard ccompress_deflate_init(stream, Int32(max(1, min(9, level))), bits + 16, memLevel) == Z_OK else {
                stream.deinitialize(count: 1)
                stream.deallocate()
                return nil
            }
            zstream = stream
        case .brotli:
            guard let state = BrotliEncoderCreateInstance(nil, nil, nil) else { return nil }
            BrotliEncoderSetParameter(state, BROTLI_PARAM_QUALITY, UInt32(max(0, min(11, level))))
            BrotliEncoderSetParameter(state, BROTLI_PARAM_LGWIN, UInt32(max(10, min(24, brotliWindowBits))))
            // The hint picks smaller tables for small bodies; at 1 MiB and above brotli would pick
            // a ~4 MiB hasher at level 4, so larger bodies are hinted just below that.
            if let sizeHint { BrotliEncoderSetParameter(state, BROTLI_PARAM_SIZE_HINT, UInt32(min(sizeHint, (1 << 20) - 1))) }
            brotli = state
        }
        output = .allocate(byteCount: Self.outputChunkBytes, alignment: 16)
        self.onRelease = onRelease
    }

    deinit {
        if let zstream {
            deflateEnd(zstream)
            zstream.deinitialize(count: 1)
            zstream.deallocate()
        }
        if let brotli { BrotliEncoderDestroyInstance(brotli) }
        output.deallocate()
        onRelease?()
    }

    /// Compresses `input` and hands the output, in pieces, to `emit` (each piece valid only
    /// during the call). With `.flush` the client can decode everything so far; `.finish` ends
    /// the stream. Returns false if the library reported an error (the stream is then unusable).
    @discardableResult
    func compress(_ input: UnsafeRawBufferPointer, _ step: Step, emit: (UnsafeRawBufferPointer) -> Void) -> Bool {
        guard !finished, !failed else { return input.isEmpty && !failed }
        bytesIn &+= UInt64(input.count)
        if step == .finish { finished = true }
        var ok = false
        if let zstream { ok = deflateSome(zstream, input, step, emit) }
        if let brotli { ok = brotliSome(brotli, input, step, emit) }
        if !ok { failed = true }
        return ok
    }

    private func deflateSome(_ s: UnsafeMutablePointer<z_stream>, _ input: UnsafeRawBufferPointer, _ step: Step,
                             _ emit: (UnsafeRawBufferPointer) -> Void) -> Bool {
        let mode: Int32 = switch step {
        case .process: Z_NO_FLUSH
        case .flush: Z_SYNC_FLUSH
        case .finish: Z_FINISH
        }
        if input.isEmpty && step == .process { return true }
        s.pointee.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: Bytef.self))
        s.pointee.avail_in = UInt32(input.count)
        defer { s.pointee.next_in = nil; s.pointee.avail_in = 0 }
        while true {
            s.pointee.next_out = output.baseAddress!.assumingMemoryBound(to: Bytef.self)
            s.pointee.avail_out = UInt32(output.count)
            let rc = deflate(s, mode)
            if rc == Z_STREAM_ERROR { return false }
            let produced = output.count - Int(s.pointee.avail_out)
            if produced > 0 {
                bytesOut &+= UInt64(produced)
                emit(UnsafeRawBufferPointer(rebasing: output[..<produced]))
            }
            if rc == Z_STREAM_END { return true }
            // More output is pending only when the buffer filled; otherwise the input is used up
            // (and a flush, having left room, is complete).
            if s.pointee.avail_out != 0 && s.pointee.avail_in == 0 { return true }
            if rc == Z_BUF_ERROR && produced == 0 { return true }
        }
    }

    private func brotliSome(_ state: OpaquePointer, _ input: UnsafeRawBufferPointer, _ step: Step,
                            _ emit: (UnsafeRawBufferPointer) -> Void) -> Bool {
        let op: BrotliEncoderOperation = switch step {
        case .process: BROTLI_OPERATION_PROCESS
        case .flush: BROTLI_OPERATION_FLUSH
        case .finish: BROTLI_OPERATION_FINISH
        }
        if input.isEmpty && step == .process { return true }
        var availIn = input.count
        var nextIn = input.baseAddress?.assumingMemoryBound(to: UInt8.self)
        while true {
            var availOut = output.count
            var nextOut: UnsafeMutablePointer<UInt8>? = output.baseAddress!.assumingMemoryBound(to: UInt8.self)
            let ok = BrotliEncoderCompressStream(state, op, &availIn, &nextIn, &availOut, &nextOut, nil)
            guard ok != 0 else { return false }
            let produced = output.count - availOut
            if produced > 0 {
                bytesOut &+= UInt64(produced)
                emit(UnsafeRawBufferPointer(rebasing: output[..<produced]))
            }
            if availIn == 0 && BrotliEncoderHasMoreOutput(state) == 0 {
                if step == .finish && BrotliEncoderIsFinished(state) == 0 { continue }
                return true
            }
        }
    }
}

import CRedis
import CUV

/// One connection to a Redis server on this loop (hiredis's asynchronous client through
/// `CRedis`): commands are pipelined, replies come back in order through `onReply` with the tag
/// each command was sent with. Connecting, timeouts and reconnecting are `RedisClient`'s.
///
/// Ownership: the creator holds it and calls `close()` exactly once (also after `.gone`); no
/// callback runs after that. Threading: the loop's thread only.
final class RedisConnection {
    enum Event {
        case connected
        /// The connect failed or the connection ended (why, in words). Replies still owed will
        /// not come: `RedisClient` fails them.
        case gone(String)
    }

    enum Reply: Equatable {
        /// The connection went before the reply came.
        case none
        case error(String)
        /// An array starting with two integers (what the rate-limit script returns).
        case pair(Int64, Int64)
        case text(String)
        case integer(Int64)
        case other
    }

    var onEvent: (Event) -> Void = { _ in }
    var onReply: (UInt64, Reply) -> Void = { _, _ in }
    private var native: OpaquePointer?

    private init() {}

    /// Starts connecting to `address` (an IP address and port: names are resolved before, off
    /// the loop). A connection that cannot even start is a failure with the reason.
    static func connect(loop: EventLoop, to address: SocketAddress) -> Result<RedisConnection, AddressError> {
        let connection = RedisConnection()
        var error = [CChar](repeating: 0, count: 256)
        let owner = Unmanaged.passUnretained(connection).toOpaque()
        let native = credis_connect(loop.uvLoop, address.ipString, Int32(address.port), owner, { owner, event, message in
            let me = Unmanaged<RedisConnection>.fromOpaque(owner!).takeUnretainedValue()
            me.onEvent(event == Int32(CREDIS_CONNECTED.rawValue) ? .connected : .gone(message.map { String(cString: $0) } ?? "connection lost"))
        }, { owner, tag, kind, a, b, text, length in
            let me = Unmanaged<RedisConnection>.fromOpaque(owner!).takeUnretainedValue()
            let string = { text.map { String(decoding: UnsafeRawBufferPointer(start: $0, count: length), as: UTF8.self) } ?? "" }
            let reply: Reply = switch kind {
            case CREDIS_REPLY_NONE.rawValue: .none
            case CREDIS_REPLY_ERROR.rawValue: .error(string())
            case CREDIS_REPLY_PAIR.rawValue: .pair(Int64(a), Int64(b))
            case CREDIS_REPLY_TEXT.rawValue: .text(string())
            case CREDIS_REPLY_INTEGER.rawValue: .integer(Int64(a))
            default: .other
            }
            me.onReply(tag, reply)
        }, &error, error.count)
        guard let native else {
            return .failure(AddressError(message: "cannot connect to Redis at \(address): \(String(decoding: error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))"))
        }
        connection.native = native
        return .success(connection)
    }

    /// Queues a command; false when the connection is gone.
    func send(tag: UInt64, _ arguments: [[UInt8]]) -> Bool {
        guard let native else { return false }
        var pointers: [UnsafePointer<CChar>?] = []
        var lengths: [Int] = []
        pointers.reserveCapacity(arguments.count)
        lengths.reserveCapacity(arguments.count)
        // hiredis copies the arguments into its output buffer before returning.
        return withPointers(arguments[...], &pointers, &lengths) {
            credis_command(native, tag, Int32(arguments.count), $0, $1) == 0
        }
    }

    private func withPointers<R>(_ rest: ArraySlice<[UInt8]>, _ pointers: inout [UnsafePointer<CChar>?], _ lengths: inout [Int],
                                 _ body: (UnsafeMutablePointer<UnsafePointer<CChar>?>, UnsafePointer<Int>) -> R) -> R {
        guard let first = rest.first else {
            return pointers.withUnsafeMutableBufferPointer { p in lengths.withUnsafeBufferPointer { l in body(p.baseAddress!, l.baseAddress!) } }
        }
        return first.withUnsafeBytes { bytes in
            pointers.append(bytes.baseAddress.map { $0.assumingMemoryBound(to: CChar.self) } ?? UnsafePointer(bitPattern: 1))
            lengths.append(bytes.count)
            return withPointers(rest.dropFirst(), &pointers, &lengths, body)
        }
    }

    /// Ends the connection; no callback runs after this.
    func close() {
        guard let native else { return }
        self.native = nil
        credis_close(native)
    }
}

/// Carries bytes from a source stream into a sink stream with backpressure.
///
/// Whatever transformation sits in between (chunk re-framing, header rewriting) calls `send`;
/// when the sink's queue passes its high-water mark the pipe pauses the source's reading, and
/// `sinkDrained()` (called from the sink's `onDrain`) resumes it. Memory per transfer is thus
/// bounded by the sink's high-water mark plus one read, whatever the body size and the two
/// sides' speeds.
///
/// A value type with no closures of its own, so an exchange sets up its two pipes without
/// allocating: the streams' `onDrain` callbacks, installed once per connection, route to it.
/// Threading: loop thread only. The pipe does not own either stream.
public struct Pipe {
    public let source: TCPStream
    public let sink: TCPStream
    public private(set) var isPaused = false

    public init(from source: TCPStream, to sink: TCPStream) {
        self.source = source
        self.sink = sink
    }

    /// Writes to the sink (one gathered write) and pauses the source if the sink is full.
    public mutating func send(_ b0: UnsafeRawBufferPointer,
                              _ b1: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0)) {
        sink.write(b0, b1)
        if sink.isCongested && !isPaused {
            isPaused = true
            source.pauseReading(.backpressure)
        }
    }

    /// The sink fell below its low-water mark: let the source flow again.
    public mutating func sinkDrained() {
        guard isPaused else { return }
        isPaused = false
        source.resumeReading(.backpressure)
    }

    /// Ends the pipe, lifting any pause it put on the source.
    public mutating func detach() {
        sinkDrained()
    }
}

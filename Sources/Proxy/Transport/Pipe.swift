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
/// Threading: loop thread only. The pipe does not own either stream: its owner keeps both alive
/// for as long as the pipe exists (unretained, so setting up and tearing down an exchange's two
/// pipes costs no reference counting).
public struct Pipe<Source: ByteStream, Sink: ByteStream> {
    // `Unmanaged` rather than `unowned(unsafe)`: the latter still retains and releases around
    // each call made through it.
    private let source: Unmanaged<Source>
    private let sink: Unmanaged<Sink>
    public private(set) var isPaused = false

    public init(from source: Source, to sink: Sink) {
        self.source = Unmanaged.passUnretained(source)
        self.sink = Unmanaged.passUnretained(sink)
    }

    /// Writes to the sink (one gathered write) and pauses the source if the sink is full.
    public mutating func send(_ b0: UnsafeRawBufferPointer,
                              _ b1: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0)) {
        let congested = sink._withUnsafeGuaranteedRef { sink in
            sink.write(b0, b1)
            return sink.isCongested
        }
        if congested && !isPaused {
            isPaused = true
            source._withUnsafeGuaranteedRef { $0.pauseReading(.backpressure) }
        }
    }

    /// The sink fell below its low-water mark: let the source flow again.
    public mutating func sinkDrained() {
        guard isPaused else { return }
        isPaused = false
        source._withUnsafeGuaranteedRef { $0.resumeReading(.backpressure) }
    }

    /// Ends the pipe, lifting any pause it put on the source.
    public mutating func detach() {
        sinkDrained()
    }
}

/// The open streams of one HTTP/2 connection, by stream id: open addressing with linear probing
/// on `id / 2` (client stream ids are odd and rise one by one, so the streams open at once land
/// in neighbouring slots). Replaces a `Dictionary`, whose SipHash of every id cost ~100
/// instructions per lookup, three or more per request.
///
/// Load is kept at most one half; removal shifts the following run back (no tombstones), so
/// lookups stay short however many streams come and go. Storage is allocated at the first
/// insert: a connection that never opens a stream holds none.
///
/// Generic over the stream type so it is tested without a connection (`HTTP2Stream` in use).
/// Threading: a value owned by its connection, loop thread only.
struct HTTP2StreamTable<Stream: AnyObject> {
    /// 0 marks an empty slot (stream 0 is the connection itself, never a key).
    private var ids: [Int32] = []
    private var streams: [Stream?] = []
    private(set) var count = 0

    var isEmpty: Bool { count == 0 }

    @inline(__always)
    private func home(_ id: Int32, _ mask: Int) -> Int { Int(UInt32(bitPattern: id) >> 1) & mask }

    subscript(id: Int32) -> Stream? {
        guard count > 0, id != 0 else { return nil }
        let mask = ids.count - 1
        var i = home(id, mask)
        while true {
            let found = ids[i]
            if found == id { return streams[i] }
            if found == 0 { return nil }
            i = (i + 1) & mask
        }
    }

    /// Adds `stream` under `id` (which must not be in the table).
    mutating func insert(_ stream: Stream, for id: Int32) {
        precondition(id != 0, "stream 0 is the connection")
        if (count + 1) * 2 > ids.count { grow() }
        let mask = ids.count - 1
        var i = home(id, mask)
        while ids[i] != 0 { i = (i + 1) & mask }
        ids[i] = id
        streams[i] = stream
        count += 1
    }

    /// Removes and returns the stream under `id`, if any.
    mutating func remove(_ id: Int32) -> Stream? {
        guard count > 0, id != 0 else { return nil }
        let mask = ids.count - 1
        var i = home(id, mask)
        while ids[i] != id {
            if ids[i] == 0 { return nil }
            i = (i + 1) & mask
        }
        let removed = streams[i]
        // Backward-shift: move up every entry of the run after `i` whose home is not in (i, j].
        var j = i
        while true {
            j = (j + 1) & mask
            let next = ids[j]
            if next == 0 { break }
            let k = home(next, mask)
            let stays = i <= j ? (i < k && k <= j) : (i < k || k <= j)
            if stays { continue }
            ids[i] = next
            streams[i] = streams[j]
            i = j
        }
        ids[i] = 0
        streams[i] = nil
        count -= 1
        return removed
    }

    /// Empties the table; returns what it held.
    mutating func removeAll() -> [Stream] {
        let held = streams.compactMap { $0 }
        ids = []
        streams = []
        count = 0
        return held
    }

    private mutating func grow() {
        let oldIDs = ids, oldStreams = streams
        let capacity = max(8, ids.count * 2)
        ids = [Int32](repeating: 0, count: capacity)
        streams = [Stream?](repeating: nil, count: capacity)
        count = 0
        for (i, id) in oldIDs.enumerated() where id != 0 { insert(oldStreams[i]!, for: id) }
    }
}

import Testing
@testable import Proxy

/// `HTTP2StreamTable` against a `Dictionary` model, and the lowercasing copy HTTP/2 heads use.
@Suite struct HTTP2StreamTableTests {
    final class Box { let id: Int32; init(_ id: Int32) { self.id = id } }

    @Test func agreesWithADictionaryOverRandomOpensAndCloses() {
        var table = HTTP2StreamTable<Box>()
        var model: [Int32: Box] = [:]
        var generator = SystemRandomNumberGenerator()
        var nextID: Int32 = 1
        for step in 0..<20_000 {
            // Mostly sequential odd ids (as clients open them), closed in any order; sometimes a
            // burst that forces growth, sometimes ids far apart (colliding homes).
            if model.count < 300 && (model.isEmpty || Int.random(in: 0..<3, using: &generator) > 0) {
                let id = step % 97 == 0 ? nextID + 2 * Int32(Int.random(in: 1...4096, using: &generator)) : nextID
                nextID = id + 2
                let box = Box(id)
                table.insert(box, for: id)
                model[id] = box
            } else {
                let victim = model.keys.randomElement(using: &generator)!
                #expect(table.remove(victim) === model.removeValue(forKey: victim))
            }
            #expect(table.count == model.count)
            if step % 50 == 0 {
                for (id, box) in model { #expect(table[id] === box) }
                #expect(table[nextID] == nil)
                #expect(table[nextID + 1] == nil)
                #expect(table.remove(nextID) == nil)
            }
        }
        let all = table.removeAll()
        #expect(Set(all.map(\.id)) == Set(model.keys))
        #expect(table.isEmpty && table[1] == nil)
        // Usable again after emptying.
        table.insert(Box(7), for: 7)
        #expect(table[7]?.id == 7)
    }

    @Test func lookupsOfIdZeroAndOfAnEmptyTableFindNothing() {
        var table = HTTP2StreamTable<Box>()
        #expect(table[0] == nil && table[1] == nil && table.remove(1) == nil)
        table.insert(Box(1), for: 1)
        #expect(table[0] == nil && table.remove(0) == nil && table.count == 1)
    }

    @Test func lowercasingCopyChangesOnlyASCIIUppercase() {
        // Every byte value, at every alignment and tail length the 8-byte loop meets.
        let all = (0..<256).map { UInt8($0) } + Array("Content-Type X-Forwarded-FOR".utf8)
        for start in 0..<9 {
            for length in [0, 1, 7, 8, 9, 15, 16, 17, all.count - start] {
                let source = Array(all[start..<(start + length)])
                var out = [UInt8](repeating: 0xAA, count: length + 1)
                source.withUnsafeBytes { s in
                    out.withUnsafeMutableBytes { d in
                        if length > 0 { copyLowercasingASCII(s.baseAddress!, to: d.baseAddress!, count: length) }
                    }
                }
                #expect(Array(out[0..<length]) == source.map { $0 >= 65 && $0 <= 90 ? $0 + 32 : $0 })
                #expect(out[length] == 0xAA, "wrote past the end")
            }
        }
    }
}

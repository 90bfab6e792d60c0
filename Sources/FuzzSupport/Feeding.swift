#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
#if FUZZING
import CLibFuzzer
#endif

// Shared machinery of the three fuzz targets (Fuzz/README.md): how an input is cut into reads,
// and how a broken invariant is reported.

/// One fuzz input and the checks made on it. A failed check prints the message and the input
/// (escaped) and traps, so libFuzzer records the input as a crash.
public struct FuzzInput {
    public let bytes: [UInt8]

    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    @inline(__always)
    public func check(_ condition: Bool, _ message: @autoclosure () -> String,
                      file: StaticString = #fileID, line: UInt = #line) {
        if !condition { fail(message(), file: file, line: line) }
    }

    public func fail(_ message: String, file: StaticString = #fileID, line: UInt = #line) -> Never {
        let text = "\nFUZZ INVARIANT VIOLATED: \(message)\ninput (\(bytes.count) bytes): \"\(escape(bytes))\"\n"
        printError(text)
        fatalError("fuzz invariant violated (see above)", file: file, line: line)
    }

    /// FNV-1a of the input: the seed for every data-derived choice (split points, piece sizes), so
    /// a crash reproduces from the input file alone.
    public var hash: UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return h
    }

    /// The ways the input is fed: whole, cut once at a data-derived point, in data-derived random
    /// pieces (empty reads included), and one byte at a time. Every plan covers the input exactly.
    public var plans: [FeedPlan] {
        let n = bytes.count
        let hash = self.hash
        var plans = [FeedPlan(kind: .whole, pieces: [n])]
        let split = n == 0 ? 0 : Int(hash % UInt64(n + 1))
        plans.append(FeedPlan(kind: .split(split), pieces: [split, n - split]))
        var rng = SplitMix(seed: hash)
        var pieces: [Int] = []
        var left = n
        while left > 0 {
            let r = rng.next()
            // Mostly small reads, sometimes an empty one, sometimes a large one.
            let size: Int
            switch r % 16 {
            case 0: size = 0
            case 1: size = Int((r >> 8) % UInt64(left)) + 1
            default: size = Int((r >> 8) % 8) + 1
            }
            pieces.append(min(size, left))
            left -= min(size, left)
        }
        plans.append(FeedPlan(kind: .random(hash), pieces: pieces))
        plans.append(FeedPlan(kind: .byteByByte, pieces: Array(repeating: 1, count: n)))
        return plans
    }

    /// Calls `body` with each piece of `plan` as a slice of the input.
    public func forEachPiece(_ plan: [Int], _ body: (UnsafeRawBufferPointer) -> Void) {
        bytes.withUnsafeBytes { all in
            var offset = 0
            for size in plan {
                body(UnsafeRawBufferPointer(rebasing: all[offset..<(offset + size)]))
                offset += size
            }
            precondition(offset == all.count, "fuzz plan does not cover the input")
        }
    }
}

/// Set by `replayCorpus` from `FUZZ_VERBOSE`; never set while fuzzing.
nonisolated(unsafe) var verbose = false

/// One way of cutting an input into reads.
public struct FeedPlan {
    public enum Kind { case whole, split(Int), random(UInt64), byteByByte }
    public var kind: Kind
    /// Read sizes, summing to the input's length.
    public var pieces: [Int]

    public var name: String {
        switch kind {
        case .whole: return "whole"
        case .split(let at): return "split at \(at)"
        case .random(let seed): return "in random pieces \(pieces) (seed \(seed))"
        case .byteByByte: return "byte by byte"
        }
    }
}

/// A small deterministic generator (SplitMix64).
public struct SplitMix {
    var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Bytes as a C-like string literal: printable ASCII as is, `\r \n \t \\ \"`, else `\xNN`.
public func escape<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
    var s = ""
    for b in bytes {
        switch b {
        case 0x0D: s += "\\r"
        case 0x0A: s += "\\n"
        case 0x09: s += "\\t"
        case 0x5C: s += "\\\\"
        case 0x22: s += "\\\""
        case 0x20...0x7E: s.unicodeScalars.append(Unicode.Scalar(b))
        default:
            let hex = Array("0123456789abcdef".utf8)
            s += "\\x"
            s.unicodeScalars.append(Unicode.Scalar(hex[Int(b >> 4)]))
            s.unicodeScalars.append(Unicode.Scalar(hex[Int(b & 15)]))
        }
    }
    return s
}

/// The `main` of a fuzz executable built without `-DFUZZING` (a regression runner): runs every file
/// named on the command line (directories: every file in them) through `body`, the same function
/// libFuzzer calls, and exits. A broken invariant traps, so the exit status tells.
///
/// With `FUZZ_VERBOSE=1` in the environment it prints what each input gave when fed whole.
public func replayCorpus(name: String, _ body: ([UInt8]) -> Void) -> Never {
    verbose = getenv("FUZZ_VERBOSE").map { String(cString: $0) != "0" } ?? false
    exit(runCorpusFiles(Array(CommandLine.arguments.dropFirst()), name: name, body))
}

func runCorpusFiles(_ arguments: [String], name: String, _ body: ([UInt8]) -> Void) -> Int32 {
    guard !arguments.isEmpty else {
        printError("usage: \(name) FILE_OR_DIR...   (runs each input through the fuzz checks;\n"
              + "       built with -DFUZZING and -sanitize=fuzzer it is a libFuzzer binary, see Fuzz/README.md)\n")
        return 2
    }
    var files: [String] = []
    for path in arguments {
        var st = stat()
        guard stat(path, &st) == 0 else {
            printError("\(name): cannot read \(path)\n")
            return 1
        }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            guard let dir = opendir(path) else { continue }
            var names: [String] = []
            while let entry = readdir(dir) {
                let entryName = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                    String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
                }
                if !entryName.hasPrefix(".") { names.append(entryName) }
            }
            closedir(dir)
            files += names.sorted().map { path + "/" + $0 }
        } else {
            files.append(path)
        }
    }
    var count = 0
    for file in files {
        guard let data = readFile(file) else {
            printError("\(name): cannot read \(file)\n")
            return 1
        }
        if verbose { print("== \(file)") }
        body(data)
        count += 1
    }
    print("\(name): \(count) inputs passed")
    return 0
}

private func readFile(_ path: String) -> [UInt8]? {
    guard let f = fopen(path, "rb") else { return nil }
    defer { fclose(f) }
    var data: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = buffer.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, f) }
        if n > 0 { data += buffer[0..<n] }
        if n < buffer.count { break }
    }
    return ferror(f) == 0 ? data : nil
}

/// Writes `text` to standard error (file descriptor 2: the C `stderr` global is not concurrency-safe).
func printError(_ text: String) {
    var text = text
    text.withUTF8 { buf in
        var offset = 0
        while offset < buf.count {
            let n = write(2, buf.baseAddress! + offset, buf.count - offset)
            if n <= 0 { return }
            offset += n
        }
    }
}

#if FUZZING
/// The `main` of a fuzz executable built with `-DFUZZING -sanitize=fuzzer`: hands the command
/// line to libFuzzer's driver. (SwiftPM links every executable's Swift entry point as `main`, so
/// libFuzzer's own main cannot be used.)
public func runLibFuzzer(_ testOneInput: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> Never {
    var argc = CommandLine.argc
    var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
    exit(LLVMFuzzerRunDriver(&argc, &argv, testOneInput))
}
#endif

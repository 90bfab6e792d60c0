import FuzzSupport

// Built with `-Xswiftc -DFUZZING -Xswiftc -sanitize=fuzzer,address` (make fuzz) this is a
// libFuzzer binary; in a normal build it replays the inputs named on its command line through the
// same checks: `FuzzResponseParser Fuzz/corpus/...` (Fuzz/README.md).

#if FUZZING
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    fuzzResponseStream(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}
#endif

@main
enum Main {
    static func main() {
        #if FUZZING
        runLibFuzzer(fuzzTestOneInput)
        #else
        replayCorpus(name: "FuzzResponseParser", fuzzResponseStream)
        #endif
    }
}

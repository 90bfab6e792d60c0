// libFuzzer's driver, for the fuzz executables' own main (Fuzz/README.md). SwiftPM links an
// executable's Swift entry point as `main`, so libFuzzer's main is never used: the fuzz build's
// main calls this instead. Only referenced when built with -DFUZZING and -sanitize=fuzzer.
#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*UserCb)(const uint8_t *Data, size_t Size));

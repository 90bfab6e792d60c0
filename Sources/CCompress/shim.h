#ifndef CCOMPRESS_SHIM_H
#define CCOMPRESS_SHIM_H

/* zlib (gzip) and brotli's encoder, for compressing responses on the fly
   (Sources/Proxy/Loop/StreamCompressor.swift is the only code that names them). */
#include <zlib.h>
#include <brotli/encode.h>

/* deflateInit2 is a macro passing the library's version and the stream's size: Swift cannot
   call macros. */
static inline int ccompress_deflate_init(z_stream *stream, int level, int window_bits, int mem_level) {
    return deflateInit2(stream, level, Z_DEFLATED, window_bits, mem_level, Z_DEFAULT_STRATEGY);
}

#endif

/* nghttp2 (Debian libnghttp2-dev), used as the HTTP/2 frame codec only: HPACK, frames, flow-control
 * bookkeeping and its HTTP messaging checks. Sources/Proxy/Loop/HTTP2FrameCodec.swift is the only
 * code that calls it. */
#include <nghttp2/nghttp2.h>

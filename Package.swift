// swift-tools-version:6.0
import PackageDescription

/// Release builds drop Swift's runtime exclusivity checks: they measured 15–20 % of user-space
/// instructions on the loop's hot path (../shared/DESIGN.md §3). Debug builds keep them.
let hotPathSettings: [SwiftSetting] = [
    .unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release)),
]

let package = Package(
    name: "Proxy",
    products: [
        .executable(name: "proxy", targets: ["ProxyCLI"]),
        .executable(name: "test-backend", targets: ["TestBackend"]),
        .library(name: "Proxy", targets: ["Proxy"]),
    ],
    targets: [
        .systemLibrary(
            name: "CUV",
            pkgConfig: "libuv",
            providers: [.apt(["libuv1-dev"])]
        ),
        // OpenSSL 3 (headers and libraries through pkg-config), and the TLS engine over it: a small
        // C interface (CTLS/include/ctls.h), the only code that knows the library.
        .systemLibrary(
            name: "COpenSSL",
            pkgConfig: "openssl",
            providers: [.apt(["libssl-dev"])]
        ),
        .target(name: "CTLS", dependencies: ["COpenSSL"]),
        // nghttp2 as the HTTP/2 frame codec (HPACK, frames, flow-control bookkeeping), wrapped by
        // Sources/Proxy/Loop/HTTP2FrameCodec.swift; connections and streams are ours.
        .systemLibrary(
            name: "CNGHTTP2",
            pkgConfig: "libnghttp2",
            providers: [.apt(["libnghttp2-dev"])]
        ),
        // c-ares, for asking the DNS servers of the top-level "resolver" directly (re-resolving
        // backend host names with their TTLs); CDNS/include/cdns.h is the only code that names it.
        .systemLibrary(
            name: "CAres",
            pkgConfig: "libcares",
            providers: [.apt(["libc-ares-dev"])]
        ),
        .target(name: "CDNS", dependencies: ["CAres"]),
        // hiredis's asynchronous client, for the `global` rate-limit scope's Redis; CRedis (our
        // glue to libuv) is the only code that names it.
        .systemLibrary(
            name: "CHiredis",
            pkgConfig: "hiredis",
            providers: [.apt(["libhiredis-dev"])]
        ),
        .target(name: "CRedis", dependencies: ["CHiredis", "CUV"]),
        // libxcrypt (glibc's crypt, Debian's libcrypt-dev): bcrypt and SHA-crypt for htpasswd files.
        .systemLibrary(name: "CCrypt"),
        // zlib and brotli's encoder (Debian's zlib1g-dev, libbrotli-dev): responses compressed on
        // the fly (`compress`); Sources/Proxy/Loop/StreamCompressor.swift is the only code that names them.
        .systemLibrary(name: "CCompress", providers: [.apt(["zlib1g-dev", "libbrotli-dev"])]),
        .target(name: "Proxy", dependencies: ["CUV", "CTLS", "CNGHTTP2", "CDNS", "CRedis", "CCrypt", "CCompress"], swiftSettings: hotPathSettings),
        .target(name: "TestBackendKit", dependencies: ["Proxy"], swiftSettings: hotPathSettings),
        .executableTarget(name: "ProxyCLI", dependencies: ["Proxy"], swiftSettings: hotPathSettings),
        .executableTarget(name: "TestBackend", dependencies: ["TestBackendKit"], swiftSettings: hotPathSettings),
        // Fuzz targets (Fuzz/README.md): `make fuzz` builds them with -DFUZZING and
        // -sanitize=fuzzer,address; a normal build makes them corpus-replaying regression runners.
        .systemLibrary(name: "CLibFuzzer"),
        .target(name: "FuzzSupport", dependencies: ["Proxy", "CLibFuzzer"]),
        .executableTarget(name: "FuzzRequestParser", dependencies: ["FuzzSupport"]),
        .executableTarget(name: "FuzzResponseParser", dependencies: ["FuzzSupport"]),
        .executableTarget(name: "FuzzChunkedDecoder", dependencies: ["FuzzSupport"]),
        // Helpers both test targets use (a test target cannot import another).
        .target(name: "TestSupport", path: "Tests/TestSupport"),
        .testTarget(name: "ProxyTests", dependencies: ["Proxy", "TestSupport"]),
        .testTarget(name: "IntegrationTests", dependencies: ["Proxy", "TestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)

import Foundation
import Glibc
import Testing

/// Routes answered from files (`"static"`, issue 17): types, validators and conditionals,
/// ranges, precompressed siblings, directories, single-page-app fallback, and the paths that
/// must not be served (hidden files, links out of the root, encoded separators).
@Suite struct StaticFilesTests {
    /// A site: index.html, assets/app.js with .br and .gz siblings, a 3 MB file, docs/index.html,
    /// a hidden .env, a link out of the root and one inside it.
    static func makeSite() throws -> (dir: String, big: [UInt8]) {
        let dir = NSTemporaryDirectory() + "static-\(UUID().uuidString)"
        let fm = FileManager.default
        try fm.createDirectory(atPath: dir + "/assets", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: dir + "/docs", withIntermediateDirectories: true)
        try Data("<!doctype html><title>app</title>".utf8).write(to: URL(fileURLWithPath: dir + "/index.html"))
        try Data("console.log('plain')\n".utf8).write(to: URL(fileURLWithPath: dir + "/assets/app.js"))
        try Data("BROTLI-BYTES".utf8).write(to: URL(fileURLWithPath: dir + "/assets/app.js.br"))
        try Data("GZIP-BYTES".utf8).write(to: URL(fileURLWithPath: dir + "/assets/app.js.gz"))
        try Data("docs".utf8).write(to: URL(fileURLWithPath: dir + "/docs/index.html"))
        try Data("SECRET=1".utf8).write(to: URL(fileURLWithPath: dir + "/.env"))
        var big = [UInt8](repeating: 0, count: 3 << 20)
        for i in big.indices { big[i] = UInt8(truncatingIfNeeded: i &* 2_654_435_761 >> 13) }
        try Data(big).write(to: URL(fileURLWithPath: dir + "/assets/big.bin"))
        try fm.createSymbolicLink(atPath: dir + "/outside", withDestinationPath: "/etc/hostname")
        try fm.createSymbolicLink(atPath: dir + "/inside.js", withDestinationPath: dir + "/assets/app.js")
        return (dir, big)
    }

    @Test func filesAreServedWithValidatorsRangesAndPrecompressedSiblings() throws {
        let (dir, big) = try Self.makeSite()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let backend = try startBackend()
        defer { backend.stop() }
        let proxy = try startProxy(config: """
            {"backends": [{"url": "http://127.0.0.1:\(backend.port)"}],
             "routes": [{"path": "/", "static": {"root": "\(dir)", "spa_fallback": true, "cache_control": "public, max-age=60"},
                         "response_headers": {"set": {"X-Served": "static"}}},
                        {"path": "/api", "upstream": "default"}],
             "health_check": {"path": null, "interval_ms": 200, "unhealthy_threshold": 1}, "access_log": null}
            """)
        defer { proxy.stop() }
        func ask(_ path: String, _ method: String = "GET", _ headers: [String: String] = [:]) throws -> HTTPResponse {
            try TestConnection(port: proxy.port).request(method, path, headers: headers.merging(["Connection": "close"]) { a, _ in a })
        }
        let index = try ask("/")
        #expect(index.status == 200 && index.text.contains("<title>app</title>") && index.header("Content-Type") == "text/html; charset=utf-8",
                "\(index.status) \(index.headers)")
        #expect(index.header("Cache-Control") == "public, max-age=60" && index.header("X-Served") == "static", "route policies apply: \(index.headers)")
        // Precompressed siblings by Accept-Encoding; the type is the original's.
        let br = try ask("/assets/app.js", "GET", ["Accept-Encoding": "gzip, br"])
        #expect(br.text == "BROTLI-BYTES" && br.header("Content-Encoding") == "br" && br.header("Vary") == "Accept-Encoding"
                && br.header("Content-Type") == "text/javascript; charset=utf-8", "\(br.headers)")
        #expect(try ask("/assets/app.js", "GET", ["Accept-Encoding": "gzip"]).text == "GZIP-BYTES")
        let plain = try ask("/assets/app.js")
        #expect(plain.text == "console.log('plain')\n" && plain.header("Content-Encoding") == nil)
        // Validators and conditionals.
        let etag = try #require(plain.header("ETag")), modified = try #require(plain.header("Last-Modified"))
        #expect(try ask("/assets/app.js", "GET", ["If-None-Match": etag]).status == 304)
        #expect(try ask("/assets/app.js", "GET", ["If-Modified-Since": modified]).status == 304)
        #expect(try ask("/assets/app.js", "GET", ["If-None-Match": "\"other\""]).status == 200)
        #expect(try ask("/assets/app.js", "GET", ["If-Match": "\"other\""]).status == 412)
        // Ranges.
        let part = try ask("/assets/big.bin", "GET", ["Range": "bytes=1000-1999"])
        #expect(part.status == 206 && part.body == Array(big[1000...1999]) && part.header("Content-Range") == "bytes 1000-1999/\(big.count)")
        let tail = try ask("/assets/big.bin", "GET", ["Range": "bytes=-10"])
        #expect(tail.status == 206 && tail.body == Array(big.suffix(10)))
        let beyond = try ask("/assets/big.bin", "GET", ["Range": "bytes=99999999-"])
        #expect(beyond.status == 416 && beyond.header("Content-Range") == "bytes */\(big.count)")
        // The whole 3 MB file, intact; HEAD says its size and sends nothing.
        let whole = try ask("/assets/big.bin")
        #expect(whole.status == 200 && whole.body == big && whole.header("Accept-Ranges") == "bytes")
        let head = try ask("/assets/big.bin", "HEAD")
        #expect(head.status == 200 && head.header("Content-Length") == String(big.count) && head.body.isEmpty)
        // Directories: a redirect to the slash form, then the index; no listing.
        let docs = try ask("/docs?x=1")
        #expect(docs.status == 301 && docs.header("Location") == "/docs/?x=1", "\(docs.status) \(docs.headers)")
        let doubled = try ask("//docs")
        #expect(doubled.status == 301 && doubled.header("Location") == "/docs/", "never a protocol-relative //host: \(doubled.headers)")
        // A FIFO in the root is not opened (that would wait for a writer): 404 at once.
        #expect(mkfifo(dir + "/pipe", 0o644) == 0)
        #expect(try ask("/pipe", "GET", ["Accept": "*/*"]).status == 404)
        #expect(try ask("/docs/").text == "docs")
        // Not served: hidden files, links out of the root, encoded separators, dot segments.
        for path in ["/.env", "/outside", "/assets%2Fapp.js", "/assets/.%2e/.env"] {
            let r = try ask(path, "GET", ["Accept": "*/*"])
            #expect(r.status == 404 || r.status == 400, "\(path): \(r.status) \(r.text)")
            #expect(!r.text.contains("SECRET"), "\(path)")
        }
        #expect(try ask("/inside.js").text == "console.log('plain')\n", "a link that stays inside the root is followed")
        #expect(try ask("/assets/app.js/", "GET", ["Accept": "*/*"]).status == 404, "a file asked for as a directory")
        #expect(br.header("ETag") != nil && br.header("ETag") != plain.header("ETag"), "each representation its own tag")
        // Single-page app: an unknown path gets the index when HTML is wanted, 404 otherwise.
        #expect(try ask("/app/route/42", "GET", ["Accept": "text/html,*/*"]).text.contains("<title>app</title>"))
        #expect(try ask("/app/missing.js", "GET", ["Accept": "*/*"]).status == 404)
        let post = try ask("/", "POST")
        #expect(post.status == 405 && post.header("Allow") == "GET, HEAD")
        // Over HTTP/2 (cleartext, prior knowledge) the same relay carries the file.
        let copy = NSTemporaryDirectory() + "static-h2-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: copy) }
        var curl = ""
        #expect(run("/usr/bin/curl", ["-s", "--http2-prior-knowledge", "-o", copy, "-w", "%{http_version} %{http_code}",
                                      "http://127.0.0.1:\(proxy.port)/assets/big.bin"], output: &curl) == 0)
        #expect(curl == "2 200" && (FileManager.default.contents(atPath: copy).map { [UInt8]($0) } ?? []) == big, "\(curl)")
        // The other route still goes to its backend; /_health speaks for the real backends only.
        #expect(try ask("/api/echo").json["path"] as? String == "/api/echo")
        #expect(try get(proxy.port, "/_health").status == 200)
        backend.stop()
        #expect(eventually(5) { (try? get(proxy.port, "/_health").status) == 503 }, "files do not make a proxy with every backend down look healthy")
    }

    @Test func theGatewayServesADirectory() throws {
        let (dir, _) = try Self.makeSite()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let backend = try startBackend()
        defer { backend.stop() }
        let proxy = try ManagedProcess("proxy", ["--to", dir, "--to", "/api=http://127.0.0.1:\(backend.port)", "--to", "/files=\(dir)/assets",
                                                 "--listen", "127.0.0.1:0", "--workers", "1"])
        defer { proxy.stop() }
        #expect(try get(proxy.port, "/").text.contains("<title>app</title>"))
        #expect(try TestConnection(port: proxy.port).request("GET", "/deep/link", headers: ["Accept": "text/html"]).text.contains("<title>app</title>"),
                "--to DIR is a single-page app")
        #expect(try get(proxy.port, "/files/app.js").text == "console.log('plain')\n", "PATH=DIR strips the prefix")
        let nested = try ManagedProcess("proxy", ["--to", "/site=\(dir)", "--listen", "127.0.0.1:0", "--workers", "1"])
        defer { nested.stop() }
        let moved = try TestConnection(port: nested.port).request("GET", "/site/docs", headers: ["X-Forwarded-Prefix": "//evil.example"])
        #expect(moved.status == 301 && moved.header("Location") == "/site/docs/", "under the stripped prefix, never a client's: \(moved.headers)")
        let bare = try TestConnection(port: nested.port).request("GET", "/site?v=2")
        #expect(bare.status == 301 && bare.header("Location") == "/site/?v=2", "the prefix without its slash: \(bare.headers)")
        #expect(try get(proxy.port, "/api/x").json["path"] as? String == "/api/x")
        var output = ""
        #expect(run(productsDirectory.appendingPathComponent("proxy").path, ["--to", dir + "/nope", "--check"], output: &output) == 2)
        #expect(output.contains("is not a directory"), "\(output)")
    }
}

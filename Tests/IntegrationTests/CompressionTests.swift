import Foundation
import Testing

/// `compress` through a running proxy (HTTP/1.1, HTTP/1.0 and HTTP/2 clients), in front of
/// `Python/compress_origin.py`, driven by `Python/compress_check.py`, which decodes every body
/// (gzip, and brotli through PyPI's `brotli` in the test venv) and compares it with the origin's.
@Suite struct CompressionTests {
    @Test func responsesAreCompressedByTypeSizeAndAcceptEncodingAndStreamsAreFlushed() throws {
        let python = try testPython(["brotli": "brotli"])
        let origin = try ManagedProcess("/usr/bin/python3", [packageRoot.appendingPathComponent("Tests/IntegrationTests/Python/compress_origin.py").path],
                                        absolute: true)
        defer { origin.stop() }
        let proxy = try startProxy(config: """
            {"backends": [{"url": "http://127.0.0.1:\(origin.port)"}], "health_check": {"path": "/health", "interval_ms": 60000},
             "compress": {"min_bytes": 1024},
             "routes": [{"path": "/sse/", "upstream": "default", "strip_prefix": true, "compress": {"types": ["text/event-stream"]}},
                        {"path": "/off/", "upstream": "default", "strip_prefix": true, "compress": false},
                        {"path": "/gzonly/", "upstream": "default", "strip_prefix": true, "compress": {"encodings": ["gzip"]}},
                        {"path": "/", "upstream": "default"}],
             "access_log": null}
            """)
        defer { proxy.stop() }
        var output = ""
        let rc = run(python, [packageRoot.appendingPathComponent("Tests/IntegrationTests/Python/compress_check.py").path,
                              String(proxy.port), String(origin.port)], output: &output)
        #expect(rc == 0, "\(output)")
        guard rc == 0, let line = output.split(separator: "\n").last,
              let seen = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: [String: Any]] else {
            Issue.record("no result: \(output)"); return
        }
        func coding(_ key: String) -> String? { seen[key]?["coding"] as? String }
        // Every body decodes to the origin's, whatever was applied.
        for (key, value) in seen where value["matches"] != nil {
            #expect(value["matches"] as? Bool == true, "\(key): \(value)")
        }
        // By the client's Accept-Encoding, brotli preferred.
        for path in ["/big.json", "/chunked.txt", "/close.html", "/varystar"] {
            #expect(coding("\(path) gzip") == "gzip", "\(path)")
            #expect(coding("\(path) br") == "br", "\(path)")
            #expect(coding("\(path) gzip, br;q=0") == "gzip", "\(path)")
            #expect(coding("\(path) deflate") == nil, "\(path)")
            #expect(coding("\(path) None") == nil, "\(path)")
            #expect(coding("/gzonly\(path) br") == nil && coding("/gzonly\(path) gzip") == "gzip", "\(path)")
            #expect(coding("/off\(path) gzip") == nil, "\(path)")
        }
        // The head of a compressed response: no length or ranges, a weak tag, Vary merged.
        let big = seen["/big.json gzip"] ?? [:]
        #expect(big["length"] is NSNull && big["ranges"] is NSNull && big["chunked"] as? Bool == true)
        #expect(big["etag"] as? String == "W/\"big-1\"")
        #expect(big["vary"] as? String == "Origin, Accept-Encoding")
        #expect((big["wire_bytes"] as? Int ?? .max) < 116670 / 4)
        // Uncompressed but compressible: it still varies; strong tag and length kept.
        let plain = seen["/big.json None"] ?? [:]
        #expect(plain["vary"] as? String == "Origin, Accept-Encoding" && plain["etag"] as? String == "\"big-1\"" && plain["length"] as? String == "116670")
        #expect(seen["/off/big.json gzip"]?["vary"] as? String == "Origin")
        #expect(seen["/varystar gzip"]?["vary"] as? String == "*")
        // Never: already encoded, not a listed type, no-transform, under min_bytes, HEAD, HTTP/1.0.
        #expect(coding("/gzipped.json br") == "gzip" && seen["/gzipped.json br"]?["length"] as? String == "15957")
        #expect(coding("/image.png gzip") == nil && coding("/notransform gzip") == nil && coding("/small.txt gzip") == nil)
        #expect(seen["/small.txt gzip"]?["vary"] is NSNull)
        #expect(coding("HEAD /big.json gzip") == nil && seen["HEAD /big.json gzip"]?["length"] as? String == "116670")
        #expect(seen["HEAD /big.json gzip"]?["vary"] as? String == "Origin, Accept-Encoding", "HEAD is told it varies, as its GET")
        #expect(seen["http1.0"]?["coding"] as? Bool == false && seen["http1.0"]?["vary"] as? Bool == true)
        // HTTP/2: brotli, no content-length.
        #expect(seen["h2 br"]?["http2"] as? Bool == true && seen["h2 br"]?["coding"] as? Bool == true && seen["h2 br"]?["length"] as? Bool == false)
        // Event streams: only when named, and each event arrives as it is sent (0.8 s apart).
        let listed = seen["events listed"] ?? [:], byWildcard = seen["events by text/*"] ?? [:]
        #expect(listed["coding"] as? String == "gzip" && byWildcard["coding"] is NSNull)
        #expect(listed["events"] as? Int == 3)
        #expect((listed["first_event_s"] as? Double ?? 99) < 0.6, "\(listed)")
        #expect((listed["total_s"] as? Double ?? 0) >= 1.5, "\(listed)")
    }
}

import Foundation
import Testing
@testable import Proxy

/// JWKS fetched from a URL (issue 16): the config, the bookkeeping that decides when a worker
/// waits for a fetch and when it is refused, and a fetch of a document over a real socket from a
/// local server (`DocumentFetch`). `PolicyIntegrationTests` drives the whole proxy.
struct RemoteKeySetTests {
    private func jwt(_ jwks: String) throws -> AuthConfig.JWT {
        let config = try ConfigLoader.parse(Array(#"{"backends": [{"url": "http://127.0.0.1:1"}], "policy": {"auth": {"jwt": {"jwks": \#(jwks)}}}}"#.utf8), file: "c.json")
        return try #require(config.policy.auth?.jwt)
    }

    @Test func theURLFormsAreReadAndCleartextOnlyToLoopback() throws {
        let short = try #require(try jwt(#""https://id.example/.well-known/jwks.json""#).remote)
        #expect(short.host == "id.example" && short.port == 443 && short.target == "/.well-known/jwks.json" && short.tls)
        #expect(short.refreshS == 300 && short.minRefetchS == 30 && short.timeoutMs == 5000 && short.maxBytes == 1 << 20)
        let long = try #require(try jwt(#"{"url": "http://127.0.0.1:8443?tenant=a", "refresh_s": 60, "min_refetch_s": 5, "timeout_ms": 900}"#).remote)
        #expect(long.host == "127.0.0.1" && long.port == 8443 && long.target == "/?tenant=a" && !long.tls)
        #expect(long.refreshS == 60 && long.minRefetchS == 5 && long.timeoutMs == 900)
        #expect(try jwt(#""http://[::1]:9000/k""#).remote?.tls == false && jwt(#""http://localhost/k""#).remote?.port == 80)
        for loopback in [#""http://LOCALHOST/k""#, #""http://[0:0:0:0:0:0:0:1]/k""#, #""http://[::ffff:127.0.0.1]/k""#, #""http://127.9.9.9/k""#] {
            #expect(try jwt(loopback).remote?.tls == false, "\(loopback)")
        }
        let v6 = try #require(try jwt(#""https://[::1]:9000/k""#).remote)
        #expect(v6.host == "::1" && v6.port == 9000)
        #expect(try jwt(#""https://id.example/k""#).algorithms.contains("ES256"), "every public-key algorithm, the keys being unknown yet")
        #expect(try !jwt(#""https://id.example/k""#).algorithms.contains("HS256"))
        for (bad, expected) in [
            (#""http://id.example/jwks""#, "use https://"),
            (#""ftp://id.example/jwks""#, "unsupported scheme"),
            (#""https://user@id.example/jwks""#, "credentials"),
            (#"{"refresh_s": 60}"#, "policy.auth.jwt.jwks.url: missing"),
            (#"{"url": "https://id.example", "refresh_s": 0}"#, "refresh_s"),
            (#"{"url": "https://id.example", "ca": "/nonexistent/ca.pem"}"#, "cannot read /nonexistent/ca.pem"),
            (#"{"url": "https://id.example", "refresh": 5}"#, "refresh_s"),
            (#""http://127.idp.example/jwks""#, "use https://"),
            (#""http://10.0.0.1/jwks""#, "use https://"),
            (#""http://127.0.0.1.nip.io/jwks""#, "use https://"),
        ] {
            do {
                _ = try jwt(bad)
                Issue.record("\(bad) was accepted")
            } catch {
                #expect("\(error)".contains(expected), "\(bad): \(error)")
            }
        }
    }

    @Test func aWorkerWaitsForAFetchUnderWayAndIsRefusedInsideTheRefetchInterval() {
        var state = RemoteKeyState(minRefetchMs: 30_000)
        // Nothing fetched, nothing under way: the first ask asks for a fetch and waits.
        #expect(state.needKeys(nowMs: 1000, mayWait: true) == .wait && state.refetchWanted)
        #expect(state.needKeys(nowMs: 1001, mayWait: true) == .wait, "asked already: wait for that one too")
        state.startFetch()
        #expect(!state.refetchWanted && state.needKeys(nowMs: 1500, mayWait: true) == .wait, "under way")
        #expect(state.needKeys(nowMs: 1500, mayWait: false) == .wait, "a resumed request still waits for this set's fetch under way")
        let key = AuthConfig.JWK(kid: "a", kty: "OKP", crv: "Ed25519", x: [UInt8](repeating: 1, count: 32))
        // A slow fetch: the interval counts from its end, so the next cannot follow at once.
        #expect(state.finishFetch(keys: [key], problem: nil, nowMs: 40_000) && state.version == 1)
        #expect(state.needKeys(nowMs: 41_000, mayWait: true) == .refuse && !state.refetchWanted)
        #expect(state.needKeys(nowMs: 69_999, mayWait: true) == .refuse)
        #expect(state.needKeys(nowMs: 70_000, mayWait: false) == .refuse && !state.refetchWanted, "a resumed request never asks for a fetch")
        #expect(state.needKeys(nowMs: 70_000, mayWait: true) == .wait && state.refetchWanted, "30 s on: one more fetch")
        state.startFetch()
        #expect(!state.finishFetch(keys: [key], problem: nil, nowMs: 70_100) && state.version == 1, "the same keys: no new version")
        state.startFetch()
        #expect(!state.finishFetch(keys: nil, problem: "status 500", nowMs: 90_000) && state.keys == [key] && state.problem == "status 500",
                "a failed fetch keeps the keys")
        #expect(state.finishFetch(keys: [], problem: nil, nowMs: 95_000) && state.version == 2 && state.problem == nil)
    }

    @Test func aFetchedJWKSLeavesOutABadKeyWhereAFileIsRefused() throws {
        // An RSA modulus of 1024 bits: OpenSSL refuses it for signatures.
        let weak = Data(repeating: 0xC5, count: 128).base64EncodedString().replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
        let x = Data(repeating: 7, count: 32).base64EncodedString().replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
        let document = Array(#"{"keys": [{"kty": "RSA", "kid": "weak", "n": "\#(weak)", "e": "AQAB"}, {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": "\#(x)"}]}"#.utf8)
        let fetched = try AuthConfig.JWT.parseJWKS(document, from: "https://id.example/k", skippingBadKeys: true).get()
        #expect(fetched.keys.map(\.kid) == ["ed"] && fetched.skipped == [#"key "weak" (RSA)"#])
        guard case .failure(let problem) = AuthConfig.JWT.parseJWKS(document, from: "keys.json") else { Issue.record("a file with a bad key was accepted"); return }
        #expect(problem.message.contains(#"keys.json: key "weak" (RSA) is not a valid public key"#))
    }

    @Test func aKeySetCarriesItsKeysToNewSettingsAndARetiredOneRefuses() {
        var source = AuthConfig.JWKSSource()
        source.url = "https://id.example/jwks"
        let old = RemoteKeySet(source)
        let key = AuthConfig.JWK(kid: "a", kty: "OKP", crv: "Ed25519", x: [UInt8](repeating: 1, count: 32))
        old.fetchStarted()
        #expect(old.fetchEnded(keys: [key], problem: nil, nowMs: 1) && old.version == 1)
        source.refreshS = 60
        let next = RemoteKeySet(source, carrying: old)
        #expect(next.version == 1 && next.current().keys == [key], "a reload that changed refresh_s keeps the keys")
        // Not attached to a fetcher yet (a generation being handed out): still told to wait.
        #expect(next.needKeys(nowMs: 10, mayWait: true, haveVersion: 1) == .wait)
        #expect(next.needKeys(nowMs: 10, mayWait: true, haveVersion: 0) == .lookAgain, "keys came since the caller looked: look again first")
        next.detach()
        #expect(next.needKeys(nowMs: 100_000, mayWait: true, haveVersion: 1) == .refuse, "no fetcher will come: refused, not stranded")
    }

    @Test func aDocumentIsFetchedOverHTTPFromTheLoopWithEachFraming() throws {
        // A one-connection-at-a-time server on a thread: answers each request with the next
        // canned response, then closes.
        let answers = [
            "HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"keys\":[]}",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"ke\r\n7\r\nys\":[]}\r\n0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"keys\":[]}",
            "HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort",
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + String(repeating: "1\r\nx\r\n", count: 1000) + "0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + String(repeating: "1\r\nx\r\n", count: 1025) + "0\r\n\r\n",
            String(repeating: "HTTP/1.1 100 Continue\r\n\r\n", count: 9) + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
        ]
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        listen(listener, 8)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) } }
        let port = UInt16(bigEndian: address.sin_port)
        let requests = Locked<[String]>([])
        let server = Thread {
            for answer in answers {
                let c = accept(listener, nil, nil)
                guard c >= 0 else { return }
                var head: [UInt8] = []
                var chunk = [UInt8](repeating: 0, count: 4096)
                while !head.suffix(4).elementsEqual(Array("\r\n\r\n".utf8)) {
                    let n = chunk.withUnsafeMutableBytes { recv(c, $0.baseAddress, $0.count, 0) }
                    if n <= 0 { break }
                    head += chunk[0..<n]
                }
                requests.withLock { $0.append(String(decoding: head, as: UTF8.self)) }
                _ = Array(answer.utf8).withUnsafeBytes { send(c, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                close(c)
            }
        }
        server.start()
        defer { close(listener) }
        let loop = EventLoop()
        var results: [String] = []
        func fetchAll(_ left: Int) {
            guard left > 0 else { return }
            let fetch = DocumentFetch(loop: loop, .init(host: "127.0.0.1", port: port, target: "/jwks?x=1", tls: nil, timeoutMs: 3000, maxBytes: 1024))
            fetch.start { result in
                _ = fetch  // kept until it has answered
                switch result {
                case .success(let body): results.append(String(decoding: body, as: UTF8.self))
                case .failure(let why): results.append("error: " + why.message)
                }
                fetchAll(left - 1)
            }
        }
        fetchAll(answers.count)
        loop.run()
        #expect(results.count == 9, "\(results)")
        #expect(results.count == 9 && results[8] == "error: more than 8 interim (1xx) responses", "\(results)")
        #expect(Array(results.prefix(3)) == ["{\"keys\":[]}", "{\"keys\":[]}", "{\"keys\":[]}"], "\(results)")
        #expect(results.count == 9 && results[3] == "error: status 503")
        #expect(results.count == 9 && results[4].contains("larger than 1024 bytes"), "\(results)")
        #expect(results.count == 9 && results[5].contains("closed the connection after 5 of 50 body bytes"), "\(results)")
        #expect(results.count == 9 && results[6] == String(repeating: "x", count: 1000), "an interim head is skipped; 1000 one-byte chunks: \(results.count == 8 ? results[6].count : 0)")
        #expect(results.count == 9 && results[7].contains("larger than 1024 bytes"), "the body counts, not the chunk framing")
        let first = requests.withLock { $0.first } ?? ""
        #expect(first.hasPrefix("GET /jwks?x=1 HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\n") && first.contains("Connection: close"), "\(first)")

        // Nothing listens: the connect fails and says so, within the deadline.
        let dead = DocumentFetch(loop: loop, .init(host: "127.0.0.1", port: 1, target: "/", tls: nil, timeoutMs: 3000, maxBytes: 1024))
        var refused = ""
        dead.start { if case .failure(let why) = $0 { refused = why.message } }
        loop.run()
        #expect(refused.contains("connecting to 127.0.0.1:1") && refused.contains("ECONNREFUSED"), "\(refused)")
    }
}

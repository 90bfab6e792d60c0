import Glibc
import Proxy

/// `proxy trust` and `proxy untrust`: put the local CA (`LocalCertificateAuthority`, behind
/// `--https` and `"tls": "local"`) into, or take it out of, the trust stores a developer's tools
/// read — Debian's system store (curl, OpenSSL, Debian's Python) and the NSS databases of
/// Chromium (`~/.pki/nssdb`) and Firefox profiles — and say what it did. Idempotent: a store
/// that already has this CA is left alone. Where it cannot act (not root, no `certutil`), it
/// prints the manual step instead.
enum LocalTrust {
    static let systemFile = "/usr/local/share/ca-certificates/swift-proxy-local-ca.crt"
    static let nickname = "swift-proxy local CA"

    /// `system: false` (`--no-system`) leaves the system store alone: the browsers' databases only.
    static func run(trust: Bool, system: Bool) -> Int32 {
        let environment = LocalCertificateAuthority.currentEnvironment()
        let directory = LocalCertificateAuthority.directory(environment: environment)
        let ca: (cert: String, key: String, created: Bool)
        if trust {
            do { ca = try LocalCertificateAuthority.ensure(in: directory) } catch {
                print("proxy trust: \(error.message)")
                return 1
            }
            print("local CA: \(ca.cert)\(ca.created ? " (created now)" : "")")
        } else {
            ca = (directory + "/" + LocalCertificateAuthority.certificateFile, "", false)
        }
        let pem = readFile(ca.cert)
        var failed = false
        if system { failed = !systemStore(trust: trust, pem: pem, cert: ca.cert) || failed }
        for db in nssDatabases(environment, creatingChromium: trust) {
            failed = !nssStore(db, trust: trust, pem: pem, cert: ca.cert) || failed
        }
        if trust {
            print("""
                Node.js ignores the system store; for it:   export NODE_EXTRA_CA_CERTS=\(ca.cert)
                pip-installed Python (certifi) too:         export REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
                Containers and WSL have their own stores: copy \(ca.cert) there and trust it the same way.
                """)
        }
        return failed ? 1 : 0
    }

    /// Debian's store: the file under /usr/local/share/ca-certificates, then update-ca-certificates.
    private static func systemStore(trust: Bool, pem: String?, cert: String) -> Bool {
        let installed = readFile(systemFile)
        if trust && installed != nil && installed == pem { print("system store: already trusted (\(systemFile))"); return true }
        if !trust && installed == nil { print("system store: not installed, nothing to remove"); return true }
        guard geteuid() == 0 else {
            print(trust ? "system store: needs root; run:  sudo cp \(cert) \(systemFile) && sudo update-ca-certificates"
                        : "system store: needs root; run:  sudo rm \(systemFile) && sudo update-ca-certificates --fresh")
            return true
        }
        if trust {
            guard let pem, writeFile(systemFile, pem) else { print("system store: cannot write \(systemFile)"); return false }
        } else {
            unlink(systemFile)
        }
        let (status, output) = spawn(["update-ca-certificates"] + (trust ? [] : ["--fresh"]))
        guard status == 0 else { print("system store: update-ca-certificates failed: \(output)"); return false }
        print(trust ? "system store: installed \(systemFile) (update-ca-certificates)" : "system store: removed \(systemFile)")
        return true
    }

    /// Chromium's database (made when trusting and missing) and every Firefox profile's.
    private static func nssDatabases(_ environment: [String: String], creatingChromium: Bool) -> [String] {
        let home = environment["HOME"] ?? "/root"
        var databases: [String] = []
        let chromium = home + "/.pki/nssdb"
        if access(chromium + "/cert9.db", F_OK) == 0 || creatingChromium { databases.append(chromium) }
        let firefox = home + "/.mozilla/firefox"
        if let dir = opendir(firefox) {
            while let entry = readdir(dir) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                if !name.hasPrefix("."), access("\(firefox)/\(name)/cert9.db", F_OK) == 0 { databases.append("\(firefox)/\(name)") }
            }
            closedir(dir)
        }
        return databases
    }

    private static func nssStore(_ db: String, trust: Bool, pem: String?, cert: String) -> Bool {
        guard spawn(["certutil", "--version"]).status != 127 else {
            print("NSS \(db): certutil is missing; install it (Debian: apt-get install libnss3-tools) and run this again")
            return !trust
        }
        let (listed, current) = spawn(["certutil", "-L", "-d", "sql:" + db, "-n", nickname, "-a"])
        let present = listed == 0
        if trust {
            if present && normalized(current) == normalized(pem ?? "") { print("NSS \(db): already trusted"); return true }
            if access(db + "/cert9.db", F_OK) != 0 {
                _ = mkdirAll(db)
                let (made, output) = spawn(["certutil", "-N", "-d", "sql:" + db, "--empty-password"])
                guard made == 0 else { print("NSS \(db): cannot create the database: \(output)"); return false }
            }
            if present { _ = spawn(["certutil", "-D", "-d", "sql:" + db, "-n", nickname]) }  // an older CA of ours
            let (added, output) = spawn(["certutil", "-A", "-d", "sql:" + db, "-t", "C,,", "-n", nickname, "-i", cert])
            guard added == 0 else { print("NSS \(db): certutil -A failed: \(output)"); return false }
            print("NSS \(db): trusted (Chromium / Firefox)")
        } else {
            guard present else { print("NSS \(db): not installed, nothing to remove"); return true }
            let (deleted, output) = spawn(["certutil", "-D", "-d", "sql:" + db, "-n", nickname])
            guard deleted == 0 else { print("NSS \(db): certutil -D failed: \(output)"); return false }
            print("NSS \(db): removed")
        }
        return true
    }

    private static func normalized(_ pem: String) -> String { pem.filter { !$0.isWhitespace } }

    private static func mkdirAll(_ path: String) -> Bool {
        var built = ""
        for part in path.split(separator: "/") {
            built += "/" + part
            if mkdir(built, 0o700) != 0 && errno != EEXIST { return false }
        }
        return true
    }

    private static func readFile(_ path: String) -> String? {
        guard let f = fopen(path, "r") else { return nil }
        defer { fclose(f) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = fread(&chunk, 1, chunk.count, f)
            if n <= 0 { break }
            bytes += chunk[0..<n]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func writeFile(_ path: String, _ text: String) -> Bool {
        guard let f = fopen(path, "w") else { return false }
        let bytes = Array(text.utf8)
        let ok = fwrite(bytes, 1, bytes.count, f) == bytes.count
        return fclose(f) == 0 && ok
    }

    /// Runs a program found on PATH; returns its exit status (127: not found) and its output.
    private static func spawn(_ argv: [String]) -> (status: Int32, output: String) {
        var pipeFDs: [Int32] = [0, 0]
        guard pipe(&pipeFDs) == 0 else { return (127, "no pipe") }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        posix_spawn_file_actions_adddup2(&actions, pipeFDs[1], 1)
        posix_spawn_file_actions_adddup2(&actions, pipeFDs[1], 2)
        posix_spawn_file_actions_addclose(&actions, pipeFDs[0])
        let cArgs = argv.map { strdup($0) } + [nil]
        defer { cArgs.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawnp(&pid, argv[0], &actions, nil, cArgs, environ)
        posix_spawn_file_actions_destroy(&actions)
        close(pipeFDs[1])
        guard rc == 0 else { close(pipeFDs[0]); return (127, "\(argv[0]): not found") }
        var output: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(pipeFDs[0], &chunk, chunk.count)
            if n > 0 { output += chunk[0..<n]; continue }
            if n < 0 && errno == EINTR { continue }
            break
        }
        close(pipeFDs[0])
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let exited = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return (exited, String(decoding: output, as: UTF8.self).trimmingTrailingNewlines())
    }
}

extension String {
    fileprivate func trimmingTrailingNewlines() -> String {
        var s = self
        while s.last == "\n" { s.removeLast() }
        return s
    }
}

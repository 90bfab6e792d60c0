import CUV
import Glibc
import Proxy
import TestBackendKit

/// `test-backend PORT [--host ADDR]`: serves until SIGINT/SIGTERM.
enum TestBackendCommand {
    static func run(arguments: [String]) -> Int32 {
        cuv_line_buffer_stdout()
        var host = "127.0.0.1"
        var port: UInt16?
        var i = 0
        while i < arguments.count {
            let a = arguments[i]
            if a == "--host", i + 1 < arguments.count {
                host = arguments[i + 1]
                i += 2
                continue
            }
            if a == "-h" || a == "--help" {
                print("usage: test-backend PORT [--host ADDR]   (PORT 0 picks a free port)")
                return 0
            }
            guard let p = UInt16(a) else {
                print("test-backend: expected a port number, got \"\(a)\"\nusage: test-backend PORT [--host ADDR]")
                return 2
            }
            port = p
            i += 1
        }
        guard let port else {
            print("usage: test-backend PORT [--host ADDR]")
            return 2
        }
        let loop = EventLoop()
        let server = TestBackendServer(loop: loop)
        let address: SocketAddress
        do {
            address = try server.start(host: host, port: port)
        } catch {
            print("test-backend: cannot listen on \(host):\(port): \(error)")
            return 1
        }
        var watchers: [SignalWatcher] = []
        for signum in [SIGINT, SIGTERM] {
            let w = SignalWatcher(loop: loop)
            w.onSignal = { _ in loop.closeAllHandles() }
            try? w.start(signum)
            watchers.append(w)
        }
        print("test-backend: listening on \(address)")
        cuv_flush_stdout()
        loop.run()
        _ = watchers
        return 0
    }
}

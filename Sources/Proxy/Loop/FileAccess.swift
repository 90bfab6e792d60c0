import Glibc

/// File system calls for static files, made on libuv's thread pool (`BackgroundWork`) so a slow
/// disk never stalls a loop: open (with the real-path check that keeps symbolic links inside
/// the root), read a chunk at an offset, close. Results come back on the loop.
///
/// Threading: the `done` closures run on the calling loop; the calls themselves on pool threads.
enum FileAccess {
    /// An opened file (or a directory, not kept open).
    struct Opened: Sendable {
        /// -1 for a directory.
        var descriptor: Int32
        var size: UInt64
        var modifiedS: Int64
        var modifiedNs: Int64
        var isDirectory: Bool
        /// A file no larger than `open`'s `readWhole` limit, read in the same pool job (and
        /// already closed: `descriptor` is -1): one round trip to the pool instead of three.
        var contents: [UInt8]? = nil
    }

    enum Failure: Error, Equatable, Sendable {
        /// No such file, or one that may not be served (outside the root, not a regular file):
        /// answered 404 either way.
        case notFound
        /// The file exists but may not be read (permissions): 403.
        case denied(String)
        /// A passing trouble here (out of descriptors or memory, an I/O error, the thread pool
        /// busy): 503, not a 404 a cache could keep.
        case unavailable(String)
    }

    /// The failure an `errno` from a path lookup or open stands for.
    private static func failure(_ code: Int32) -> Failure {
        switch code {
        case ENOENT, ENOTDIR, ELOOP, ENAMETOOLONG: .notFound
        case EACCES, EPERM: .denied("permission denied")
        default: .unavailable(String(cString: strerror(code)))
        }
    }

    /// Opens `path`, whose real path (symbolic links resolved) must be `root` or lie under it;
    /// `root` must itself be a real path (`realRoot`).
    /// A regular file of at most `readWhole` bytes comes back read and closed (`contents`).
    static func open(_ path: String, root: String, readWhole: Int = 0, on loop: EventLoop, done: @escaping (Result<Opened, Failure>) -> Void) {
        let started = BackgroundWork.run(on: loop, { () -> Result<Opened, Failure> in
            let result = openNow(path, root: root)
            guard case .success(var opened) = result, !opened.isDirectory, opened.size <= UInt64(readWhole) else { return result }
            var buffer = [UInt8](repeating: 0, count: Int(opened.size))
            let n = buffer.withUnsafeMutableBytes { pread(opened.descriptor, $0.baseAddress, $0.count, 0) }
            guard n == buffer.count else { return result }  // changed meanwhile: read it the long way
            _ = Glibc.close(opened.descriptor)
            opened.descriptor = -1
            opened.contents = buffer
            return .success(opened)
        }, done: done)
        if !started { done(.failure(.unavailable("the thread pool refused the job"))) }
    }

    /// Reads up to `count` bytes at `offset` (fewer at the end of the file).
    static func read(_ descriptor: Int32, offset: UInt64, count: Int, on loop: EventLoop,
                     done: @escaping (Result<[UInt8], Failure>) -> Void) {
        let started = BackgroundWork.run(on: loop, { () -> Result<[UInt8], Failure> in
            var buffer = [UInt8](repeating: 0, count: count)
            let n = buffer.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress, count, off_t(offset)) }
            guard n >= 0 else { return .failure(.unavailable(String(cString: strerror(errno)))) }
            buffer.removeLast(count - n)
            return .success(buffer)
        }, done: done)
        if !started { done(.failure(.unavailable("the thread pool refused the job"))) }
    }

    /// Closes `descriptor` on the pool (closing can wait on the disk too); nothing to wait for.
    static func close(_ descriptor: Int32, on loop: EventLoop) {
        guard descriptor >= 0 else { return }
        if !BackgroundWork.run(on: loop, { _ = Glibc.close(descriptor) }, done: { _ in }) { _ = Glibc.close(descriptor) }
    }

    /// `path` with every symbolic link resolved, or nil (no such file). Blocking: for start-up
    /// and config loading.
    static func realPath(_ path: String) -> String? {
        guard let resolved = Glibc.realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// The path the kernel has for an open descriptor (`/proc/self/fd/N`), or nil.
    private static func openedPath(_ fd: Int32) -> String? {
        var buffer = [CChar](repeating: 0, count: 4097)
        let n = readlink("/proc/self/fd/\(fd)", &buffer, 4096)
        guard n > 0 else { return nil }
        return String(decoding: buffer.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Whether `path` is a directory (blocking: start-up and config loading).
    static func isDirectory(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && info.st_mode & S_IFMT == S_IFDIR
    }

    private static func openNow(_ path: String, root: String) -> Result<Opened, Failure> {
        guard let real = realPath(path) else { return .failure(failure(errno)) }
        // A link that leads out of the root (or anything else that resolves there) is not served.
        guard real == root || real.hasPrefix(root.hasSuffix("/") ? root : root + "/") else { return .failure(.notFound) }
        // The type first: opening a FIFO would wait for a writer (a pool thread stuck), opening a
        // device runs its driver. Only directories and regular files go on.
        var before = stat()
        guard stat(real, &before) == 0 else { return .failure(failure(errno)) }
        let kind = before.st_mode & S_IFMT
        if kind == S_IFDIR {
            return .success(Opened(descriptor: -1, size: 0, modifiedS: Int64(before.st_mtim.tv_sec),
                                   modifiedNs: Int64(before.st_mtim.tv_sec) &* 1_000_000_000 &+ Int64(before.st_mtim.tv_nsec), isDirectory: true))
        }
        guard kind == S_IFREG else { return .failure(.notFound) }  // a device, FIFO or socket is never served
        let fd = Glibc.open(real, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY)
        guard fd >= 0 else { return .failure(failure(errno)) }
        var info = stat()
        // Still the file that was looked at (not swapped for something else in between), and —
        // what the kernel says it opened — still under the root: a directory on the way swapped
        // for a link between `realpath` and `open` would otherwise lead out.
        guard fstat(fd, &info) == 0, info.st_mode & S_IFMT == S_IFREG, info.st_ino == before.st_ino, info.st_dev == before.st_dev,
              let opened = openedPath(fd), opened.hasPrefix(root.hasSuffix("/") ? root : root + "/") else {
            Glibc.close(fd)
            return .failure(.notFound)
        }
        return .success(Opened(descriptor: fd, size: UInt64(max(info.st_size, 0)), modifiedS: Int64(info.st_mtim.tv_sec),
                               modifiedNs: Int64(info.st_mtim.tv_sec) &* 1_000_000_000 &+ Int64(info.st_mtim.tv_nsec), isDirectory: false))
    }
}

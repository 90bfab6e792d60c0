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
    }

    enum Failure: Error, Equatable, Sendable {
        /// No such file, or one that may not be served (outside the root, not a regular file):
        /// answered 404 either way.
        case notFound
        /// The file exists but could not be read (permissions, I/O): 403 or 500.
        case denied(String)
    }

    /// Opens `path`, whose real path (symbolic links resolved) must be `root` or lie under it;
    /// `root` must itself be a real path (`realRoot`).
    static func open(_ path: String, root: String, on loop: EventLoop, done: @escaping (Result<Opened, Failure>) -> Void) {
        let started = BackgroundWork.run(on: loop, { openNow(path, root: root) }, done: done)
        if !started { done(.failure(.denied("the thread pool refused the job"))) }
    }

    /// Reads up to `count` bytes at `offset` (fewer at the end of the file).
    static func read(_ descriptor: Int32, offset: UInt64, count: Int, on loop: EventLoop,
                     done: @escaping (Result<[UInt8], Failure>) -> Void) {
        let started = BackgroundWork.run(on: loop, { () -> Result<[UInt8], Failure> in
            var buffer = [UInt8](repeating: 0, count: count)
            let n = buffer.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress, count, off_t(offset)) }
            guard n >= 0 else { return .failure(.denied(String(cString: strerror(errno)))) }
            buffer.removeLast(count - n)
            return .success(buffer)
        }, done: done)
        if !started { done(.failure(.denied("the thread pool refused the job"))) }
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

    /// Whether `path` is a directory (blocking: start-up and config loading).
    static func isDirectory(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && info.st_mode & S_IFMT == S_IFDIR
    }

    private static func openNow(_ path: String, root: String) -> Result<Opened, Failure> {
        guard let real = realPath(path) else {
            return errno == EACCES ? .failure(.denied("permission denied")) : .failure(.notFound)
        }
        // A link that leads out of the root (or anything else that resolves there) is not served.
        guard real == root || real.hasPrefix(root.hasSuffix("/") ? root : root + "/") else { return .failure(.notFound) }
        let fd = Glibc.open(real, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { return errno == EACCES ? .failure(.denied("permission denied")) : .failure(.notFound) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            Glibc.close(fd)
            return .failure(.denied(String(cString: strerror(errno))))
        }
        let kind = info.st_mode & S_IFMT
        let opened = Opened(descriptor: fd, size: UInt64(max(info.st_size, 0)), modifiedS: Int64(info.st_mtim.tv_sec),
                            modifiedNs: Int64(info.st_mtim.tv_sec) &* 1_000_000_000 &+ Int64(info.st_mtim.tv_nsec),
                            isDirectory: kind == S_IFDIR)
        if kind == S_IFDIR {
            Glibc.close(fd)
            return .success(Opened(descriptor: -1, size: 0, modifiedS: opened.modifiedS, modifiedNs: opened.modifiedNs, isDirectory: true))
        }
        guard kind == S_IFREG else {
            Glibc.close(fd)
            return .failure(.notFound)  // a device, FIFO or socket is never served
        }
        return .success(opened)
    }
}

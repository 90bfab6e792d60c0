import Glibc

/// What the supervisor tells a worker.
public enum WorkerMessage: Sendable {
    /// A reload: switch new exchanges to this configuration; adopt the listening sockets of the
    /// listeners (by index in `listeners`) whose address changed.
    case apply(ConfigGeneration, listening: [Int: Int32])
    /// Graceful shutdown: stop accepting, finish what is in flight, then stop.
    case drain
    /// Close everything now (the grace period is over, or start-up failed).
    case stopNow
    /// A fetch of a JWKS URL ended (the keys may have changed): requests waiting for keys go on.
    case keysFetched
}

/// What a worker tells the supervisor.
public enum WorkerReport: Sendable {
    case started(worker: Int)
    case failed(worker: Int, message: String)
    /// A reload was applied; `problem` says what could not be (the new listener).
    case applied(worker: Int, generation: Int, problem: String?)
    case stopped(worker: Int)
}

/// Everything a worker thread starts with; all of it `Sendable`.
struct WorkerLaunch: Sendable {
    let index: Int
    let count: Int
    let generation: ConfigGeneration
    /// This worker's listening sockets (from `ListenSockets`), one per entry of `listeners`.
    let descriptors: [Int32]
    let inbox: Mailbox<WorkerMessage>
    let reports: Mailbox<WorkerReport>
    let connectionCount: ConnectionCount
    let metrics: ProxyMetrics
    /// The admin listener's socket (`admin.listen`), for worker 0.
    let adminDescriptor: Int32?
}

/// One worker: a thread with its own libuv loop, listener, pools, timers and connections.
/// Nothing on its request path is shared with another worker except the read-only backend
/// verdicts in `SharedBackend`.
///
/// Threading: everything here lives on the worker's thread; it is built inside the thread's
/// body from a `WorkerLaunch`.
final class Worker {
    private let launch: WorkerLaunch
    private let loop = EventLoop()
    private let server: ProxyServer
    private let wakeup: Wakeup
    private var stopped = false

    /// The thread body: runs the worker's loop until it is told to stop.
    static func run(_ launch: WorkerLaunch) {
        let worker = Worker(launch)
        worker.serve()
    }

    private init(_ launch: WorkerLaunch) {
        self.launch = launch
        server = ProxyServer(worker: launch.index, workerCount: launch.count, generation: launch.generation,
                             connectionCount: launch.connectionCount, metrics: launch.metrics, loop: loop)
        wakeup = Wakeup(loop: loop)
    }

    private func serve() {
        do {
            try server.start(listeningOn: launch.descriptors)
            if let admin = launch.adminDescriptor { try server.startAdmin(listeningOn: admin) }
        } catch {
            launch.reports.post(.failed(worker: launch.index, message: error.message))
            stop()
            loop.run()
            launch.reports.post(.stopped(worker: launch.index))
            return
        }
        wakeup.onWake = { [unowned self] in self.handleMessages() }
        launch.inbox.attach(wakeup.sender)
        launch.reports.post(.started(worker: launch.index))
        handleMessages()  // anything posted before the mailbox was attached
        loop.run()
        launch.reports.post(.stopped(worker: launch.index))
    }

    private func handleMessages() {
        for message in launch.inbox.takeAll() {
            switch message {
            case .apply(let generation, let descriptors):
                var problem: String?
                if stopped || server.isDraining {
                    descriptors.values.forEach(closeDescriptor)
                } else {
                    problem = server.apply(generation, listening: descriptors)
                }
                launch.reports.post(.applied(worker: launch.index, generation: generation.number, problem: problem))
            case .drain:
                server.beginDrain { [unowned self] in self.stop() }
            case .stopNow:
                stop()
            case .keysFetched:
                if !stopped { server.keysFetched() }
            }
        }
    }

    /// Closes every handle on the loop, which then returns from `run()`.
    private func stop() {
        guard !stopped else { return }
        stopped = true
        server.shutdown()
        for case .apply(_, let descriptors) in launch.inbox.detach() { descriptors.values.forEach(closeDescriptor) }
        loop.closeAllHandles()
    }

    private func closeDescriptor(_ descriptor: Int32) { _ = Glibc.close(descriptor) }
}

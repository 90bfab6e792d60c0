import Glibc

// libuv's thread pool (4 threads unless told) runs host-name lookups and password checks for
// every worker: 8, unless the environment says otherwise, so a few slow checks never leave the
// lookups waiting (BasicAuthenticator caps checks at 4 process-wide). Read by libuv on first use.
setenv("UV_THREADPOOL_SIZE", "8", 0)
exit(ProxyCommand.run(arguments: Array(CommandLine.arguments.dropFirst())))

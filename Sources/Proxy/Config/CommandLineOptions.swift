/// The `proxy` executable's command line. Parsing lives in the library (not in `main.swift`) so it
/// is unit-tested and checked by strict concurrency like everything else.
public struct CommandLineOptions: Sendable, Equatable {
    /// What `proxy` loads when `--config` is not given.
    public static let defaultConfigPath = "config.json"

    public var configPath: String = defaultConfigPath
    /// Whether `--config` was given: a missing default `config.json` deserves a different hint
    /// than a missing file the user named.
    public var configPathWasGiven: Bool = false
    /// `--listen`, which overrides the config file's `listen`.
    public var listen: ListenAddress?
    /// `--listen` was a bare `:PORT`: all interfaces with a config file, loopback with `--to`.
    public var listenIsBarePort = false
    /// `--workers`, which overrides the config file's `workers`.
    public var workers: Int?
    /// `--to [PATH=]URL`, repeatable: serve without a config file (see `QuickStart`).
    public var targets: [String] = []
    /// `--host-header preserve|backend|VALUE` for the `--to` routes.
    public var hostHeader: HostHeaderPolicy?
    /// `--strip-prefix`: `--to /api=URL` forwards `/api/x` as `/x`.
    public var stripPrefix = false
    /// `--connect-ms`, `--upstream-ms`, … for the `--to` gateway: the config file's `timeouts`
    /// keys, by flag (`timeoutFlags`).
    public var timeouts: [String: Int] = [:]
    /// `--access-log PATH|stdout|stderr|off` and `--access-log-format combined|json` for the
    /// `--to` gateway (the config file's `access_log.path` and `.format`).
    public var accessLogPath: String?
    public var accessLogFormat: AccessLogConfig.Format?
    /// `--https`: the `--to` gateway serves HTTPS from the local CA (`"tls": "local"`).
    public var https = false
    /// `--no-inspect`: the `--to` gateway records no requests for `/_inspect` (on by default).
    public var inspect = true
    /// `--compress`: the `--to` gateway compresses responses (`"compress": true`).
    public var compress = false
    /// `--check`: validate the config and exit instead of serving.
    public var check: Bool = false
    public var help: Bool = false
    /// `--version`: print the version and the libraries' and exit.
    public var version: Bool = false

    /// The `timeouts` keys as `--to` flags: (flag, config key).
    public static let timeoutFlags: [(flag: String, key: String)] = [
        ("--connect-ms", "connect_ms"), ("--upstream-ms", "upstream_ms"), ("--response-idle-ms", "response_idle_ms"),
        ("--event-stream-idle-ms", "event_stream_idle_ms"), ("--client-header-ms", "client_header_ms"),
        ("--client-body-ms", "client_body_ms"), ("--idle-ms", "idle_ms"), ("--tunnel-idle-ms", "tunnel_idle_ms"),
    ]

    /// `base` with the `--…-ms` flags given in place of its values.
    public func appliedTimeouts(to base: TimeoutsConfig) -> TimeoutsConfig {
        var t = base
        for (flag, ms) in timeouts {
            switch flag {
            case "--connect-ms": t.connectMs = ms
            case "--upstream-ms": t.upstreamMs = ms
            case "--response-idle-ms": t.responseIdleMs = ms
            case "--event-stream-idle-ms": t.eventStreamIdleMs = ms
            case "--client-header-ms": t.clientHeaderMs = ms
            case "--client-body-ms": t.clientBodyMs = ms
            case "--idle-ms": t.idleMs = ms
            default: t.tunnelIdleMs = ms
            }
        }
        return t
    }

    public init(
        configPath: String = defaultConfigPath, configPathWasGiven: Bool = false,
        listen: ListenAddress? = nil, workers: Int? = nil, check: Bool = false, help: Bool = false
    ) {
        self.configPath = configPath
        self.configPathWasGiven = configPathWasGiven
        self.listen = listen
        self.workers = workers
        self.check = check
        self.help = help
    }

    public static let usage = """
        usage: proxy [--config PATH] [--listen ADDR] [--workers N] [--check] [--help] [--version]
               proxy --to [PATH=]URL [--to …] [--listen ADDR] [--host-header POLICY] [--strip-prefix]
                     [--https] [--compress] [--no-inspect] [--access-log PATH]
                     [--access-log-format FORMAT] [--TIMEOUT-ms MS …]
               proxy trust | untrust [--no-system]
                     install or remove the local CA (--https, "tls": "local") in the system
                     store and the browsers' (NSS) databases; --no-system: browsers only

          -c, --config PATH   JSON config file to load (default: \(defaultConfigPath))
              --listen ADDR   where to accept clients, overriding the config's "listen":
                              HOST:PORT, :PORT or [IPV6]:PORT. With a config file :PORT is every
                              IPv4 interface; with --to it is loopback only (127.0.0.1 and ::1,
                              the default being port 8080): expose the gateway with an explicit
                              address such as 0.0.0.0:3000
              --workers N     worker loops (threads), overriding the config's "workers";
                              0 = one per CPU (the default)
              --check         validate the config file and exit without serving
              --to [PATH=]URL serve without a config file: requests under PATH (which starts
                              with /) go to URL, the rest to the --to without a path; the same
                              PATH (or none) given twice load-balances. Backends are checked by
                              connecting, every second.
              --host-header P the Host the --to backends get: preserve (default), backend (their
                              own host:port; Vite and other dev servers want it) or
                              literal:VALUE (a fixed one; a value with a dot or colon, such as
                              localhost:5173, may leave out "literal:")
              --strip-prefix  --to /api=URL forwards /api/users as /users
              --https         --to: serve HTTPS with certificates from a local CA the proxy
                              makes on first use (run `proxy trust` once so browsers accept it)
              --compress      --to: compress responses with brotli or gzip ("compress": true)
              --no-inspect    --to: do not record requests for the inspector, whose live page
                              is at /_inspect on the gateway's own port (loopback clients)
              --access-log PATH         --to: a file, stdout (the default), stderr or off
              --access-log-format F     --to: combined (the default) or json
              --connect-ms MS           --to: the config's "timeouts", by the same names:
              --upstream-ms MS            connect (5000), the whole wait for a response head
              --response-idle-ms MS       (30000; raise it for long polls), silence inside a
              --event-stream-idle-ms MS   body (60000) and inside text/event-stream (3600000),
              --client-header-ms MS       a client's head (10000) and body (60000), idle
              --client-body-ms MS         keep-alive connections (60000) and tunnels
              --idle-ms MS                (3600000)
              --tunnel-idle-ms MS
          -h, --help          show this help and exit
          -V, --version       print the version and the libraries it runs on, and exit

        examples:
          proxy                                      serve with ./config.json
          proxy --config /etc/proxy.json --listen :80
          proxy --check -c staging.json              validate before deploying
          proxy --to http://localhost:5173 --to /api=http://localhost:8080 --listen :3000
                                                     a dev gateway: frontend + API on one origin
          proxy --to http://127.0.0.1:3001 --to http://127.0.0.1:3002
                                                     round-robin over two servers

        signals:
          SIGTERM, SIGINT   graceful shutdown: stop accepting, finish requests in flight
                            (up to "shutdown_grace_ms"), exit 0; a second signal exits at once
          SIGHUP            reload the config file; an invalid one changes nothing
        """

    /// The long options, in the order suggestions prefer.
    private static let longOptions = ["--config", "--listen", "--workers", "--to", "--host-header", "--strip-prefix"]
        + timeoutFlags.map(\.flag) + ["--access-log", "--access-log-format", "--https", "--compress", "--no-inspect", "--check", "--help", "--version"]

    /// Parses the arguments after the program name.
    ///
    /// Values come as `--opt VALUE` or `--opt=VALUE`. A separate value may not start with `-`, so
    /// `--config --check` reports the missing path instead of loading a file named "--check"
    /// (write `--config=-odd-name` for such a file). Options may appear once each: a second
    /// `--config` is more likely a mistake than an intended override.
    public static func parse(_ arguments: [String]) throws(CommandLineError) -> CommandLineOptions {
        var options = CommandLineOptions()
        var seen: Set<String> = []
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            guard argument.hasPrefix("-"), argument != "-" else {
                var message = "unexpected argument \"\(argument)\""
                if argument.hasSuffix(".json") { message += "; did you mean \"--config \(argument)\"?" }
                throw CommandLineError(message)
            }
            let (name, inlineValue) = split(argument)
            let option = switch name {
            case "-c": "--config"
            case "-h": "--help"
            case "-V": "--version"
            default: name
            }
            guard longOptions.contains(option) else {
                var message = "unknown option \"\(name)\""
                if let match = Suggestion.closest(to: name, among: longOptions) {
                    message += "; " + Suggestion.didYouMean(match)
                }
                throw CommandLineError(message)
            }
            guard seen.insert(option).inserted || option == "--to" else {
                throw CommandLineError("\(option) was given more than once")
            }

            /// The option's value: inline after `=`, else the next argument.
            func value(example: String) throws(CommandLineError) -> String {
                if let inlineValue, !inlineValue.isEmpty { return inlineValue }
                guard inlineValue == nil, index < arguments.count, !arguments[index].hasPrefix("-") else {
                    throw CommandLineError("\(name) needs a value, e.g. \(option) \(example)")
                }
                index += 1
                return arguments[index - 1]
            }

            switch option {
            case "--config":
                options.configPath = try value(example: defaultConfigPath)
                options.configPathWasGiven = true
            case "--listen":
                let text = try value(example: "127.0.0.1:8080")
                do throws(AddressSyntaxError) {
                    options.listen = try ListenAddress.parseExplained(text)
                    options.listenIsBarePort = text.hasPrefix(":")
                } catch {
                    throw CommandLineError("--listen expects \(ListenAddress.expectedForms), "
                        + "got \"\(text)\": \(error.problem)")
                }
            case "--workers":
                let text = try value(example: "4")
                guard AddressSyntax.isDigits(text), text.count <= 4, let n = Int(text), n <= 1024 else {
                    throw CommandLineError("--workers expects a number from 0 to 1024 (0 = one per CPU), got \"\(text)\"")
                }
                options.workers = n
            case "--to":
                options.targets.append(try value(example: "http://localhost:5173"))
            case _ where timeoutFlags.contains { $0.flag == option }:
                let text = try value(example: "120000")
                guard AddressSyntax.isDigits(text), text.count <= 8, let ms = Int(text), ms >= 1, ms <= 86_400_000 else {
                    throw CommandLineError("\(option) expects milliseconds from 1 to 86400000, got \"\(text)\"")
                }
                options.timeouts[option] = ms
            case "--access-log":
                let text = try value(example: "stdout")
                guard !text.isEmpty else { throw CommandLineError("--access-log expects a file, stdout, stderr or off") }
                options.accessLogPath = text
            case "--access-log-format":
                let text = try value(example: "json")
                guard let format = AccessLogConfig.Format(rawValue: text) else {
                    var message = "--access-log-format expects combined or json, got \"\(text)\""
                    if let match = Suggestion.closest(to: text, among: AccessLogConfig.Format.allCases.map(\.rawValue)) {
                        message += "; " + Suggestion.didYouMean(match)
                    }
                    throw CommandLineError(message)
                }
                options.accessLogFormat = format
            case "--host-header":
                options.hostHeader = try parseHostHeader(try value(example: "backend"))
            default:  // --check, --help, --version, --strip-prefix, --https: flags
                if inlineValue != nil { throw CommandLineError("\(option) takes no value") }
                switch option {
                case "--check": options.check = true
                case "--strip-prefix": options.stripPrefix = true
                case "--https": options.https = true
                case "--compress": options.compress = true
                case "--no-inspect": options.inspect = false
                case "--version": options.version = true
                default: options.help = true
                }
            }
        }
        if !options.targets.isEmpty && options.configPathWasGiven {
            throw CommandLineError("--to builds the configuration from the command line; use it without --config")
        }
        if options.targets.isEmpty, let flag = options.timeouts.keys.sorted().first {
            let key = timeoutFlags.first { $0.flag == flag }!.key
            throw CommandLineError("\(flag) applies to --to targets; in a config file use \"timeouts\": {\"\(key)\": …}")
        }
        if options.targets.isEmpty && (options.accessLogPath != nil || options.accessLogFormat != nil) {
            throw CommandLineError("--access-log and --access-log-format apply to --to targets; in a config file use "
                + "\"access_log\": {\"path\": …, \"format\": …}")
        }
        if options.targets.isEmpty && (options.compress || !options.inspect) {
            throw CommandLineError("--compress and --no-inspect apply to --to targets; in a config file use "
                + "\"compress\": true and \"inspect\": {\"enabled\": …}")
        }
        if options.targets.isEmpty && options.https {
            throw CommandLineError("--https applies to --to targets; in a config file use a listener with \"tls\": \"local\"")
        }
        if options.targets.isEmpty && (options.hostHeader != nil || options.stripPrefix) {
            throw CommandLineError("--host-header and --strip-prefix apply to --to targets; in a config file use "
                + "\"host_header\" and \"strip_prefix\" on a route")
        }
        return options
    }

    /// `--host-header`'s value: `preserve`, `backend`, or `literal:VALUE` for a fixed Host. A bare
    /// word that is neither is refused (a typo such as `backnd` would otherwise become the Host
    /// every request carries), with the closest policy suggested; a value that is plainly a host
    /// (it has a dot, a colon or brackets: `localhost:5173`, `app.test`) is taken as before.
    static func parseHostHeader(_ text: String) throws(CommandLineError) -> HostHeaderPolicy {
        let policies = ["preserve", "backend"]
        if policies.contains(text) { return text == "preserve" ? .preserve : .backend }
        var value = text
        if text.hasPrefix("literal:") {
            value = String(text.dropFirst("literal:".count))
        } else if !text.contains(where: { $0 == "." || $0 == ":" || $0 == "[" }) {
            var message = "--host-header expects preserve, backend or literal:VALUE, got \"\(text)\""
            if let match = Suggestion.closest(to: text, among: policies) { message += "; " + Suggestion.didYouMean(match) }
            else { message += " (for a fixed Host write literal:\(text))" }
            throw CommandLineError(message)
        }
        guard !value.isEmpty, value.utf8.allSatisfy({ (0x21...0x7E).contains($0) }) else {
            throw CommandLineError("--host-header literal:VALUE needs a host value such as localhost:5173, got \"\(text)\"")
        }
        return .literal(value)
    }

    /// `--config=x.json` → ("--config", "x.json"); short options never carry an inline value.
    private static func split(_ argument: String) -> (name: String, value: String?) {
        guard argument.hasPrefix("--"), let equals = argument.firstIndex(of: "=") else { return (argument, nil) }
        return (String(argument[..<equals]), String(argument[argument.index(after: equals)...]))
    }
}

/// A command line that cannot be used; the message names the argument and, where it can, the fix.
public struct CommandLineError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String

    public init(_ message: String) {
        self.message = message
    }

    public var description: String { message }
}

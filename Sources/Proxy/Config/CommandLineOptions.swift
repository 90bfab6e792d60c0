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
    /// `--workers`, which overrides the config file's `workers`.
    public var workers: Int?
    /// `--to [PATH=]URL`, repeatable: serve without a config file (see `QuickStart`).
    public var targets: [String] = []
    /// `--host-header preserve|backend|VALUE` for the `--to` routes.
    public var hostHeader: HostHeaderPolicy?
    /// `--strip-prefix`: `--to /api=URL` forwards `/api/x` as `/x`.
    public var stripPrefix = false
    /// `--upstream-ms`, `--response-idle-ms`, `--event-stream-idle-ms` for the `--to` gateway
    /// (the config file's `timeouts` keys).
    public var timeouts = RouteTimeoutsConfig()
    /// `--https`: the `--to` gateway serves HTTPS from the local CA (`"tls": "local"`).
    public var https = false
    /// `--check`: validate the config and exit instead of serving.
    public var check: Bool = false
    public var help: Bool = false

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
        usage: proxy [--config PATH] [--listen ADDR] [--workers N] [--check] [--help]
               proxy --to [PATH=]URL [--to …] [--listen ADDR] [--host-header POLICY] [--strip-prefix]
                     [--https] [--upstream-ms MS] [--response-idle-ms MS] [--event-stream-idle-ms MS]
               proxy trust | untrust [--no-system]
                     install or remove the local CA (--https, "tls": "local") in the system
                     store and the browsers' (NSS) databases; --no-system: browsers only

          -c, --config PATH   JSON config file to load (default: \(defaultConfigPath))
              --listen ADDR   where to accept clients, overriding the config's "listen":
                              HOST:PORT, :PORT (all IPv4 interfaces) or [IPV6]:PORT
              --workers N     worker loops (threads), overriding the config's "workers";
                              0 = one per CPU (the default)
              --check         validate the config file and exit without serving
              --to [PATH=]URL serve without a config file: requests under PATH go to URL, the
                              rest to the --to without a path; the same PATH (or none) given
                              twice load-balances. Backends are checked by connecting, every second.
              --host-header P the Host the --to backends get: preserve (default), backend (their
                              own host:port; Vite and other dev servers want it) or a value
              --strip-prefix  --to /api=URL forwards /api/users as /users
              --https         --to: serve HTTPS with certificates from a local CA the proxy
                              makes on first use (run `proxy trust` once so browsers accept it)
              --upstream-ms MS          --to: the whole wait for a response head (default 30000;
                                        raise it for long polls)
              --response-idle-ms MS     --to: the longest silence inside a response body (60000)
              --event-stream-idle-ms MS --to: the same for text/event-stream (SSE; 3600000)
          -h, --help          show this help and exit

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
    private static let longOptions = ["--config", "--listen", "--workers", "--to", "--host-header", "--strip-prefix",
                                      "--upstream-ms", "--response-idle-ms", "--event-stream-idle-ms", "--https", "--check", "--help"]

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
            case "--upstream-ms", "--response-idle-ms", "--event-stream-idle-ms":
                let text = try value(example: "120000")
                guard AddressSyntax.isDigits(text), text.count <= 8, let ms = Int(text), ms >= 1, ms <= 86_400_000 else {
                    throw CommandLineError("\(option) expects milliseconds from 1 to 86400000, got \"\(text)\"")
                }
                switch option {
                case "--upstream-ms": options.timeouts.upstreamMs = ms
                case "--response-idle-ms": options.timeouts.responseIdleMs = ms
                default: options.timeouts.eventStreamIdleMs = ms
                }
            case "--host-header":
                let text = try value(example: "backend")
                guard text.utf8.allSatisfy({ (0x21...0x7E).contains($0) }) else {
                    throw CommandLineError("--host-header expects preserve, backend or a host value such as localhost:5173, "
                        + "got \"\(text)\"")
                }
                options.hostHeader = switch text {
                case "preserve": .preserve
                case "backend": .backend
                default: .literal(text)
                }
            default:  // --check, --help, --strip-prefix, --https: flags
                if inlineValue != nil { throw CommandLineError("\(option) takes no value") }
                switch option {
                case "--check": options.check = true
                case "--strip-prefix": options.stripPrefix = true
                case "--https": options.https = true
                default: options.help = true
                }
            }
        }
        if !options.targets.isEmpty && options.configPathWasGiven {
            throw CommandLineError("--to builds the configuration from the command line; use it without --config")
        }
        if options.targets.isEmpty && options.timeouts != RouteTimeoutsConfig() {
            throw CommandLineError("--upstream-ms, --response-idle-ms and --event-stream-idle-ms apply to --to targets; "
                + "in a config file use \"timeouts\" (top level or on a route)")
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

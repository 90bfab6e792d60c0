import Glibc

exit(ProxyCommand.run(arguments: Array(CommandLine.arguments.dropFirst())))

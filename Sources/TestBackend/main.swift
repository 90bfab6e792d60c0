import Glibc

exit(TestBackendCommand.run(arguments: Array(CommandLine.arguments.dropFirst())))

"""The `isseg` command line: one sub-command a module, each with `add_arguments(parser)` and `run(args)`."""

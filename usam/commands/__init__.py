"""`usam` subcommands: one module per command.

Each module defines `HELP` (one line), `add_arguments(parser)` and `main(args) -> int`.
`usam.cli` discovers them, so adding a command is adding a file here.
"""

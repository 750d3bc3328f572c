"""The `usam` command line: `usam <command> --help` explains each command."""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import usam.commands


def _command_modules():
    for info in sorted(pkgutil.iter_modules(usam.commands.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            yield info.name, f"usam.commands.{info.name}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="usam", description="U-SAM: unified speech, audio and music LLM toolkit.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in _command_modules():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name.replace("_", "-"), help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP))
        module.add_arguments(p)
        p.set_defaults(_main=module.main)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return int(args._main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

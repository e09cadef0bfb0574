"""The ``mmfree`` command line.

Each subcommand lives beside the code it drives, in a module with ``register(subparsers)``; the
function it registers as ``func`` takes the parsed arguments and returns an exit status. Errors a user
can cause raise :class:`UsageError` (or one of the project's ``ValueError``/``OSError`` subclasses) and
end as one line on stderr with a non-zero exit, never a traceback (``MMFREE_DEBUG=1`` shows it); any
other exception ends as one line too, naming its type.
"""

import argparse
import os
import importlib
import sys

__all__ = ["main", "UsageError"]


class UsageError(Exception):
    """A user mistake: printed as one line, exit status 2."""


# modules that provide subcommands, in the order `mmfree --help` lists them
COMMAND_MODULES = [
    "mmfree.commands",
    "mmfree.train",
    "mmfree.boards.commands",
    "mmfree.hw.report",
    "mmfree.hw.commands",
    "mmfree.sim.board",
    "mmfree.sim.commands",
    "mmfree.sim.profile",
    "mmfree.run",
]


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"mmfree: error: {message}\n")


def build_parser():
    parser = _Parser(prog="mmfree", description="MatMul-free language models on FPGAs.")
    from . import __version__
    parser.add_argument("--version", action="version", version=f"mmfree {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv=None):
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:             # --help, --version, or a usage error already printed
        return e.code if isinstance(e.code, int) else 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("mmfree: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except (UsageError, ValueError, OSError) as e:
        if os.environ.get("MMFREE_DEBUG"):
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if isinstance(e, FileNotFoundError) and e.filename:
            msg = f"{e.filename}: no such file or directory"
        print(f"mmfree: error: {msg}", file=sys.stderr)
        return 2 if isinstance(e, UsageError) else 1
    except Exception as e:              # not foreseen: still one line (MMFREE_DEBUG=1 for the traceback)
        if os.environ.get("MMFREE_DEBUG"):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"mmfree: error: {type(e).__name__}{': ' + first if first else ''} "
              f"(MMFREE_DEBUG=1 shows where)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""The `weakseg` command: one parser, one subcommand module per area, expected errors as one line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from weakseg.errors import WeaksegError

# Each module `cli.<command>_cmd` exposes `register(subparsers)`, which adds the top-level command <command>
# (and its subcommands) and sets `func` on them. A parser's `func(args) -> int | None` runs the command; None
# means exit 0. Only the named command's module is imported when argv names one, so `weakseg serve` and
# `weakseg client` start without loading PyTorch.
SUBCOMMAND_MODULES = (
    "cli.synth_cmd",
    "cli.data_cmd",
    "cli.train_cmd",
    "cli.pseudo_cmd",
    "cli.refine_cmd",
    "cli.eval_cmd",
    "cli.demo_cmd",
    "cli.export_cmd",
    "cli.predict_cmd",
    "cli.ood_cmd",
    "cli.serve_cmd",
    "cli.client_cmd",
)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The `weakseg` argument parser: every subcommand, or only `command`'s when it names one."""
    import importlib

    parser = argparse.ArgumentParser(
        prog="weakseg",
        description="Label-efficient segmentation: pseudo labels from cheap labels, evaluation, training, serving.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    modules = [m for m in SUBCOMMAND_MODULES if m == f"cli.{command}_cmd"] or SUBCOMMAND_MODULES
    for name in modules:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `weakseg` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except WeaksegError as e:
        print(f"weakseg: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("weakseg: interrupted", file=sys.stderr)
        return 130
    return 0 if rc is None else int(rc)


if __name__ == "__main__":
    sys.exit(main())

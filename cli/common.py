"""Argument helpers shared by subcommands, so every command spells common options the same way."""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows every option's default in --help and keeps description line breaks."""


def add_parser(
    sub: argparse._SubParsersAction, name: str, help: str, description: str | None = None
) -> argparse.ArgumentParser:
    """Add a subcommand parser with the shared help formatter."""
    return sub.add_parser(name, help=help, description=description or help, formatter_class=HelpFormatter)


def add_device(p: argparse.ArgumentParser) -> None:
    """Add --device cpu|cuda|auto."""
    p.add_argument(
        "--device",
        default="auto",
        choices=["cpu", "cuda", "auto"],
        help="compute device; auto picks cuda when available",
    )


def add_threads(p: argparse.ArgumentParser) -> None:
    """Add --threads (torch intra-op threads)."""
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own choice)")


TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")


def parse_bool(text: str) -> bool:
    """A strict boolean: true/1/yes/on or false/0/no/off (any case); anything else is an error, never False."""
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise argparse.ArgumentTypeError(
        f"expected a boolean ({'/'.join(TRUE_WORDS)} or {'/'.join(FALSE_WORDS)}), got {text!r}"
    )

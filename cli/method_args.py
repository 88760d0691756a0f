"""Command-line options for attribution methods, generated from their dataclass fields.

Every hyper-parameter of method M is `--M-FIELD` (e.g. `--gradcam-target-layer`), default = the
dataclass default (the dissertation's value), help = the field's metadata or its name.
"""

from __future__ import annotations

import argparse
import dataclasses

from cli.common import parse_bool
from weakseg.attribution import METHODS, AttributionMethod, MultiScale, build_method


def _flag(method: str, field: str) -> str:
    return f"--{method}-{field.replace('_', '-')}"


def add_method_options(p: argparse.ArgumentParser, default: str = "cam", extra_methods: tuple[str, ...] = ()) -> None:
    """Add --method, the multi-scale options and every method's hyper-parameters; `extra_methods` are more --method
    choices whose options the caller adds (the box methods of `weakseg pseudo`)."""
    p.add_argument(
        "--method", default=default, choices=sorted(METHODS) + list(extra_methods), help="attribution method"
    )
    p.add_argument(
        "--scales",
        type=float,
        nargs="+",
        default=list(MultiScale().scales),
        help="inference scales whose maps are summed",
    )
    p.add_argument("--no-flip", action="store_true", help="do not add horizontally flipped inference")
    for name, cls in sorted(METHODS.items()):
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"attribution method {name} is not a dataclass; its fields are its options")
        if any(f.init for f in dataclasses.fields(cls)):
            add_field_options(p.add_argument_group(f"{name} hyper-parameters"), name, cls)


def add_field_options(group, prefix: str, cls: type, scalar_only: bool = False) -> None:
    """`--PREFIX-FIELD` (dest PREFIX__FIELD) for every init field of dataclass `cls`: default and help from the
    field (metadata "help", "parse", "metavar", "choices"); `scalar_only` leaves out fields that are neither
    bool/int/float/str nor parsed by their metadata (nested configs, plain tuples)."""
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        default_value = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        if scalar_only and "parse" not in f.metadata and not isinstance(default_value, (bool, int, float, str)):
            continue
        kwargs = {"default": default_value, "help": f.metadata.get("help", f.name.replace("_", " "))}
        if isinstance(default_value, bool):
            kwargs["type"] = parse_bool
            kwargs["metavar"] = "BOOL"
        elif isinstance(default_value, (int, float, str)):
            kwargs["type"] = type(default_value)
        if "parse" in f.metadata:  # a field with its own parser (e.g. a number or a keyword)
            kwargs["type"] = f.metadata["parse"]
            kwargs["metavar"] = f.metadata.get("metavar", f.name.upper())
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        group.add_argument(_flag(prefix, f.name), dest=f"{prefix}__{f.name}", **kwargs)


def fields_from_args(args: argparse.Namespace, prefix: str) -> dict:
    """The values of the `add_field_options(..., prefix, ...)` flags, by field name."""
    return {k.split("__", 1)[1]: v for k, v in vars(args).items() if k.startswith(f"{prefix}__")}


def method_from_args(args: argparse.Namespace) -> AttributionMethod:
    """Build the selected method with its hyper-parameters from parsed args."""
    return build_method(args.method, **fields_from_args(args, args.method))


def multiscale_from_args(args: argparse.Namespace) -> MultiScale:
    """The MultiScale setting from --scales/--no-flip."""
    return MultiScale(scales=tuple(args.scales), flip=not args.no_flip)

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


def add_method_options(p: argparse.ArgumentParser, default: str = "cam") -> None:
    """Add --method, the multi-scale options and every method's hyper-parameters."""
    p.add_argument("--method", default=default, choices=sorted(METHODS), help="attribution method")
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
        fields = [f for f in dataclasses.fields(cls) if f.init]
        if not fields:
            continue
        group = p.add_argument_group(f"{name} hyper-parameters")
        for f in fields:
            default_value = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
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
            group.add_argument(_flag(name, f.name), dest=f"{name}__{f.name}", **kwargs)


def method_from_args(args: argparse.Namespace) -> AttributionMethod:
    """Build the selected method with its hyper-parameters from parsed args."""
    params = {k.split("__", 1)[1]: v for k, v in vars(args).items() if k.startswith(f"{args.method}__")}
    return build_method(args.method, **params)


def multiscale_from_args(args: argparse.Namespace) -> MultiScale:
    """The MultiScale setting from --scales/--no-flip."""
    return MultiScale(scales=tuple(args.scales), flip=not args.no_flip)

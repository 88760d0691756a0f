"""Command-line options of the refiners, generated from their configuration dataclasses.

Every setting of refiner R is `--R-FIELD`: PAR's are the fields of `PARConfig` and `PARRefiner` (--par-num-iter,
--par-bg-score, ...), IRN's those of `IRNRefineConfig` (--irn-beta, ...); defaults are the dataclass defaults
(the authors' values). PARRefiner's `device` is an execution setting (--device), its `par` the PARConfig fields.
`weakseg refine irn|par` adds one refiner's options, `weakseg pseudo --refine` both.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterator
from typing import Any

from cli.common import parse_bool
from weakseg.errors import WeaksegError
from weakseg.refine.irn_refiner import IRNRefineConfig
from weakseg.refine.par import PARConfig
from weakseg.refine.refiner import PARRefiner
from weakseg.refine.stage import REFINERS, RefineSpec

SETTINGS: dict[str, tuple[type, ...]] = {"par": (PARConfig, PARRefiner), "irn": (IRNRefineConfig,)}
EXECUTION_FIELDS = ("device",)  # set by --device, never part of a refiner's configuration

HELP = {
    ("par", "dilations"): "dilations of PAR's 8-neighbour kernels",
    ("par", "num_iter"): "refinement iterations",
    ("par", "w1"): "temperature of the RGB and position kernels, in units of the neighbourhood's std",
    ("par", "w2"): "weight of the position kernel",
    ("par", "eps"): "added to the neighbourhood's std",
    (
        "par",
        "normalize",
    ): "divide the weights by 1 + w2 so they sum to 1 (false: the authors' weights, argmax the same)",
    ("par", "bg_score"): "constant background score the max-normalised maps compete with (IRN's sem_seg_bg_thres)",
    ("irn", "beta"): "affinity exponent of the random walk",
    ("irn", "exp_times"): "the walk takes 2^exp_times steps (the authors' 8: 256 steps)",
    ("irn", "radius"): "neighbourhood radius of the walk in stride-4 cells (5: IRN's 34 directions)",
    ("irn", "bg_thresh"): "background plane against the walked, max-normalised scores (IRN's sem_seg_bg_thres)",
}


def _default(f: dataclasses.Field) -> Any:
    return f.default if f.default_factory is dataclasses.MISSING else f.default_factory()


def setting_fields(name: str) -> Iterator[tuple[type, dataclasses.Field, Any]]:
    """(dataclass, field, default) of every setting of refiner `name` (nested configurations by their fields)."""
    for cls in SETTINGS[name]:
        for f in dataclasses.fields(cls):
            default = _default(f)
            if f.init and f.name not in EXECUTION_FIELDS and not dataclasses.is_dataclass(default):
                yield cls, f, default


def _flag(name: str, field: str) -> str:
    return f"--{name}-{field.replace('_', '-')}"


def _dest(name: str, cls: type, field: str) -> str:
    return f"refine_{name}__{cls.__name__}__{field}"


def add_refiner_options(p: argparse.ArgumentParser, names: tuple[str, ...] = REFINERS) -> None:
    """Add every setting of the named refiners as --R-FIELD."""
    for name in names:
        group = p.add_argument_group(f"{name} refiner settings")
        for cls, f, default in setting_fields(name):
            kwargs: dict[str, Any] = {"default": default, "help": HELP.get((name, f.name), f.name.replace("_", " "))}
            if isinstance(default, bool):
                kwargs.update(type=parse_bool, metavar="BOOL")
            elif isinstance(default, tuple):
                kwargs.update(type=type(default[0]), nargs="+", default=list(default))
            elif isinstance(default, int | float | str):
                kwargs["type"] = type(default)
            group.add_argument(_flag(name, f.name), dest=_dest(name, cls, f.name), **kwargs)


def _values(args: argparse.Namespace, name: str) -> dict[type, dict[str, Any]]:
    values: dict[type, dict[str, Any]] = {cls: {} for cls in SETTINGS[name]}
    for cls, f, _ in setting_fields(name):
        value = getattr(args, _dest(name, cls, f.name))
        values[cls][f.name] = tuple(value) if isinstance(value, list) else value
    return values


def check_unused_settings(args: argparse.Namespace, active: str | None) -> None:
    """Refuse a setting of a refiner that does not run (e.g. --irn-beta with --refine par)."""
    for name in SETTINGS:
        if name == active:
            continue
        for cls, f, default in setting_fields(name):
            value = getattr(args, _dest(name, cls, f.name), default)
            if (tuple(value) if isinstance(value, list) else value) != default:
                raise WeaksegError(f"{_flag(name, f.name)} applies to the {name} refiner only (--refine {name})")


def refine_spec_from_args(args: argparse.Namespace, name: str, irn: str | None) -> RefineSpec:
    """The RefineSpec of refiner `name` from its --R-FIELD options (and --irn for IRN); WeaksegError if invalid."""
    values = _values(args, name)
    if name == "par" and irn:
        raise WeaksegError("--irn applies to the irn refiner only")
    try:
        if name == "par":
            settings: PARRefiner | IRNRefineConfig = PARRefiner(
                par=PARConfig(**values[PARConfig]), **values[PARRefiner]
            )
        else:
            settings = IRNRefineConfig(**values[IRNRefineConfig])
    except ValueError as e:
        raise WeaksegError(f"{name} refiner: {e}") from e
    spec = RefineSpec(settings, irn_model=irn)
    spec.validate()
    return spec

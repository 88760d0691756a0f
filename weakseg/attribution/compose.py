"""Composition of attribution methods (dissertation Table 4.7): a weight adapter (RIB) followed by any method.

`Adapted(adapter, inner, at)` computes `inner`'s maps with the weights the adapter produces for the image:
summed over every adapted model (at="every", RIB's own rule with inner = CAM) or with the last one only
(at="last": the RIB-adapted weights, then e.g. AdvCAM climbing on them). No loop is copied: the adapter's
adaptation and the inner method's scale_maps are called as they are. The adaptation runs once per image, on
the first scale's batch, and each adapted model serves every scale before the next one exists (the adapter
updates one copy in place), so memory holds one extra model whatever the number of steps. A classifier
trained differently (e.g. W-OoD) composes by being the `model` argument.

`composed_method` turns an (adapter class, inner class) pair into one flat frozen dataclass whose fields are
the two classes' fields prefixed with their names, so the CLI exposes every hyper-parameter of both
(`--rib-advcam-rib-steps`, `--rib-advcam-advcam-xi`, ...).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch

from weakseg.attribution.base import AttributionMethod
from weakseg.models.contract import CAMModel


class WeightAdapter(Protocol):
    """Something that adapts a model to one image (RIB)."""

    def adaptation(
        self, model: CAMModel, x: torch.Tensor, classes: torch.Tensor, *, image_key: str = "", keep: str = "all"
    ) -> Iterator[CAMModel]:
        """theta_0..theta_K for the image one at a time (keep="last": theta_K only); theta_k may be updated in
        place into theta_{k+1} once the next one is asked for."""

    def config(self) -> dict:
        """The adapter's configuration."""

    def check_inputs(self, num_classes: int) -> None:
        """Fail now if the adapter's inputs (RIB's companions) cannot serve the model."""


@dataclass(frozen=True)
class Adapted(AttributionMethod):
    """`inner`'s maps on the adapter's weights: summed over all adapted models (every) or on the last (last)."""

    adapter: WeightAdapter
    inner: AttributionMethod
    at: str = "every"

    name = "adapted"

    def __post_init__(self) -> None:
        if self.at not in ("every", "last"):
            raise ValueError(f"at must be every or last, got {self.at!r}")

    def config(self) -> dict:
        """Both parts' configurations."""
        return {"method": self.name, "adapter": self.adapter.config(), "inner": self.inner.config(), "at": self.at}

    def check_inputs(self, num_classes: int) -> None:
        """Both parts' inputs."""
        self.adapter.check_inputs(num_classes)
        self.inner.check_inputs(num_classes)

    def scale_maps(
        self, model: CAMModel, x: torch.Tensor, classes: torch.Tensor, *, image_key: str = ""
    ) -> torch.Tensor:
        """sum over the selected adapted models of inner.scale_maps: [N, K, h, w] (adapting on x itself)."""
        return next(iter(self.multiscale_maps(model, [x], classes, image_keys=[image_key])))

    def multiscale_maps(
        self, model: CAMModel, batches: Sequence[torch.Tensor], classes: torch.Tensor, *, image_keys: Sequence[str]
    ) -> Iterator[torch.Tensor]:
        """Per scale, the sum over the selected adapted models of inner.scale_maps, from one adaptation on batches[0]."""
        totals: list[torch.Tensor | None] = [None] * len(batches)
        keep = "last" if self.at == "last" else "all"
        for m in self.adapter.adaptation(model, batches[0], classes, image_key=image_keys[0], keep=keep):
            for i, (x, key) in enumerate(
                zip(batches, image_keys, strict=True)
            ):  # every scale before m is updated in place
                maps, before = self.inner.scale_maps(m, x, classes, image_key=key), totals[i]
                totals[i] = maps if before is None else before + maps
        for total in totals:
            if total is None:
                raise RuntimeError(f"{type(self.adapter).__name__}.adaptation yielded no model")
            yield total


class ComposedMethod(AttributionMethod):
    """Base of the flat dataclasses made by composed_method; builds the Adapted pair from its prefixed fields."""

    adapter_cls: ClassVar[type]
    inner_cls: ClassVar[type[AttributionMethod]]
    at: str  # a field of every subclass (composed_method adds it)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "_parts", Adapted(self._build(self.adapter_cls), self._build(self.inner_cls), at=self.at)
        )

    def _build(self, cls: type) -> Any:
        params = {f.name: getattr(self, f"{_prefix(cls)}_{f.name}") for f in dataclasses.fields(cls) if f.init}
        return cls(**params)

    @property
    def parts(self) -> Adapted:
        """The adapter and the inner method as objects."""
        return self._parts  # type: ignore[attr-defined]  # set by __post_init__ through object.__setattr__ (frozen)

    def scale_maps(
        self, model: CAMModel, x: torch.Tensor, classes: torch.Tensor, *, image_key: str = ""
    ) -> torch.Tensor:
        """The composition's maps (see Adapted)."""
        return self.parts.scale_maps(model, x, classes, image_key=image_key)

    def multiscale_maps(
        self, model: CAMModel, batches: Sequence[torch.Tensor], classes: torch.Tensor, *, image_keys: Sequence[str]
    ) -> Iterator[torch.Tensor]:
        """The composition's maps at every scale of one image, from one adaptation (see Adapted)."""
        return self.parts.multiscale_maps(model, batches, classes, image_keys=image_keys)

    def check_inputs(self, num_classes: int) -> None:
        """Both parts' inputs (see Adapted)."""
        self.parts.check_inputs(num_classes)

    def config(self) -> dict:
        """The flat configuration, without the inner execution settings (e.g. AdvCAM's max_batch)."""
        adapter, inner = self.parts.adapter.config(), self.parts.inner.config()
        flat = {f"{_prefix(self.adapter_cls)}_{k}": v for k, v in adapter.items() if k != "method"}
        flat.update({f"{_prefix(self.inner_cls)}_{k}": v for k, v in inner.items() if k != "method"})
        return {"method": self.name, **flat, "at": self.at}


def _prefix(cls: Any) -> str:
    return cls.name.replace("-", "_")


def composed_method(
    name: str, class_name: str, adapter_cls: type, inner_cls: type[AttributionMethod], at: str = "last"
) -> type[AttributionMethod]:
    """A frozen dataclass `class_name` registered as method `name`: adapter_cls's weights, then inner_cls."""
    specs = []
    for cls in (adapter_cls, inner_cls):
        for f in dataclasses.fields(cls):
            if f.init:
                specs.append((f"{_prefix(cls)}_{f.name}", f.type, field(default=f.default, metadata=f.metadata)))
    specs.append(
        (
            "at",
            "str",
            field(
                default=at,
                metadata={
                    "help": f"last: {inner_cls.name} on the final adapted weights; every: summed over all adapted weights",
                    "choices": ["last", "every"],
                },
            ),
        )
    )
    cls = dataclasses.make_dataclass(
        class_name,
        specs,
        bases=(ComposedMethod,),
        frozen=True,
        namespace={
            "name": name,
            "adapter_cls": adapter_cls,
            "inner_cls": inner_cls,
            "__doc__": f"{adapter_cls.__name__} adaptation followed by {inner_cls.__name__}.",
        },
    )
    return cls

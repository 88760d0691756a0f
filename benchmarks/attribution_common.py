"""Shared pieces of the attribution benchmarks: the fixed image subset, per-image result caches that resume,
pass counting, and seed evaluation of a cached maps folder.

Every result is cached per image (an .npz written atomically) in a folder whose name carries a hash of
everything that determines it (method configuration, model checksum, scales, image subset), so a run can stop
anywhere and continue in a later session, and changing a setting never mixes results.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from weakseg.attribution import AttributionMethod, MultiScale, compute_maps
from weakseg.data.augment import to_tensor
from weakseg.data.voc import VOCDataset
from weakseg.io import atomic_save_npz, atomic_write_json, atomic_write_text
from weakseg.models.checkpoint import file_sha256
from weakseg.refine.crf import CRFConfig
from weakseg.report.seed_eval import SeedEvaluation, evaluate_seed_folder


def fixed_subset(data: Path, split: str, n: int, seed: int, out: Path, name: str = "ids") -> Path:
    """Write (once) and return <out>/<name>.txt: n ids of the split drawn with a fixed seed, the same for every method."""
    path = out / f"{name}.txt"
    if path.exists():
        return path
    ids = sorted(VOCDataset(data, split).ids)
    chosen = sorted(np.random.default_rng(seed).permutation(ids)[: min(n, len(ids))].tolist())
    atomic_write_text(path, "\n".join(chosen) + "\n")
    return path


def open_subset(args, name: str) -> tuple[VOCDataset, Path, nn.Module, torch.device]:
    """Shared benchmark setup from --threads/--device/--out/--data/--split/--images/--subset-seed/--model:
    the fixed id subset as a dataset, its list file, the loaded classifier and the device."""
    from weakseg.device import resolve_device, set_threads
    from weakseg.models.classifier_io import load_classifier

    set_threads(args.threads)
    device = resolve_device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    ids_path = fixed_subset(args.data, args.split, args.images, args.subset_seed, args.out, name=name)
    return VOCDataset(args.data, ids_path, labels="auto"), ids_path, load_classifier(args.model, device)[0], device


def short_hash(obj: object) -> str:
    """A 10-hex-digit digest of a JSON-able object."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


@dataclass
class PassCounter:
    """Counts backbone forward and backward passes (and the image rows they carried) through a model's stem.

    The hooks travel with deep copies (RIB's adapted models), so every pass is counted.
    """

    forwards: int = 0
    backwards: int = 0
    forward_rows: int = 0
    handles: list = field(default_factory=list)

    def attach(self, model: nn.Module) -> "PassCounter":
        """Install the hooks on model.stem."""
        def on_forward(module, inputs, output):
            self.forwards += 1
            self.forward_rows += int(inputs[0].shape[0])

        def on_backward(module, grad_input, grad_output):
            self.backwards += 1

        # RIB's parameter-gradient backward has no input gradient: the hook then fires on the outputs (and warns)
        warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed with respect "
                                                  "to module outputs")
        self.handles = [model.stem.register_forward_hook(on_forward), model.stem.register_full_backward_hook(on_backward)]
        return self

    def reset(self) -> None:
        """Zero the counts."""
        self.forwards = self.backwards = self.forward_rows = 0

    def detach(self) -> None:
        """Remove the hooks."""
        for h in self.handles:
            h.remove()


@dataclass
class CachedRun:
    """One method's maps for a fixed list of images, cached per image in `folder/maps/<id>.npz`."""

    folder: Path
    done: int = 0
    computed: int = 0


def run_cached(method: AttributionMethod, model: nn.Module, dataset: VOCDataset, ids: list[str], multiscale: MultiScale,
               folder: Path, device: torch.device, record: dict, progress: Callable[[str], None] = print) -> CachedRun:
    """Compute and cache maps for every id not yet done; each npz also holds seconds and pass counts."""
    (folder / "maps").mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / "config.json", record)
    counter = PassCounter().attach(model)
    run = CachedRun(folder)
    try:
        for n, image_id in enumerate(ids):
            path = folder / "maps" / f"{image_id}.npz"
            if path.exists():
                run.done += 1
                continue
            image = dataset.image(image_id)
            class_ids = dataset.label_ids(image_id)
            counter.reset()
            t0 = time.perf_counter()
            maps = compute_maps(method, model, to_tensor(image).to(device), [c - 1 for c in class_ids], multiscale,
                                image_key=image_id)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - t0
            atomic_save_npz(path, maps=maps.cpu().numpy().astype(np.float16), class_ids=np.asarray(class_ids, np.int16),
                            seconds=np.float64(seconds), forwards=np.int64(counter.forwards),
                            backwards=np.int64(counter.backwards), forward_rows=np.int64(counter.forward_rows))
            run.done += 1
            run.computed += 1
            progress(f"  {folder.name}: {n + 1}/{len(ids)} {image_id} {seconds:.1f}s "
                     f"({counter.forwards} fwd, {counter.backwards} bwd)")
    finally:
        counter.detach()
    return run


def cost_summary(folder: Path) -> dict[str, float]:
    """Mean seconds, forward and backward passes per image over the cached npz files of a run."""
    rows = []
    for path in sorted((folder / "maps").glob("*.npz")):
        with np.load(path) as z:
            if "seconds" in z:
                rows.append((float(z["seconds"]), int(z["forwards"]), int(z["backwards"]), int(z["forward_rows"])))
    if not rows:
        return {}
    a = np.asarray(rows, dtype=np.float64)
    return {"seconds_per_image": float(a[:, 0].mean()), "forwards_per_image": float(a[:, 1].mean()),
            "backwards_per_image": float(a[:, 2].mean()), "forward_rows_per_image": float(a[:, 3].mean()), "images": len(rows)}


def evaluate_cached(dataset: VOCDataset, folder: Path, crf: bool) -> SeedEvaluation:
    """Seed evaluation (best threshold, precision/recall/F1; optionally after CRF) of a run's maps, cached as JSON."""
    out = folder / ("eval_crf.json" if crf else "eval.json")
    n_maps = len(list((folder / "maps").glob("*.npz")))
    result = evaluate_seed_folder(dataset, folder / "maps", crf=CRFConfig() if crf else None)
    atomic_write_json(out, {"num_maps": n_maps, **result.to_json()})
    return result


def model_identity(path: Path) -> str:
    """The checksum of a classifier checkpoint (part of every cache key)."""
    return file_sha256(path)


def markdown(rows: list[dict], columns: list[str]) -> str:
    """A Markdown table of dict rows (floats with 1 or 3 decimals)."""
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.1f}" if abs(v) >= 10 else f"{v:.3f}"
        return "" if v is None else str(v)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)

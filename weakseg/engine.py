"""One training engine for every trainer (classifier, segmenter, ...): epochs, optimiser, poly schedule,
progress with rate, per-epoch checkpoints and exact resume.

A trainer supplies the model, a data loader, a loss function and a `save_model` callback; the engine owns
the loop. Resume state lives in `<out>/resume.pt` (loaded with weights_only=True): weights, optimizer state
(restored onto the model's device, which the model is moved to first), epoch, history and the CPU random state,
plus the CUDA random state when training on a GPU.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from weakseg.errors import WeaksegError
from weakseg.io import atomic_write_json
from weakseg.models.checkpoint import RESUME_NAME, load_resume, save_resume

ModelT = TypeVar("ModelT", bound=nn.Module)


class Batches(Protocol):
    """What fit() iterates: a sized iterable of batches (an EpochLoader; `set_epoch(epoch)` is used when present)."""

    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Any]: ...


LossFn = Callable[[ModelT, Any], tuple[torch.Tensor, dict[str, float]]]


@dataclass
class TrainConfig:
    """Optimisation settings shared by all trainers."""

    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"  # adamw | sgd
    momentum: float = 0.9
    poly_power: float = 0.9  # lr * (1 - step/total)^power
    warmup_steps: int = 0
    seed: int = 0
    head_lr_mult: float = 1.0  # lr multiplier for parameters in the "head" group


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a torch Generator for data order."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def _optimizer(cfg: TrainConfig, groups: list[dict]) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True)
    raise WeaksegError(f"unknown optimizer {cfg.optimizer!r}; use adamw or sgd")


def _lr_factor(cfg: TrainConfig, step: int, total: int) -> float:
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    return warm * max(0.0, 1.0 - step / max(1, total)) ** cfg.poly_power


@dataclass
class FitResult:
    """What a training run produced."""

    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from_epoch: int = 0
    seconds: float = 0.0


def _without(record: dict[str, Any], key: str) -> dict[str, Any]:
    """The record less one key (what a resume compares: everything but the epoch count may not change)."""
    return {k: v for k, v in record.items() if k != key}


def fit(
    model: ModelT,
    loader: Batches,
    loss_fn: LossFn[ModelT],
    cfg: TrainConfig,
    out_dir: str | Path,
    save_model: Callable[[ModelT, dict[str, Any]], None],
    *,
    device: torch.device,
    head_params: list[nn.Parameter] | None = None,
    run_info: dict[str, Any] | None = None,
    progress: bool = True,
    on_epoch_end: Callable[[ModelT, int], dict[str, float]] | None = None,
) -> FitResult:
    """Train `model` for cfg.epochs, checkpointing every epoch into out_dir and resuming if a matching
    resume state exists there. `run_info` (data, architecture, ...) must match on resume."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run_record = {"train": asdict(cfg), **(run_info or {})}
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise WeaksegError("no training samples (empty split?)")
    total = cfg.epochs * steps_per_epoch

    model.to(device)  # before the optimizer exists, so its state (fresh or resumed) lives where the parameters do
    head_ids = {id(p) for p in head_params or []}
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in trainable if id(p) not in head_ids], "lr_mult": 1.0}]
    if head_ids:
        groups.append({"params": [p for p in trainable if id(p) in head_ids], "lr_mult": cfg.head_lr_mult})
    optim = _optimizer(cfg, groups)

    result = FitResult()
    start_epoch = 0
    resume_path = out / RESUME_NAME
    if resume_path.exists():
        state = load_resume(resume_path)
        saved = json.loads(state["run_record"])
        same_run = _without(saved, "train") == _without(run_record, "train")
        same_training = _without(saved["train"], "epochs") == _without(run_record["train"], "epochs")
        if not (same_run and same_training):
            raise WeaksegError(
                f"{out}: holds a run with a different configuration; use a new --out or remove {resume_path}"
            )
        model.load_state_dict(state["model"])
        optim.load_state_dict(state["optimizer"])  # casts the state onto each parameter's device
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        start_epoch = int(state["epoch"])
        result.history = json.loads(state["history"])
        result.resumed_from_epoch = start_epoch
    else:
        seed_everything(cfg.seed)

    t0 = time.time()
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        sums: dict[str, float] = {}
        seen = 0
        epoch_t0 = time.time()
        bar = tqdm(
            loader,
            total=steps_per_epoch,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            unit="batch",
            disable=not progress,
            leave=False,
            dynamic_ncols=True,
        )
        for i, batch in enumerate(bar):
            step = epoch * steps_per_epoch + i
            factor = _lr_factor(cfg, step, total)
            for g in optim.param_groups:
                g["lr"] = cfg.lr * g["lr_mult"] * factor
            loss, metrics = loss_fn(model, batch)
            if not torch.isfinite(loss):
                raise WeaksegError(f"loss became {loss.item()} at epoch {epoch + 1} step {i}; lower --lr")
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            n = int(metrics.pop("n", 1))
            seen += n
            for k, v in {"loss": loss.item(), **metrics}.items():
                sums[k] = sums.get(k, 0.0) + v * n
            bar.set_postfix(
                loss=f"{sums['loss'] / seen:.4f}", rate=f"{seen / max(1e-9, time.time() - epoch_t0):.1f} img/s"
            )
        record = {
            "epoch": epoch + 1,
            **{k: v / max(1, seen) for k, v in sums.items()},
            "lr": optim.param_groups[0]["lr"],
            "seconds": round(time.time() - epoch_t0, 2),
        }
        if on_epoch_end is not None:
            model.eval()
            record.update(on_epoch_end(model, epoch + 1))
        result.history.append(record)
        if progress:
            print(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in record.items()}), flush=True)
        save_model(model, {"epoch": epoch + 1, "history": result.history})
        save_resume(
            resume_path,
            {
                "model": model.state_dict(),
                "optimizer": optim.state_dict(),
                "epoch": epoch + 1,
                "torch_rng": torch.get_rng_state(),
                "history": json.dumps(result.history),
                "run_record": json.dumps(run_record, sort_keys=True),
                **({"cuda_rng": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {}),
            },
        )
        atomic_write_json(out / "run.json", {**run_record, "history": result.history})
    model.eval()
    result.seconds = time.time() - t0
    return result

"""The demo pipeline: wires the data layer, the training tier and the batch tier (so it lives in cli/)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from weakseg.attribution import MultiScale, build_method
from weakseg.data.voc import VOCDataset
from weakseg.device import resolve_device, set_threads
from weakseg.engine import TrainConfig
from weakseg.io import atomic_save_png, atomic_write_json, read_label_png
from weakseg.metrics.seeds import evaluate_labels
from weakseg.pseudo import LabelConfig
from weakseg.refine.crf import CRFConfig
from weakseg.report.markdown import Section, write_report
from weakseg.report.overlay import colorize_label, heatmap_overlay, tile
from weakseg.report.seed_eval import evaluate_seed_folder, load_maps, maps_folder

# Time budget per stage (seconds) on a 2-core CPU machine, 10 minutes in all;
# benchmarks/demo_time.py runs the demo and prints the measured figures against these.
STAGE_BUDGET_S = {"synth": 20, "train": 390, "pseudo": 100, "evaluate": 30, "segmenter": 50, "report": 10}


@dataclass
class DemoConfig:
    """What the demo runs; defaults fit the 10-minute budget on a 2-core CPU."""

    out: Path = Path("demo_out")
    seed: int = 0
    epochs: int = 4
    arch: str = "resnet18"  # the classifier's backbone
    pretrained: str | None = None  # backbone init (train classifier --pretrained); None: from scratch
    eval_images: int = 60
    methods: tuple[str, ...] = ("cam", "gradcam")
    scales: tuple[float, ...] = (1.0, 0.5, 1.5)
    device: str = "auto"
    segmenter_epochs: int = 15
    threads: int | None = None
    timings: dict[str, float] = field(default_factory=dict)


@contextmanager
def _stage(cfg: DemoConfig, name: str) -> Iterator[None]:
    print(f"== {name}", flush=True)
    t0 = time.time()
    yield
    cfg.timings[name] = round(cfg.timings.get(name, 0.0) + time.time() - t0, 1)


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run all stages into cfg.out and return the summary (also in <out>/summary.json)."""
    from batch.pseudo_job import PseudoJob, run_local
    from training.classifier import ClassifierJob, default_learning_rates, train_classifier
    from weakseg.data.synth import SynthConfig, generate

    set_threads(cfg.threads)
    device = resolve_device(cfg.device)
    out = Path(cfg.out)
    data, run_dir = out / "data", out / "runs" / "classifier"

    with _stage(cfg, "synth"):
        if not (data / "synth.json").exists():
            generate(SynthConfig(seed=cfg.seed), data, workers=2)
    with _stage(cfg, "train"):
        lr, head_lr_mult = default_learning_rates(pretrained=cfg.pretrained is not None)
        train = TrainConfig(epochs=cfg.epochs, seed=cfg.seed, lr=lr, head_lr_mult=head_lr_mult)
        job = ClassifierJob(
            data=data, out=run_dir, val_split=None, arch=cfg.arch, pretrained=cfg.pretrained, train=train
        )
        train_classifier(job, device)

    multiscale = MultiScale(scales=cfg.scales, flip=True)
    crf = CRFConfig()
    dataset = VOCDataset(data, "train")
    rows: list[dict[str, Any]] = []
    results: dict[str, Any] = {}
    for name in cfg.methods:
        folder = out / "pseudo" / name
        with _stage(cfg, "pseudo"):
            summary = run_local(
                PseudoJob(
                    method=build_method(name),
                    model=run_dir,
                    data=data,
                    split="train",
                    out=folder,
                    multiscale=multiscale,
                    labels=LabelConfig(crf=crf),
                    limit=cfg.eval_images,
                ),
                device,
            )
        with _stage(cfg, "evaluate"):
            ev = evaluate_seed_folder(dataset, folder, crf)
            ids = ev.ids
            labels = evaluate_labels(
                ((dataset.require_mask(i), folder / "labels" / f"{i}.png") for i in ids), dataset.classes
            )
        results[name] = {"seeds": ev.to_json(), "labels": labels.to_json(), "pseudo": summary}
        rows.append(
            {
                "method": name,
                "seed mIoU": ev.plain.miou,
                "best t": ev.plain.threshold,
                "precision": ev.plain.precision,
                "recall": ev.plain.recall,
                "F1": ev.plain.f1,
                "seed+CRF mIoU": ev.crf.miou if ev.crf else None,
                "CRF gain": (ev.crf.miou - ev.plain.miou) if ev.crf else None,
                "label mIoU": labels.miou,
                "label 255 share": labels.ignored_fraction,
            }
        )

    with _stage(cfg, "segmenter"):
        from training.segmenter import SegmenterJob, train_evaluate_export

        seg_job = SegmenterJob(
            data=data,
            labels=str(out / "pseudo" / cfg.methods[0]),
            out=out / "runs" / "segmenter",
            val_split=None,
            train=TrainConfig(epochs=cfg.segmenter_epochs, batch_size=8, lr=2e-3, seed=cfg.seed),
        )
        results["segmenter"] = train_evaluate_export(seg_job, device, repo=out / "model_repository", name="segmenter")
    with _stage(cfg, "report"):
        report = _write_report(cfg, dataset, rows, results)
    summary = {
        "report": str(report),
        "timings_s": cfg.timings,
        "total_s": round(sum(cfg.timings.values()), 1),
        "methods": {r["method"]: {k: v for k, v in r.items() if k != "method"} for r in rows},
        "segmenter_val_miou": results["segmenter"]["eval"]["miou"],
        "model_repository": str(out / "model_repository"),
    }
    atomic_write_json(out / "summary.json", summary)
    return summary


def _write_report(cfg: DemoConfig, dataset: VOCDataset, rows: list[dict], results: dict) -> Path:
    out = Path(cfg.out)
    figures = out / "figures"
    ids = _example_ids(out, cfg, dataset)
    grid = []
    for i in ids:
        image, gt = dataset.image(i), dataset.require_mask(i)
        row = [image, colorize_label(gt)]
        for name in cfg.methods:
            maps, _ = load_maps(maps_folder(out / "pseudo" / name) / f"{i}.npz")
            row.append(heatmap_overlay(image, maps.max(axis=0)))
        row.append(colorize_label(read_label_png(out / "pseudo" / cfg.methods[0] / "labels" / f"{i}.png")))
        grid.append(row)
    captions = ["image", "ground truth", *cfg.methods, f"{cfg.methods[0]} label+CRF"]
    atomic_save_png(figures / "methods.png", tile(grid, captions))
    budget = [{"stage": k, "seconds": v, "budget s": STAGE_BUDGET_S.get(k)} for k, v in cfg.timings.items()]
    sections = [
        Section(
            "Methods against ground truth",
            f"Synthetic benchmark (seed {cfg.seed}), first {cfg.eval_images} train images, classifier trained "
            f"{cfg.epochs} epochs ({cfg.arch}, {_init_words(cfg)}) on image-level labels only. Seed mIoU is the "
            "best over a background-"
            "threshold sweep (diagnostic); labels use fixed thresholds 0.30/0.05 and the dense CRF.",
            tables=[rows],
        ),
        Section("Pictures", images=[(figures / "methods.png", "image | ground truth | maps | pseudo label")]),
        Section(
            "Segmenter on pseudo labels",
            f"LR-ASPP MobileNetV3 trained {cfg.segmenter_epochs} epochs from scratch on the {cfg.methods[0]}+CRF pseudo "
            f"labels of those {cfg.eval_images} images, evaluated on the val split, exported to a Triton model "
            f"repository at `{out / 'model_repository'}` (ONNX, parity-checked). A demo-sized run: "
            "`benchmarks/segmenter_ratio.py` trains properly and reports the weak/full ratio.",
            tables=[
                [
                    {
                        "val mIoU": results["segmenter"]["eval"]["miou"],
                        "pixel acc": results["segmenter"]["eval"]["pixel_acc"],
                        "train s": results["segmenter"]["train_seconds"],
                    }
                ]
            ],
        ),
        Section("Stage timings", tables=[budget]),
    ]
    atomic_write_json(out / "results.json", results)
    return write_report(out / "report.md", "weakseg demo", sections)


def _init_words(cfg: DemoConfig) -> str:
    """How the demo's classifier was initialised, for the report."""
    return "from scratch" if cfg.pretrained is None else f"initialised from {cfg.pretrained}"


def _example_ids(out: Path, cfg: DemoConfig, dataset: VOCDataset, n: int = 6) -> list[str]:
    folder = maps_folder(out / "pseudo" / cfg.methods[0])
    return [i for i in dataset.ids if (folder / f"{i}.npz").exists()][:n]

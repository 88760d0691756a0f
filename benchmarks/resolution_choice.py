"""Pick the default image size / output stride: CPU cost per training image and CAM seed quality.

Both candidates give 16x16 CAM cells: 128 px at output stride 8, or 256 px at output stride 16.
For each: generate the benchmark at that size, train a ResNet-18 CAM classifier for each epoch count in
--epochs (quality; on --device), compute single-scale+flip CAM seeds on the first --eval-images train
images and report the best-threshold seed mIoU; separately time one training step per image on the
CPU with --threads threads (speed). Prints one JSON line per (size, epochs) and a summary.

    python benchmarks/resolution_choice.py --work /tmp/res --device auto
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from training.classifier import ClassifierJob, train_classifier
from weakseg.attribution import CAM, MultiScale, compute_maps
from weakseg.data.augment import to_tensor
from weakseg.data.synth import SynthConfig, generate
from weakseg.data.voc import VOCDataset
from weakseg.device import resolve_device
from weakseg.engine import TrainConfig
from weakseg.metrics.seeds import evaluate_seeds
from weakseg.models.classifier_io import load_classifier
from weakseg.models.resnet_cam import CAMClassifier, ClassifierConfig

CANDIDATES = ((128, 8), (256, 16))


def cpu_step_ms(size: int, stride: int, threads: int, batch: int = 16, reps: int = 3) -> float:
    """Milliseconds per image of one training step (forward+backward+SGD) on the CPU."""
    torch.set_num_threads(threads)
    model = CAMClassifier(ClassifierConfig(num_classes=8, output_stride=stride))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.rand(batch, 3, size, size), torch.zeros(batch, 8)
    best = float("inf")
    for _ in range(reps + 1):
        t0 = time.perf_counter()
        loss = torch.nn.functional.multilabel_soft_margin_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        best = min(best, time.perf_counter() - t0)
    return 1000 * best / batch


def seed_miou(run: Path, data: Path, n: int, device: torch.device) -> float:
    """Best-threshold CAM seed mIoU (scale 1.0 + flip) on the first n train images."""
    model, classes = load_classifier(run, device)
    ds = VOCDataset(data, "train")
    items = []
    for i in ds.ids[:n]:
        maps = compute_maps(CAM(), model, to_tensor(ds.image(i)).to(device), [c - 1 for c in ds.label_ids(i)],
                            MultiScale(scales=(1.0,), flip=True))
        items.append((maps.cpu().numpy(), ds.label_ids(i), ds.mask(i)))
    return evaluate_seeds(((m, torch.tensor(c).numpy(), g) for m, c, g in items), classes).miou


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, required=True, help="scratch folder (datasets and runs are reused)")
    p.add_argument("--epochs", type=int, nargs="+", default=[3, 6, 10], help="epoch counts to train")
    p.add_argument("--eval-images", type=int, default=100, help="train images for the seed mIoU")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for the speed figure")
    p.add_argument("--device", default="auto", help="device for training and maps")
    p.add_argument("--speed-only", action="store_true", help="only the CPU cost per training image")
    args = p.parse_args()
    if args.speed_only:
        for size, stride in CANDIDATES:
            print(json.dumps({"size": size, "output_stride": stride, "threads": args.threads,
                              "cpu_train_ms_per_image": round(cpu_step_ms(size, stride, args.threads), 1)}))
        return
    device = resolve_device(args.device)
    rows = []
    for size, stride in CANDIDATES:
        data = args.work / f"data{size}"
        if not (data / "synth.json").exists():
            generate(SynthConfig(size=size), data, progress=False, workers=2)
        ms = cpu_step_ms(size, stride, args.threads)
        for epochs in args.epochs:
            run = args.work / f"run{size}_os{stride}_e{epochs}"
            train_classifier(ClassifierJob(data=data, out=run, output_stride=stride, crop=size,
                                           train=TrainConfig(epochs=epochs)), device, progress=False)
            row = {"size": size, "output_stride": stride, "epochs": epochs, "cpu_train_ms_per_image": round(ms, 1),
                   "cpu_train_minutes_600_images": round(ms * 600 * epochs / 60000, 1),
                   "cam_seed_miou": round(seed_miou(run, data, args.eval_images, device), 4)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(json.dumps({"summary": rows}))


if __name__ == "__main__":
    main()

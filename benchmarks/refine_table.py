"""Tables 3.1 / 4.2 style (issue 15): seed, seed + CRF, IRN mask and PAR mask mIoU per attribution method.

For each row (CAM, AdvCAM, RIB with the classifier --model; W-OoD = CAM with the W-OoD classifier --wood-model)
on the same --images ids of the split (drawn once with --subset-seed, the list attribution_table.py uses):

1. seeds: `weakseg pseudo --method M --split <out>/ids.txt --out <out>/<row>/seeds --workers 0` (cached per
   image; a changed setting is refused by the folder's manifest: use another --out);
2. seed mIoU at the best background threshold and seed + CRF (the dense CRF over thresholds near the best one),
   as `weakseg eval seeds [--crf]`;
3. IRN mask: `weakseg refine irn --maps <row>/seeds --irn IRN` and PAR mask: `weakseg refine par` (cached per
   image), both scored as `weakseg eval labels` (mIoU of the refined labels; they leave no pixel 255).

The IRN. The authors train one IRN per method, from that method's seeds (CAM's for IRN, AdvCAM's for AdvCAM, ...);
to fit a CPU this script trains one, once, from the CAM seeds of the --irn-split split (default train: the
authors' practice of refining the training set with an IRN trained on it) and uses it for every row, so the rows
other than CAM understate what a per-method IRN would give. Pass --irn RUN to use another one; without it the IRN
is trained into <out>/irn (`weakseg pseudo --method cam` over the split into <out>/irn_seeds, then `weakseg train
irn`; both resume). Every stage runs through the `weakseg` command line in this process, so a run can stop
anywhere and continue; evaluations are cached per set of images.

Full table (hours of CPU; resumable across sessions):

    python benchmarks/refine_table.py --data BENCH/VOC2012 --model runs/cam --wood-model runs/wood \\
        --out bench/refine --images 100 --threads 2 --tag scratch

Quick end-to-end check:

    python benchmarks/refine_table.py --data BENCH/VOC2012 --model runs/cam --out /tmp/refine_check --images 8 \\
        --rows cam --scales 1.0 --irn-images 16 --irn-epochs 1 --results /tmp/refine_check/table.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.attribution_common import fixed_subset, markdown
from cli.main import main as weakseg
from weakseg.attribution import MultiScale
from weakseg.data.voc import VOCDataset
from weakseg.device import set_threads
from weakseg.io import atomic_write_json, atomic_write_text
from weakseg.metrics.seeds import evaluate_labels
from weakseg.refine.crf import CRFConfig
from weakseg.report.seed_eval import evaluate_seed_folder

ROWS = ("cam", "advcam", "rib", "wood")
RESULTS = Path(__file__).resolve().parent / "results"


def run_weakseg(argv: list[str]) -> None:
    """Run one `weakseg` command in this process (its stdout kept quiet); SystemExit naming it when it fails."""
    with contextlib.redirect_stdout(io.StringIO()):
        rc = weakseg(argv)
    if rc != 0:
        raise SystemExit(f"`weakseg {' '.join(argv)}` exited with status {rc}")


def row_arguments(row: str, args: argparse.Namespace) -> list[str] | None:
    """The `weakseg pseudo` method and model arguments of a row (None: the row cannot run, e.g. no --wood-model)."""
    if row == "wood":
        return None if args.wood_model is None else ["--method", "cam", "--model", str(args.wood_model)]
    extra = {
        "cam": [],
        "advcam": [] if args.advcam_steps is None else ["--advcam-steps", str(args.advcam_steps)],
        "rib": ["--rib-data", str(args.rib_data or args.data), "--rib-split", args.split]
        + ([] if args.rib_steps is None else ["--rib-steps", str(args.rib_steps)])
        + ([] if args.rib_batch is None else ["--rib-batch", str(args.rib_batch)]),
    }[row]
    return ["--method", row, "--model", str(args.model), *extra]


def common_arguments(args: argparse.Namespace) -> list[str]:
    """Execution arguments every stage shares (in this process, quiet, the device and thread count)."""
    threads = [] if args.threads is None else ["--threads", str(args.threads)]
    return ["--device", args.device, "--quiet", *threads]


def seed_arguments(args: argparse.Namespace) -> list[str]:
    """The multi-scale arguments of `weakseg pseudo`."""
    return ["--scales", *map(str, args.scales), *(["--no-flip"] if args.no_flip else []), "--workers", "0"]


def ensure_irn(args: argparse.Namespace) -> Path:
    """--irn, or <out>/irn trained (once, resumably) from the CAM seeds of --irn-split."""
    if args.irn is not None:
        return args.irn
    run = args.out / "irn"
    seeds = args.out / "irn_seeds"
    limit = [] if args.irn_images is None else ["--limit", str(args.irn_images)]
    print(f"irn: CAM seeds of {args.irn_split} -> {seeds}, IRN -> {run}")
    run_weakseg(["pseudo", "--method", "cam", "--model", str(args.model), "--data", str(args.data), "--split",
                 args.irn_split, "--out", str(seeds), *limit, *seed_arguments(args), *common_arguments(args)])
    gaps = [] if args.irn_images is None else ["--skip-missing"]
    run_weakseg(["train", "irn", "--maps", str(seeds), "--data", str(args.data), "--out", str(run), "--epochs",
                 str(args.irn_epochs), *gaps, *common_arguments(args)])
    return run


def cached(path: Path, key: dict[str, Any], compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """compute(), cached as JSON in `path` under `key` (recomputed when the key, e.g. the scored ids, changes)."""
    if path.is_file():
        record = json.loads(path.read_text())
        if record.get("key") == key:
            return record["value"]
    value = compute()
    atomic_write_json(path, {"key": key, "value": value})
    return value


def done(folder: Path) -> list[str]:
    """The ids with a label PNG in a label folder."""
    return sorted(p.stem for p in (folder / "labels").glob("*.png"))


def seed_scores(dataset: VOCDataset, seeds: Path, crf: bool) -> dict[str, Any]:
    """`weakseg eval seeds` of a seeds folder: best-threshold mIoU, and with --crf the CRF-refined one."""
    evaluation = evaluate_seed_folder(dataset, seeds / "maps", CRFConfig() if crf else None)
    report = evaluation.crf if crf and evaluation.crf is not None else evaluation.plain
    return {"miou": report.miou, "threshold": float(report.threshold), "images": len(evaluation.ids)}


def label_scores(dataset: VOCDataset, folder: Path) -> dict[str, Any]:
    """`weakseg eval labels` of a label folder: mIoU, and the fraction left 255."""
    ids = [i for i in dataset.ids if (folder / "labels" / f"{i}.png").is_file()]
    result = evaluate_labels(((dataset.require_mask(i), folder / "labels" / f"{i}.png") for i in ids), dataset.classes)
    return {"miou": result.miou, "ignored_fraction": result.ignored_fraction, "images": len(ids)}


def run_row(row: str, method_args: list[str], args: argparse.Namespace, ids_path: Path, irn: Path,
            dataset: VOCDataset) -> dict[str, Any]:
    """Seeds, refined masks and their scores for one row."""
    folder = args.out / row
    seeds, irn_out, par_out = folder / "seeds", folder / "irn", folder / "par"
    common = common_arguments(args)
    run_weakseg(["pseudo", *method_args, "--data", str(args.data), "--split", str(ids_path), "--out", str(seeds),
                 *seed_arguments(args), *common])
    bg = str(args.bg_score)
    run_weakseg(["refine", "irn", "--maps", str(seeds), "--out", str(irn_out), "--irn", str(irn),
                 "--irn-bg-thresh", bg, *common])
    run_weakseg(["refine", "par", "--maps", str(seeds), "--out", str(par_out), "--par-bg-score", bg, *common])
    key = {"ids": done(seeds)}
    seed = cached(folder / "eval_seed.json", key, lambda: seed_scores(dataset, seeds, crf=False))
    crf = None if args.no_crf else cached(folder / "eval_seed_crf.json", key,
                                          lambda: seed_scores(dataset, seeds, crf=True))
    irn_mask = cached(folder / "eval_irn.json", {"ids": done(irn_out)}, lambda: label_scores(dataset, irn_out))
    par_mask = cached(folder / "eval_par.json", {"ids": done(par_out)}, lambda: label_scores(dataset, par_out))
    return {
        "method": row,
        "seed": 100 * seed["miou"],
        "seed_thr": seed["threshold"],
        **({"seed+CRF": 100 * crf["miou"], "seed+CRF_thr": crf["threshold"]} if crf else {}),
        "IRN mask": 100 * irn_mask["miou"],
        "PAR mask": 100 * par_mask["miou"],
        "images": seed["images"],
        "folders": {"seeds": str(seeds), "irn": str(irn_out), "par": str(par_out)},
    }


def main(argv: list[str] | None = None) -> int:
    """Run (or resume) every requested row, print the table and write the JSON."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="benchmark VOC2012 folder")
    p.add_argument("--model", type=Path, required=True, help="CAM classifier run (1x1 head) for cam, advcam, rib")
    p.add_argument("--wood-model", type=Path, default=None, help="W-OoD classifier run (wood row; skipped without)")
    p.add_argument("--rib-data", type=Path, default=None, help="training set RIB draws companions from (default --data)")
    p.add_argument("--irn", type=Path, default=None, help="IRN run to refine with [default: <out>/irn, trained "
                   "once from the CAM seeds of --irn-split]")
    p.add_argument("--irn-split", default="train", help="split the IRN is trained on")
    p.add_argument("--irn-images", type=int, default=None, help="only the first N images of --irn-split for the IRN "
                   "(quick checks)")
    p.add_argument("--irn-epochs", type=int, default=3, help="IRN training epochs (the authors' 3)")
    p.add_argument("--bg-score", type=float, default=0.25,
                   help="background plane of the IRN and PAR masks (the authors' 0.25; maps whose background "
                        "stays high, as a pretrained network's, need a higher one)")
    p.add_argument("--split", default="train", help="split the subset is drawn from")
    p.add_argument("--images", type=int, default=100, help="size of the fixed image subset")
    p.add_argument("--subset-seed", type=int, default=0, help="seed of the subset draw")
    p.add_argument("--out", type=Path, required=True, help="cache folder (resumable)")
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS, help="rows to run")
    p.add_argument("--scales", type=float, nargs="+", default=list(MultiScale().scales), help="inference scales")
    p.add_argument("--no-flip", action="store_true", help="no flipped inference")
    p.add_argument("--no-crf", action="store_true", help="skip the (slower) seed + CRF column")
    p.add_argument("--advcam-steps", type=int, default=None, help="override T (quick checks)")
    p.add_argument("--rib-steps", type=int, default=None, help="override K (quick checks)")
    p.add_argument("--rib-batch", type=int, default=None, help="override B (quick checks)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="compute device")
    p.add_argument("--tag", default="", help="suffix of the results file (e.g. scratch, imagenet)")
    p.add_argument("--results", type=Path, default=None,
                   help="results JSON [default: benchmarks/results/refine_table[_TAG].json]")
    args = p.parse_args(argv)

    set_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    ids_path = fixed_subset(args.data, args.split, args.images, args.subset_seed, args.out).resolve()
    dataset = VOCDataset(args.data, ids_path, labels="auto")
    irn = ensure_irn(args)
    results = []
    for row in args.rows:
        method_args = row_arguments(row, args)
        if method_args is None:
            print(f"{row}: skipped (no --wood-model)")
            continue
        print(f"{row}: {args.out / row}")
        result = run_row(row, method_args, args, ids_path, irn, dataset)
        results.append(result)
        print(json.dumps(result))
    columns = ["method", "seed", "seed_thr"] + ([] if args.no_crf else ["seed+CRF"]) + ["IRN mask", "PAR mask",
                                                                                         "images"]
    header = (f"{len(dataset.ids)} images of {args.data} ({args.split}, subset seed {args.subset_seed}), scales "
              f"{list(args.scales)}{'' if args.no_flip else ' + flip'}, device {args.device}, threads "
              f"{torch.get_num_threads()}. Seed: mIoU at the best background threshold (seed_thr); seed+CRF: the "
              "dense CRF over thresholds near it; IRN / PAR mask: mIoU of `weakseg refine irn|par` labels, background "
              f"plane {args.bg_score} (IRN "
              f"{irn}: one IRN trained once from the CAM seeds of {args.irn_split!r} for every row; the authors "
              "retrain it per method from that method's seeds).")
    table = markdown(results, columns)
    atomic_write_text(args.out / "table.md", header + "\n\n" + table + "\n")
    results_path = args.results or RESULTS / f"refine_table{'_' + args.tag if args.tag else ''}.json"
    atomic_write_json(results_path, {"header": header, "irn": str(irn), "irn_split": args.irn_split,
                                     "irn_trained_here": args.irn is None, "bg_score": args.bg_score, "rows": results,
                                     "command": " ".join(sys.argv)})
    print(header)
    print(table)
    print(f"results: {results_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

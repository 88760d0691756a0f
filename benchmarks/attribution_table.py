"""The main table of issue 3: seed quality of every class-label attribution method on one fixed image subset.

For each row (CAM, Grad-CAM, FickleNet, AdvCAM (its default: the restricting term in the logit's units), AdvCAM
without regularisation, AdvCAM with Eq. 3.6's restricting term as printed (restrict_scale="max"), AdvCAM --variant
code, RIB with
GAP, RIB with GNDRP, RIB+AdvCAM) it computes maps for the same --images ids of the split (drawn once with
--subset-seed), caching every image, then reports the seed mIoU at the best background threshold, precision,
recall and F1 (foreground means), before and after the dense CRF, with seconds and backbone forward/backward
passes per image. Re-running resumes; a changed setting gets its own cache folder. Rows use the methods'
defaults (the dissertation's values) unless an override flag is given (for quick checks).

Full table (hours of CPU; resumable across sessions):

    python benchmarks/attribution_table.py --data BENCH/VOC2012 --model runs/cam --fickle-model runs/fickle \\
        --out bench/attribution --images 100 --threads 2

Quick end-to-end check:

    python benchmarks/attribution_table.py ... --images 4 --advcam-steps 2 --rib-steps 2 --fickle-samples 8
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.attribution_common import (cost_summary, evaluate_cached, fixed_subset, markdown,  # noqa: E402
                                           model_identity, run_cached, short_hash)
from weakseg.attribution import CAM, RIB, AdvCAM, FickleNet, GradCAM, MultiScale, RIBAdvCAM  # noqa: E402
from weakseg.data.voc import VOCDataset  # noqa: E402
from weakseg.device import resolve_device, set_threads  # noqa: E402
from weakseg.io import atomic_write_json, atomic_write_text  # noqa: E402
from weakseg.models.classifier_io import load_classifier  # noqa: E402

ROWS = ("cam", "gradcam", "fickle", "advcam", "advcam-noreg", "advcam-max", "advcam-code", "rib-gap", "rib-gndrp",
        "rib+advcam")


def build_rows(args: argparse.Namespace) -> dict[str, object]:
    """The methods of the table, with the override flags applied."""
    adv = {} if args.advcam_steps is None else {"steps": args.advcam_steps}
    rib = {"data": str(args.rib_data or args.data), "split": args.split}
    if args.rib_steps is not None:
        rib["steps"] = args.rib_steps
    if args.rib_batch is not None:
        rib["batch"] = args.rib_batch
    fickle = {} if args.fickle_samples is None else {"samples": args.fickle_samples}
    return {
        "cam": CAM(),
        "gradcam": GradCAM(),
        "fickle": FickleNet(**fickle),
        "advcam": AdvCAM(**adv),
        "advcam-noreg": AdvCAM(**adv, suppress_others=False, restrict=False),
        "advcam-max": AdvCAM(**adv, restrict_scale="max"),  # Eq. 3.6's restricting term as printed
        "advcam-code": AdvCAM(**adv, variant="code"),
        "rib-gap": RIB(**rib, pooling="gap"),
        "rib-gndrp": RIB(**rib),
        "rib+advcam": RIBAdvCAM(**{f"rib_{k}": v for k, v in rib.items()}, **{f"advcam_{k}": v for k, v in adv.items()}),
    }


def main(argv: list[str] | None = None) -> int:
    """Run (or resume) every requested row and print the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="benchmark VOC2012 folder")
    p.add_argument("--model", type=Path, required=True, help="CAM classifier run (1x1 head) for every row but fickle")
    p.add_argument("--fickle-model", type=Path, default=None, help="classifier trained with --head fickle (fickle row; skipped without)")
    p.add_argument("--rib-data", type=Path, default=None, help="training set RIB draws companions from (default --data)")
    p.add_argument("--split", default="train", help="split the subset is drawn from (and RIB's companions)")
    p.add_argument("--images", type=int, default=100, help="size of the fixed image subset")
    p.add_argument("--subset-seed", type=int, default=0, help="seed of the subset draw")
    p.add_argument("--out", type=Path, required=True, help="cache and report folder (resumable)")
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS, help="rows to run")
    p.add_argument("--scales", type=float, nargs="+", default=list(MultiScale().scales), help="inference scales")
    p.add_argument("--no-flip", action="store_true", help="no flipped inference")
    p.add_argument("--no-crf", action="store_true", help="skip the (slower) seed + CRF columns")
    p.add_argument("--advcam-steps", type=int, default=None, help="override T (quick checks)")
    p.add_argument("--rib-steps", type=int, default=None, help="override K (quick checks)")
    p.add_argument("--rib-batch", type=int, default=None, help="override B (quick checks)")
    p.add_argument("--fickle-samples", type=int, default=None, help="override FickleNet's sample count (quick checks)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    args = p.parse_args(argv)

    set_threads(args.threads)
    device = resolve_device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    ids_path = fixed_subset(args.data, args.split, args.images, args.subset_seed, args.out)
    dataset = VOCDataset(args.data, ids_path, labels="auto")
    multiscale = MultiScale(scales=tuple(args.scales), flip=not args.no_flip)
    methods = build_rows(args)
    models = {"cam": args.model, "fickle": args.fickle_model}
    loaded: dict[str, object] = {}
    results = []
    for row in args.rows:
        which = "fickle" if row == "fickle" else "cam"
        if models[which] is None:
            print(f"{row}: skipped (no --fickle-model)")
            continue
        if which not in loaded:
            loaded[which] = load_classifier(models[which], device)[0]
        method = methods[row]
        record = {"row": row, "method": method.config(), "model_sha256": model_identity(models[which]),
                  "multiscale": {"scales": list(multiscale.scales), "flip": multiscale.flip},
                  "ids": ids_path.read_text().split(), "device": device.type}
        folder = args.out / f"{row}-{short_hash({k: v for k, v in record.items() if k != 'device'})}"
        print(f"{row}: {folder}")
        run_cached(method, loaded[which], dataset, dataset.ids, multiscale, folder, device, record)
        plain = evaluate_cached(dataset, folder, crf=False)
        crf = None if args.no_crf else evaluate_cached(dataset, folder, crf=True).crf
        result = {"method": row, "mIoU": 100 * plain.plain.miou, "thr": plain.plain.threshold,
                  "P": 100 * plain.plain.precision, "R": 100 * plain.plain.recall, "F1": 100 * plain.plain.f1,
                  **({"mIoU+CRF": 100 * crf.miou, "thr+CRF": crf.threshold, "P+CRF": 100 * crf.precision,
                      "R+CRF": 100 * crf.recall, "F1+CRF": 100 * crf.f1} if crf else {}),
                  **{k: v for k, v in cost_summary(folder).items()}}
        results.append(result)
        print(json.dumps(result))
    columns = ["method", "mIoU", "thr", "P", "R", "F1"] + ([] if args.no_crf else ["mIoU+CRF", "P+CRF", "R+CRF", "F1+CRF"]) \
        + ["seconds_per_image", "forwards_per_image", "backwards_per_image", "images"]
    table = markdown(results, columns)
    header = (f"{len(dataset.ids)} images of {args.data} ({args.split}, subset seed {args.subset_seed}), scales "
              f"{list(multiscale.scales)}{' + flip' if multiscale.flip else ''}, device {device.type}, "
              f"threads {torch.get_num_threads()}; seed mIoU at the best background threshold, P/R/F1 = foreground means.")
    atomic_write_text(args.out / "table.md", header + "\n\n" + table + "\n")
    atomic_write_json(args.out / "table.json", {"header": header, "rows": results})
    print(header)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

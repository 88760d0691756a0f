"""The curves of issue 3, in the style of the dissertation's Fig. 3.7 and Fig. 3.15, on a small fixed subset at
scale 1.0 with flips:

(a) seed mIoU against T, with and without regularisation, and (b) the proportion of noise (pixels called
foreground that are background, at each T's best threshold) against T, both read from the intermediate maps of
ONE AdvCAM run per setting (the maps of every step are cached per image); (c)-(e) seed mIoU against lambda, tau
and xi (one AdvCAM run per value, T at its default); Fig. 3.15: seed mIoU against K for RIB with GAP and with
GNDRP, read from the CAMs of every adapted model of one run each.

Every image's result is cached; re-running resumes. Writes curves.json, fig_advcam.png and fig_rib_k.png.
--parts runs some of the curves (advcam-t: (a)/(b); rib-k: Fig. 3.15; sweeps: (c)-(e)), so that separate
processes can share the cores; each merges its curves into curves.json, and the figures show what is there.

    python benchmarks/attribution_curves.py --data BENCH/VOC2012 --model runs/cam --out bench/curves --images 30

Quick end-to-end check:

    python benchmarks/attribution_curves.py ... --images 4 --t-max 2 --k-max 2 --sweep-steps 2 --lams 0 7 --taus 0.5 --xis 0.008
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.attribution_common import (evaluate_cached, model_identity, open_subset, run_cached,  # noqa: E402
                                           short_hash)
from weakseg.attribution import RIB, AdvCAM, AttributionMethod, MultiScale, compute_maps  # noqa: E402
from weakseg.attribution.keys import scale_of  # noqa: E402
from weakseg.data.augment import to_tensor  # noqa: E402
from weakseg.data.voc import VOCDataset  # noqa: E402
from weakseg.io import atomic_save_npz, atomic_write_json  # noqa: E402
from weakseg.metrics.seeds import SeedReport, evaluate_seeds  # noqa: E402

VIEW = MultiScale(scales=(1.0,), flip=True)
PARTS = ("advcam-t", "rib-k", "sweeps")


@dataclass(frozen=True, eq=False)
class GivenMaps(AttributionMethod):
    """Returns precomputed raw maps per scale, so compute_maps aggregates partial sums exactly as for a live method."""

    raw: dict
    name = "given"

    def check_model(self, model):
        return model  # no model is used

    def scale_maps(self, model, x, classes, *, image_key=""):
        return self.raw[scale_of(image_key)]


def cache_trajectories(method, model, dataset: VOCDataset, folder: Path, device: torch.device, record: dict) -> None:
    """Cache trajectory_maps ([S, 2, K, h, w], scale 1.0 + flip) of every image of the subset."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / "config.json", record)
    for n, image_id in enumerate(dataset.ids):
        path = folder / f"{image_id}.npz"
        if path.exists():
            continue
        image = to_tensor(dataset.image(image_id)).to(device)
        classes = torch.tensor([c - 1 for c in dataset.label_ids(image_id)], device=device)
        x = torch.stack([image, image.flip(-1)])
        traj = method.trajectory_maps(model, x, classes, image_key=f"{image_id}@1.0")
        atomic_save_npz(path, traj=traj.float().cpu().numpy())
        print(f"  {folder.name}: {n + 1}/{len(dataset.ids)} {image_id}")


def prefix_reports(dataset: VOCDataset, folder: Path) -> list[SeedReport]:
    """Seed reports of the maps summed over steps 0..t, for every t of the cached trajectories."""
    trajs = {i: torch.from_numpy(np.load(folder / f"{i}.npz")["traj"]) for i in dataset.ids}
    steps = min(t.shape[0] for t in trajs.values())
    reports = []
    for t in range(steps):
        def items():
            for i, traj in trajs.items():
                image = to_tensor(dataset.image(i))
                ids = dataset.label_ids(i)
                maps = compute_maps(GivenMaps({1.0: traj[:t + 1].sum(dim=0)}), None, image, [c - 1 for c in ids], VIEW,
                                    image_key=i)
                yield maps.numpy(), np.asarray(ids), dataset.mask(i)
        reports.append(evaluate_seeds(items(), dataset.classes))
    return reports


def noise(report: SeedReport) -> float:
    """Proportion of pixels predicted foreground whose ground truth is background (at the report's threshold)."""
    cm = report.confusion  # [gt, prediction]
    called = cm[:, 1:].sum()
    return float(cm[0, 1:].sum() / called) if called else float("nan")


def main(argv: list[str] | None = None) -> int:
    """Run or resume every curve, write curves.json and the two figures."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="benchmark VOC2012 folder")
    p.add_argument("--model", type=Path, required=True, help="CAM classifier run")
    p.add_argument("--rib-data", type=Path, default=None, help="training set of RIB's companions (default --data)")
    p.add_argument("--split", default="train")
    p.add_argument("--images", type=int, default=30, help="size of the curve subset")
    p.add_argument("--subset-seed", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--t-max", type=int, default=30, help="longest AdvCAM trajectory of curves (a)/(b)")
    p.add_argument("--k-max", type=int, default=10, help="RIB iterations of the K curve")
    p.add_argument("--rib-batch", type=int, default=None, help="override B (quick checks)")
    p.add_argument("--sweep-steps", type=int, default=None, help="T of the lambda/tau/xi sweeps (default: AdvCAM's)")
    p.add_argument("--lams", type=float, nargs="+", default=[0.0, 1.0, 3.0, 5.0, 7.0, 10.0])
    p.add_argument("--taus", type=float, nargs="+", default=[0.3, 0.4, 0.5, 0.6, 0.7])
    p.add_argument("--xis", type=float, nargs="+", default=[0.002, 0.004, 0.008, 0.016, 0.032])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS, help="curves to run (default all)")
    args = p.parse_args(argv)

    dataset, ids_path, model, device = open_subset(args, "curve_ids")
    base = {"model_sha256": model_identity(args.model), "ids": ids_path.read_text().split(), "view": "1.0+flip"}
    previous = args.out / "curves.json"
    result: dict = json.loads(previous.read_text()) if previous.exists() else {}
    if result.get("ids") != base["ids"] or result.get("model_sha256") != base["model_sha256"]:
        result = {}  # curves of another subset or model are not merged
    result.update({"images": len(dataset.ids), "view": "scale 1.0 + flip", "ids": base["ids"],
                   "model_sha256": base["model_sha256"]})

    def trajectory_curve(label: str, method) -> list[SeedReport]:
        record = {**base, "method": method.config(), "kind": "trajectory"}
        folder = args.out / f"{label}-{short_hash(record)}"
        print(f"{label}: {folder}")
        cache_trajectories(method, model, dataset, folder, device, record)
        return prefix_reports(dataset, folder)

    advcam_t = (("advcam-reg", AdvCAM(steps=args.t_max)),
                ("advcam-noreg", AdvCAM(steps=args.t_max, suppress_others=False, restrict=False)))
    for label, method in advcam_t if "advcam-t" in args.parts else ():
        reports = trajectory_curve(label, method)
        result[label] = {"T": list(range(len(reports))), "miou": [100 * r.miou for r in reports],
                         "noise": [100 * noise(r) for r in reports], "threshold": [r.threshold for r in reports]}
    rib_common = {"data": str(args.rib_data or args.data), "split": args.split, "steps": args.k_max}
    if args.rib_batch is not None:
        rib_common["batch"] = args.rib_batch
    for label, pooling in (("rib-gap", "gap"), ("rib-gndrp", "gndrp")) if "rib-k" in args.parts else ():
        reports = trajectory_curve(label, RIB(**rib_common, pooling=pooling))
        result[label] = {"K": list(range(len(reports))), "miou": [100 * r.miou for r in reports]}

    sweep_base = {} if args.sweep_steps is None else {"steps": args.sweep_steps}
    sweeps = (("lam", args.lams), ("tau", args.taus), ("xi", args.xis)) if "sweeps" in args.parts else ()
    for name, values in sweeps:
        curve = []
        for v in values:
            method = AdvCAM(**sweep_base, **{name: v})
            record = {**base, "method": method.config(), "kind": "maps"}
            folder = args.out / f"sweep-{short_hash(record)}"  # equal settings (the defaults) share one cache
            print(f"{name}={v:g}: {folder}")
            run_cached(method, model, dataset, dataset.ids, VIEW, folder, device, record)
            curve.append(100 * evaluate_cached(dataset, folder, crf=False).plain.miou)
        result[f"sweep-{name}"] = {"values": list(values), "miou": curve}
    atomic_write_json(args.out / "curves.json", result)
    plot(result, args.out)
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, (dict, list))}))
    for k, v in result.items():
        if isinstance(v, dict):
            print(k, {kk: [round(x, 2) if isinstance(x, float) and kk != "values" else x for x in vv] for kk, vv in v.items()})
    return 0


def plot(result: dict, out: Path) -> None:
    """fig_advcam.png (Fig. 3.7 a-e) and fig_rib_k.png (Fig. 3.15)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 5, figsize=(22, 4))
    for label, style in (("advcam-reg", "o-"), ("advcam-noreg", "s--")):
        if label not in result:
            continue
        curve = result[label]
        ax[0].plot(curve["T"], curve["miou"], style, label=label.replace("advcam-", ""))
        ax[1].plot(curve["T"], curve["noise"], style, label=label.replace("advcam-", ""))
    ax[0].set(title="(a) seed mIoU vs T", xlabel="T (adversarial steps)", ylabel="seed mIoU (%)")
    ax[1].set(title="(b) noise vs T", xlabel="T", ylabel="fg pixels that are bg (%)")
    for a, (name, title) in zip(ax[2:], (("lam", "(c) lambda"), ("tau", "(d) tau"), ("xi", "(e) xi"))):
        sweep = result.get(f"sweep-{name}", {"values": [], "miou": []})
        a.plot(sweep["values"], sweep["miou"], "o-")
        a.set(title=f"{title}", xlabel=name, ylabel="seed mIoU (%)")
        if name == "xi":
            a.set_xscale("log")
    for a in ax[:2]:
        a.legend()
    fig.tight_layout()
    fig.savefig(out / "fig_advcam.png", dpi=100)
    plt.close(fig)
    if "rib-gap" not in result or "rib-gndrp" not in result:
        return
    fig, a = plt.subplots(figsize=(5, 4))
    for label, style in (("rib-gap", "s--"), ("rib-gndrp", "o-")):
        a.plot(result[label]["K"], result[label]["miou"], style, label=label.replace("rib-", "").upper())
    a.axhline(result["rib-gap"]["miou"][0], color="grey", lw=0.8, label="CAM (K=0)")
    a.set(title="RIB: seed mIoU vs K (Fig. 3.15)", xlabel="K (adaptation iterations)", ylabel="seed mIoU (%)")
    a.legend()
    fig.tight_layout()
    fig.savefig(out / "fig_rib_k.png", dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())

"""Issue 4's measured tables for W-OoD on the synthetic benchmark, every step cached and resumable.

Starting from one shared in-distribution classifier (--model), it mines the benchmark's OoD pool, reviews the
candidates with the oracle (truth.csv), fine-tunes W-OoD variants from that classifier for --epochs, computes
CAM / AdvCAM seeds on a fixed subset of --split and evaluates them (seed mIoU at the best threshold, P/R/F1):

  t41      Table 4.1 style: CAM and AdvCAM, without W-OoD (the shared classifier, and row (a): fine-tuned as long
           without OoD) and with W-OoD (row (f))
  t45      Table 4.5 loss ablation (a)-(f), mean and std over --seeds (CAM seeds)
  fig45a   Fig. 4.5(a): CAM seed mIoU against the number of hard OoD images (1 per class, then --counts, all),
           box plot over --repeats random subsets, written as fig45a.png
  t46      Table 4.6: no OoD vs random OoD vs random hard OoD (unreviewed) vs reviewed hard OoD, equal counts
  perclass Fig. 4.6 style: per-class CAM IoU gain of (f) over (a), beside each class's context correlation in
           the training split (share of its images shown on its preferred context)

Fine-tunes live in <out>/runs/<name>-<hash>/ (the engine resumes them), maps in <out>/maps/ (per image, see
attribution_common), OoD sets in <out>/sets/. Re-running skips everything done; a changed setting gets new
folders. Processes may share one --out (each entry is locked while it is computed; each part set writes its own
wood_table_<parts>.md/json), so the parts can run side by side. Quick check: --images 8 --epochs 1 --advcam-steps 2 --parts t41.

    python benchmarks/wood_table.py --data BENCH/VOC2012 --model runs/cam --out bench/wood --threads 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.attribution_common import (evaluate_cached, fixed_subset, markdown, model_identity,  # noqa: E402
                                           run_cached, short_hash)
from cli.common import parse_bool  # noqa: E402
from training.classifier import ClassifierJob  # noqa: E402
from training.ood_review import oracle_review  # noqa: E402
from training.wood import WoodJob, train_wood  # noqa: E402
from weakseg.attribution import CAM, AdvCAM, MultiScale  # noqa: E402
from weakseg.data.voc import VOCDataset  # noqa: E402
from weakseg.device import resolve_device, set_threads  # noqa: E402
from weakseg.engine import TrainConfig  # noqa: E402
from weakseg.io import atomic_write_json, atomic_write_text, exclusive_lock  # noqa: E402
from weakseg.models.checkpoint import WEIGHTS_NAME  # noqa: E402
from weakseg.models.classifier_io import load_classifier  # noqa: E402
from weakseg.ood.decisions import ReviewLog  # noqa: E402
from weakseg.ood.losses import DEFAULT_VARIANT, TEXT_TRAINING, WOOD_VARIANTS, WoodLossConfig, variant_training  # noqa: E402
from weakseg.ood.mining import MINE_NAME, read_mining, score_pool, write_mining  # noqa: E402
from weakseg.ood.pool import open_pool, read_truth, write_path_list  # noqa: E402

PARTS = ("t41", "t45", "fig45a", "t46", "perclass")
# Table 4.5: (L_cls on D_ood, L_d on D_in = pull to class centres, L_d on D_ood = push from OoD clusters)
ABLATION = {"a": (False, False, False), "b": (True, False, False), "c": (False, True, True),
            "d": (True, True, False), "e": (True, False, True), "f": (True, True, True)}


def base_loss(args: argparse.Namespace) -> WoodLossConfig:
    """Row (f)'s loss: the authors' code or the text's defaults (--wood-variant), then --wood KEY=VALUE overrides."""
    cfg = WoodLossConfig.variant(args.wood_variant)
    fields = {f.name: f.type for f in dataclasses.fields(WoodLossConfig)}
    for item in args.wood:
        key, _, value = item.partition("=")
        if key not in fields or not value:
            raise SystemExit(f"--wood {item!r}: expected KEY=VALUE with KEY one of {', '.join(fields)}")
        cast = {"float": float, "int": int, "bool": parse_bool, "str": str}[fields[key]]
        try:
            cfg = dataclasses.replace(cfg, **{key: cast(value)})
        except (ValueError, argparse.ArgumentTypeError) as e:
            raise SystemExit(f"--wood {item!r}: {e}") from e
    return cfg.validate()


def loss_for(row: str, base: WoodLossConfig) -> WoodLossConfig:
    """The loss configuration of ablation row (a)-(f) on top of row (f)'s `base`.

    Row (a) has neither OoD term, so it is the same run whatever the variant (one cached run serves all)."""
    cls_ood, pull, push = ABLATION[row]
    if not (cls_ood or pull or push):
        return WoodLossConfig.text(ood_weight=0.0, pull=False, push=False)  # the text's fields: cached runs keep their names
    return dataclasses.replace(base, ood_weight=base.ood_weight if cls_ood else 0.0, pull=pull, push=push)


def finetune_settings(loss: WoodLossConfig, variant_settings: dict) -> dict:
    """The WoodJob settings of a fine-tune: the variant's, or the text's for row (a), where they do nothing."""
    plain = not (loss.ood_weight or loss.pull or loss.push)
    return variant_training("text") if plain else dict(variant_settings)


def finetune_record(a: argparse.Namespace, name: str, base_sha: str, ood_text: str, loss: WoodLossConfig, seed: int,
                    settings: dict) -> dict:
    """What names a cached fine-tune (its folder is <name>-<short_hash(record)>).

    The job settings appear only where they differ from the text's (WoodJob's defaults when these runs were
    first cached), so a cached run keeps its folder whatever the library's defaults are."""
    extra = {k: v for k, v in settings.items() if v != TEXT_TRAINING[k]}
    return {"name": name, "base": base_sha, "ood": ood_text, "loss": loss.to_dict(), "seed": seed, "epochs": a.epochs,
            "lr": a.lr, "batch": a.batch_size, "ood_batch": a.ood_batch_size, "crop": a.crop,
            **({"head_lr_mult": a.head_lr_mult} if a.head_lr_mult != 1.0 else {}),
            **({"job": extra} if extra else {})}


class Bench:
    """Shared state: the subset, the mined and reviewed candidates, and cached runs and evaluations."""

    def __init__(self, args: argparse.Namespace) -> None:
        set_threads(args.threads)
        self.args, self.device = args, resolve_device(args.device)
        args.out.mkdir(parents=True, exist_ok=True)
        # named by its draw, so parts with other --images (e.g. a costly AdvCAM T=27 on fewer) share the fine-tunes
        self.ids_path = fixed_subset(args.data, args.split, args.images, args.subset_seed, args.out,
                                     name=f"ids-{args.split}-{args.images}-{args.subset_seed}")
        self.dataset = VOCDataset(args.data, self.ids_path, labels="auto")
        self.multiscale = MultiScale(scales=tuple(args.scales), flip=not args.no_flip)
        self.base_sha = model_identity(args.model)
        self.classes = load_classifier(args.model)[1]
        self.mine = self._mine_and_review()
        self.results: dict[str, dict] = {}
        self.base_loss = base_loss(args)
        self.job_settings = variant_training(args.wood_variant)

    def loss_for(self, row: str) -> WoodLossConfig:
        """Ablation row (a)-(f) of this run's loss variant."""
        return loss_for(row, self.base_loss)

    def _mine_and_review(self) -> Path:
        pool = open_pool(self.args.data / "OoD")
        folder = self.args.out / f"mine-{short_hash([self.base_sha, str(pool.root), self.args.threshold])}"
        with exclusive_lock(folder.with_name(folder.name + ".lock")):
            if not (folder / MINE_NAME).exists():
                model, classes = load_classifier(self.args.model, self.device)
                write_mining(folder, pool, classes, score_pool(model, pool, self.device), self.args.threshold,
                             {"model": str(self.args.model), "model_sha256": self.base_sha})
            log = ReviewLog(folder)
            if log.pending():
                oracle_review(log)
        print(json.dumps({"mining": str(folder), **log.summary().to_json()}))
        return folder

    def ood_set(self, name: str, images: list[Path]) -> Path:
        """Write (once) an OoD image list under <out>/sets/."""
        path = self.args.out / "sets" / f"{name}.txt"
        if not path.exists():
            write_path_list(path, images)  # atomic; concurrent writers write the same list
        return path

    def reviewed(self) -> list[Path]:
        """All hard OoD images kept by the review."""
        return ReviewLog(self.mine).kept_images()

    def finetune(self, name: str, ood: Path, loss: WoodLossConfig, seed: int) -> Path | None:
        """A W-OoD fine-tune of the shared classifier (resumes; skipped when finished; None when unfinished and
        --cached-only)."""
        a = self.args
        settings = finetune_settings(loss, self.job_settings)
        record = finetune_record(a, name, self.base_sha, ood.read_text(), loss, seed, settings)
        out = a.out / "runs" / f"{name}-{short_hash(record)}"
        run_json = out / "run.json"

        def finished() -> bool:
            return run_json.exists() and len(json.loads(run_json.read_text()).get("history", [])) >= a.epochs

        if a.cached_only:  # no lock: a run another process is training counts as unfinished
            return out if finished() else None
        with exclusive_lock(out.with_name(out.name + ".lock")):  # another process may be training this run
            if finished():
                return out
            print(f"fine-tune {name}: {out}", flush=True)
            job = ClassifierJob(data=a.data, out=out, split=a.train_split, val_split=None, crop=a.crop, init=a.model,
                                train=TrainConfig(epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, seed=seed,
                                                  head_lr_mult=a.head_lr_mult))
            train_wood(WoodJob(classifier=job, ood=ood, loss=loss, ood_batch_size=a.ood_batch_size, **settings), self.device,
                       progress=False)
        return out

    def seeds(self, run: Path, method: str) -> dict:
        """Seed evaluation of `method` maps from a classifier run on the subset (cached)."""
        key = f"{run}:{method}"
        if key in self.results:
            return self.results[key]
        a = self.args
        att = CAM() if method == "cam" else AdvCAM(**({} if a.advcam_steps is None else {"steps": a.advcam_steps}))
        weights = run / WEIGHTS_NAME if run.is_dir() else run
        record = {"method": att.config(), "model_sha256": model_identity(weights), "ids": self.ids_path.read_text().split(),
                  "multiscale": {"scales": list(self.multiscale.scales), "flip": self.multiscale.flip}}
        folder = a.out / "maps" / f"{method}-{short_hash(record)}"
        model = load_classifier(weights, self.device)[0]
        with exclusive_lock(folder.with_name(folder.name + ".lock")):
            run_cached(att, model, self.dataset, self.dataset.ids, self.multiscale, folder, self.device, record,
                       progress=lambda s: None)
        ev = evaluate_cached(self.dataset, folder, crf=False).plain
        self.results[key] = {"mIoU": 100 * ev.miou, "P": 100 * ev.precision, "R": 100 * ev.recall, "F1": 100 * ev.f1,
                             "thr": ev.threshold, "per_class": {k: 100 * v for k, v in ev.per_class.items()}}
        return self.results[key]


def part_t41(b: Bench) -> str:
    """Table 4.1 style rows."""
    ood = b.ood_set("reviewed", b.reviewed())
    runs = {"shared classifier (no fine-tune)": b.args.model, "fine-tuned without OoD (a)": b.finetune("a", ood, b.loss_for("a"), 0),
            "+ W-OoD (f)": b.finetune("f", ood, b.loss_for("f"), 0)}
    rows = [{"method": f"{m.upper() if m == 'cam' else 'AdvCAM'}: {name}", **{k: v for k, v in b.seeds(run, m).items() if k != "per_class"}}
            for m in b.args.methods for name, run in runs.items()]
    return markdown(rows, ["method", "mIoU", "P", "R", "F1", "thr"])


def part_t45(b: Bench) -> str:
    """Table 4.5 style loss ablation, mean and std over seeds."""
    ood = b.ood_set("reviewed", b.reviewed())
    rows = []
    for row, (cls_ood, pull, push) in ABLATION.items():
        runs = [r for s in b.args.seeds if (r := b.finetune(row, ood, b.loss_for(row), s)) is not None]
        vals = [b.seeds(r, "cam")["mIoU"] for r in runs]
        if not vals:
            continue
        rows.append({"row": f"({row})", "L_cls D_ood": "x" if cls_ood else "", "L_d D_in": "x" if pull else "",
                     "L_d D_ood": "x" if push else "", "mIoU mean": float(np.mean(vals)), "mIoU std": float(np.std(vals)),
                     "runs": " ".join(f"{v:.1f}" for v in vals)})
    return markdown(rows, ["row", "L_cls D_ood", "L_d D_in", "L_d D_ood", "mIoU mean", "mIoU std", "runs"])


def part_fig45a(b: Bench) -> str:
    """mIoU against the number of hard OoD images, box plot over repeats."""
    kept = b.reviewed()
    best_class = {c.image: c.cls for c in read_mining(b.mine)[1]}
    counts = sorted({len(b.classes), *[n for n in b.args.counts if n < len(kept)], len(kept)})
    series: dict[int, list[float]] = {}
    for n in counts:
        for r in range(b.args.repeats if n < len(kept) else 1):
            rng = np.random.default_rng([r, n])
            if n == len(b.classes):  # one hard OoD image per class (by its mined class), as the dissertation's 20
                picks = [p for c in b.classes if (opts := [q for q in kept if best_class.get(q.stem) == c])
                         for p in [opts[int(rng.integers(len(opts)))]]]
            else:
                picks = [kept[i] for i in sorted(rng.choice(len(kept), size=n, replace=False))]
            name = "f" if n == len(kept) else f"count{n}-rep{r}"  # all of them: row (f) itself
            ood = b.ood_set("reviewed" if n == len(kept) else name, picks)
            if (run := b.finetune(name, ood, b.loss_for("f"), 0)) is not None:
                series.setdefault(n, []).append(b.seeds(run, "cam")["mIoU"])
    counts = [n for n in counts if n in series]
    base = b.seeds(b.finetune("a", b.ood_set("reviewed", kept), b.loss_for("a"), 0), "cam")["mIoU"]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.boxplot([series[n] for n in counts], tick_labels=[str(n) for n in counts])
    ax.axhline(base, ls="--", c="grey", label="no OoD (a)")
    ax.set_xlabel("hard OoD images")
    ax.set_ylabel("CAM seed mIoU (%)")
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(b.args.out / "fig45a.png", dpi=120)
    plt.close(fig)
    rows = [{"hard OoD images": n, "mIoU median": float(np.median(v)), "min": min(v), "max": max(v), "repeats": len(v)}
            for n, v in series.items()]
    return markdown([{"hard OoD images": 0, "mIoU median": base, "min": base, "max": base, "repeats": 1}] + rows,
                    ["hard OoD images", "mIoU median", "min", "max", "repeats"]) + f"\n\n![Fig 4.5a]({b.args.out / 'fig45a.png'})"


def part_t46(b: Bench) -> str:
    """Alternative OoD collections with the same number of images."""
    kept = b.reviewed()
    n = len(kept)
    pool, cands = open_pool(b.args.data / "OoD"), read_mining(b.mine)[1]
    rng = np.random.default_rng(0)
    random_pool = [pool.image_path(pool.ids[i]) for i in sorted(rng.choice(len(pool.ids), size=min(n, len(pool.ids)), replace=False))]
    random_hard = [pool.image_path(cands[i].image) for i in sorted(rng.choice(len(cands), size=min(n, len(cands)), replace=False))]
    sets = {"no OoD (a)": ("a", b.ood_set("reviewed", kept), b.loss_for("a")),
            "random OoD": ("random", b.ood_set("random", random_pool), b.loss_for("f")),
            "random hard OoD (unreviewed)": ("randomhard", b.ood_set("random_hard", random_hard), b.loss_for("f")),
            "reviewed hard OoD": ("f", b.ood_set("reviewed", kept), b.loss_for("f"))}
    truth = read_truth(pool.truth_path)
    rows = []
    for label, (name, ood, loss) in sets.items():
        files = [Path(line) for line in ood.read_text().split()]
        row = {"OoD collection": label, **{k: v for k, v in b.seeds(b.finetune(name, ood, loss, 0), "cam").items() if k != "per_class"}}
        row["images"] = 0 if name == "a" else len(files)
        row["with a class"] = 0 if name == "a" else sum(truth.get(f.stem, False) for f in files)
        rows.append(row)
    return markdown(rows, ["OoD collection", "images", "with a class", "mIoU", "P", "R", "F1"])


def part_perclass(b: Bench) -> str:
    """Per-class CAM IoU gain of W-OoD (f) over (a) and each class's context correlation."""
    ood = b.ood_set("reviewed", b.reviewed())
    before = b.seeds(b.finetune("a", ood, b.loss_for("a"), 0), "cam")["per_class"]
    after = b.seeds(b.finetune("f", ood, b.loss_for("f"), 0), "cam")["per_class"]
    synth = json.loads((b.args.data / "synth.json").read_text())
    preferred = {c["name"]: c.get("preferred_context") for c in synth["classes"]}
    train_ids = set(VOCDataset(b.args.data, b.args.train_split).ids)
    rows = []
    for name in b.classes:
        imgs = [m for i, m in synth["images"].items() if i in train_ids and name in m["classes"]]
        share = sum(m["context"] == preferred.get(name) for m in imgs) / max(1, len(imgs))
        gain = after.get(name, float("nan")) - before.get(name, float("nan"))
        rows.append({"class": name, "context share": share, "IoU (a)": before.get(name), "IoU (f)": after.get(name),
                     "gain": None if np.isnan(gain) else gain})
    rows.sort(key=lambda r: np.inf if r["gain"] is None else -r["gain"])
    scored = [r for r in rows if r["gain"] is not None]  # classes absent from the subset have no IoU
    shares, gains = np.array([r["context share"] for r in scored]), np.array([r["gain"] for r in scored])
    rank = lambda v: np.argsort(np.argsort(v))  # noqa: E731
    rho = float(np.corrcoef(rank(shares), rank(gains))[0, 1]) if len(scored) > 2 and gains.std() > 0 else float("nan")
    return markdown(rows, ["class", "context share", "IoU (a)", "IoU (f)", "gain"]) + \
        f"\n\nSpearman correlation of context share and gain over {len(scored)} classes: {rho:.2f}"


def main(argv: list[str] | None = None) -> int:
    """Run (or resume) the requested parts and print their tables."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="synthetic benchmark VOC2012 folder (with OoD/)")
    p.add_argument("--model", type=Path, required=True, help="the shared in-distribution classifier every run fine-tunes")
    p.add_argument("--out", type=Path, required=True, help="cache and report folder (resumable)")
    p.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS, help="tables to produce")
    p.add_argument("--split", default="train", help="split the evaluation subset is drawn from")
    p.add_argument("--train-split", default="train", help="split the fine-tunes train on")
    p.add_argument("--images", type=int, default=100, help="size of the fixed evaluation subset")
    p.add_argument("--subset-seed", type=int, default=0, help="seed of the subset draw")
    p.add_argument("--threshold", type=float, default=0.5, help="mining threshold on p(c)")
    p.add_argument("--epochs", type=int, default=3, help="fine-tune epochs of every run")
    p.add_argument("--lr", type=float, default=1e-4, help="fine-tune learning rate")
    p.add_argument("--head-lr-mult", type=float, default=1.0,
                   help="lr multiplier of the 1x1 head (10 for an ImageNet-initialised backbone, as its classifier)")
    p.add_argument("--batch-size", type=int, default=16, help="in-distribution images per step")
    p.add_argument("--ood-batch-size", type=int, default=8, help="OoD images per step")
    p.add_argument("--crop", type=int, default=128, help="training crop")
    p.add_argument("--wood-variant", default=DEFAULT_VARIANT, choices=sorted(WOOD_VARIANTS, reverse=True),
                   help="the W-OoD loss of rows (b)-(f): the authors' code (means, |C|/K, batch-wide top-tau, OoD weight "
                        "0.25, centres once, one anti-adversarial step; the CLI's default), or the text's sums")
    p.add_argument("--wood", nargs="+", default=[], metavar="KEY=VALUE",
                   help="overrides of the loss configuration (weakseg.ood.losses.WoodLossConfig fields), e.g. lam=0.002")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds of the ablation")
    p.add_argument("--counts", type=int, nargs="+", default=[16, 32, 64], help="OoD-set sizes of Fig. 4.5(a) (besides 1 per class and all)")
    p.add_argument("--repeats", type=int, default=3, help="random subsets per size in Fig. 4.5(a)")
    p.add_argument("--methods", nargs="+", default=["cam", "advcam"], choices=["cam", "advcam"], help="methods of Table 4.1")
    p.add_argument("--advcam-steps", type=int, default=None, help="override AdvCAM's T (quick checks)")
    p.add_argument("--scales", type=float, nargs="+", default=list(MultiScale().scales), help="inference scales")
    p.add_argument("--no-flip", action="store_true", help="no flipped inference")
    p.add_argument("--cached-only", action="store_true",
                   help="t45/fig45a: report the finished fine-tunes only, train nothing (a partial table while runs go on)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    args = p.parse_args(argv)
    bench = Bench(args)
    header = (f"{len(bench.dataset.ids)} images of {args.data} ({args.split}, subset seed {args.subset_seed}); fine-tunes of "
              f"{args.model} for {args.epochs} epochs at lr {args.lr}; scales {list(bench.multiscale.scales)}"
              f"{' + flip' if bench.multiscale.flip else ''}; W-OoD loss {args.wood_variant} {bench.base_loss.to_dict()}"
              f" {bench.job_settings}; seed mIoU at the best threshold, P/R/F1 = "
              "foreground means (%).")
    parts = {"t41": part_t41, "t45": part_t45, "fig45a": part_fig45a, "t46": part_t46, "perclass": part_perclass}
    # one report per part set and loss: processes may share --out
    stem = "_".join([*args.parts, args.wood_variant, *[w.replace("=", "-") for w in args.wood]])
    report = [header]
    for name in args.parts:
        table = parts[name](bench)
        print(f"\n## {name}\n\n{table}", flush=True)
        report.append(f"## {name}\n\n{table}")
        atomic_write_text(args.out / f"wood_table_{stem}.md", "\n\n".join(report) + "\n")
    atomic_write_json(args.out / f"wood_table_{stem}.json", {"header": header, "results": bench.results})
    return 0


if __name__ == "__main__":
    sys.exit(main())

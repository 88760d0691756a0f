"""Issue 3's investigation: why AdvCAM barely moves the map beyond CAM on the synthetic benchmark with a ResNet-18
trained from scratch, and whether generic (self-supervised) backbone features restore AdvCAM > CAM.

Parts (each cached under --out and resumable; results merged into --json):

- probes: freeze a classifier's backbone, pool its final feature map over each object's ground-truth PART pixels,
  its BODY-without-part pixels, and the body pixels farther than --far-px from the part (receptive fields overlap, so
  "body" cells near the part still see it), and fit an 8-way logistic-regression probe (torch, full batch) on the
  train split, tested on val. Also: the classifier's own 1x1 head applied to the same pooled features (what a CAM
  can score there), and the same probes on an untrained (random-init) backbone as a control. The part masks are
  not written by `weakseg synth`; they are regenerated from the generator with the benchmark's seed and config
  (render_sample_detailed is a pure function of config and rng), checked pixel-for-pixel against the stored
  SegmentationClass PNGs.
- steps: for the first --step-images ids of the fixed subset, AdvCAM trajectories (text variant, text without the
  restricting term, and --variant code) at scale 1.0 with flip, CAM(x^t) recorded at every step, the logit y_c and ||x^t - x^0||_inf (normalised units)
  at t = 0, 9, 18, 27. Reports per t: mean |A_t - A_0| inside / outside the object (A_t = the AdvCAM map with T = t,
  i.e. sum_{s<=t} CAM(x^s) / max), the share of map mass inside the object, the pixel amplification ratio
  CAM(x^t)/CAM(x^0) over R_D (CAM(x^0) >= 0.5) and R_ND (0.1 < CAM(x^0) < 0.5) as in Fig. 3.3, and the seed mIoU
  (best threshold) of A_t. Writes the figure --figure (rows: image, CAM, AdvCAM text, AdvCAM code). A_t of the code
  variant here includes CAM(x^t); the method itself sums x^0..x^{T-1}.
- seeds: CAM, AdvCAM (text), AdvCAM --variant code (and the diagnostic advcam-code-mask: the code variant with its
  restricting term at the text's strength) for the first --seed-images ids at scale 1.0 + flip, cached per image
  through attribution_common.run_cached; seed mIoU for every --seed-models classifier (e.g. scratch and SSL init).
  Rows from earlier calls are kept in the JSON.
- ssl: SimCLR-lite pretraining (two augmented views, NT-Xent) of a ResNet-18 backbone on the unlabelled
  train images plus the OoD pool, saved as a torchvision-style state dict for `weakseg train classifier --pretrained`.

    python benchmarks/advcam_investigation.py --data data/bench --model runs/clf --parts steps probes --threads 1
    python benchmarks/advcam_investigation.py --parts ssl --ssl-epochs 4 --ssl-batch 64 --threads 1
    python benchmarks/advcam_investigation.py --parts seeds --seed-images 20 --seed-models runs/clf RUN_SSL ...

(the README's "Why AdvCAM barely moves here" lists the exact commands and the figures they gave).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchmarks.attribution_common import (evaluate_cached, model_identity, open_subset, run_cached,  # noqa: E402
                                           short_hash)
from weakseg.attribution import CAM, AdvCAM, MultiScale  # noqa: E402
from weakseg.attribution.advcam import climb_forward, climb_step, input_normalization  # noqa: E402
from weakseg.data.augment import to_tensor  # noqa: E402
from weakseg.data.classes import IGNORE_INDEX  # noqa: E402
from weakseg.data.synth import SPLIT_CODES, SynthConfig, render_sample_detailed  # noqa: E402
from weakseg.data.voc import VOCDataset  # noqa: E402
from weakseg.io import atomic_save_npz, atomic_write_json  # noqa: E402
from weakseg.metrics.seeds import evaluate_seeds  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def check_steps(steps: int) -> tuple[int, ...]:
    """The steps reported: 0, T/3, 2T/3, T (0, 9, 18, 27 at the default T)."""
    return tuple(sorted({0, round(steps / 3), round(2 * steps / 3), steps}))


# ----------------------------------------------------------------------------- ground truth parts

def synth_config(data: Path) -> SynthConfig:
    """The generator configuration recorded in the benchmark's synth.json."""
    cfg = json.loads((data / "synth.json").read_text())["config"]
    cfg["part_fraction"] = tuple(cfg["part_fraction"])
    cfg["class_context_prob"] = tuple(cfg.get("class_context_prob", ()))
    return SynthConfig(**cfg)


def regenerate(cfg: SynthConfig, data: Path, image_id: str, split: str, split_start: int):
    """The generator's own Sample of a labelled image (same rng as `weakseg synth`), checked against the stored mask."""
    index = int(image_id.split("_")[1]) - split_start
    return render_sample_detailed(cfg, np.random.default_rng([cfg.seed, SPLIT_CODES[split], index]))


def near(mask: np.ndarray, radius: int) -> np.ndarray:
    """Pixels within Euclidean distance radius of a True pixel of mask (a disk dilation)."""
    r = np.arange(-radius, radius + 1)
    disk = torch.from_numpy(((r[:, None] ** 2 + r[None, :] ** 2) <= radius ** 2).astype(np.float32))[None, None]
    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    return (F.conv2d(m, disk, padding=radius)[0, 0] > 0.5).numpy()


def object_regions(sample, far_px: int) -> list[tuple[int, dict[str, np.ndarray]]]:
    """(class label, {part, body, body_far, object}) boolean masks per visible instance, void pixels excluded."""
    out = []
    inst = sample.instance_mask
    for obj in sample.objects:
        n = obj["instance"]
        visible = inst == n  # void band is 255, so excluded
        part = visible & (sample.part_mask == n)
        body = visible & ~(sample.part_mask == n)
        far = body & ~near(sample.part_mask == n, far_px)
        out.append((obj["label"], {"part": part, "body": body, "body_far": far, "object": visible}))
    return out


# ----------------------------------------------------------------------------- probes

def pooled(feats: torch.Tensor, mask: np.ndarray) -> tuple[np.ndarray, float]:
    """Feature map [D,h,w] averaged with the pixel mask's area weights on the feature grid; (vector, cells)."""
    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    w = F.adaptive_avg_pool2d(m, feats.shape[-2:])[0, 0]
    total = float(w.sum())
    if total <= 0:
        return np.zeros(feats.shape[0], np.float32), 0.0
    return ((feats * w).sum(dim=(1, 2)) / total).numpy(), total


def probe_features(model, dataset: VOCDataset, cfg: SynthConfig, split: str, split_start: int, far_px: int,
                   min_cells: float, device) -> dict[str, np.ndarray]:
    """Pooled features per region of every object of a split, with class labels and CAM(x^0) summaries."""
    rows: dict[str, list] = {"part": [], "body": [], "body_far": [], "background": []}
    labels: dict[str, list] = {k: [] for k in rows}
    cam_mean: dict[str, list] = {"part": [], "body": [], "body_far": []}
    checked = 0
    for image_id in dataset.ids:
        sample = regenerate(cfg, dataset.root, image_id, split, split_start)
        stored = dataset.mask(image_id)
        if not np.array_equal(stored, sample.class_mask):
            raise RuntimeError(f"{image_id}: regenerated class mask differs from the stored one")
        checked += 1
        x = to_tensor(dataset.image(image_id)).to(device)[None]
        with torch.no_grad():
            feats = model.features(x)[0].float().cpu()
            cams = F.relu(model.class_maps(feats[None].to(device)))[0].cpu()
        cams_up = F.interpolate(cams[None], size=stored.shape, mode="bilinear", align_corners=False)[0]
        for label, regions in object_regions(sample, far_px):
            c = label - 1
            peak = float(cams_up[c].max()) + 1e-5
            for name in ("part", "body", "body_far"):
                vec, cells = pooled(feats, regions[name])
                if cells < min_cells:
                    continue
                rows[name].append(vec)
                labels[name].append(c)
                cam_mean[name].append(float(cams_up[c][torch.from_numpy(regions[name])].mean()) / peak)
        present = sorted({o["label"] for o in sample.objects})
        if len(present) == 1:
            bg = (stored == 0)
            vec, cells = pooled(feats, bg)
            if cells >= min_cells:
                rows["background"].append(vec)
                labels["background"].append(present[0] - 1)
    out = {}
    for k in rows:
        out[f"{k}_x"] = np.asarray(rows[k], np.float32)
        out[f"{k}_y"] = np.asarray(labels[k], np.int64)
    for k in cam_mean:
        out[f"{k}_cam"] = np.asarray(cam_mean[k], np.float32)
    out["checked_masks"] = np.int64(checked)
    return out


def fit_probe(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray, classes: int, steps: int,
              seed: int = 0) -> dict[str, float]:
    """Multinomial logistic regression (standardised features, Adam, full batch, weight decay); accuracies."""
    g = torch.Generator().manual_seed(seed)
    a, b = torch.from_numpy(xtr), torch.from_numpy(xte)
    mu, sd = a.mean(0), a.std(0) + 1e-5
    a, b = (a - mu) / sd, (b - mu) / sd
    lin = torch.nn.Linear(a.shape[1], classes)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) * 0.01)
        lin.bias.zero_()
    opt = torch.optim.Adam(lin.parameters(), lr=1e-2, weight_decay=1e-3)
    ya = torch.from_numpy(ytr)
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad()
            F.cross_entropy(lin(a), ya).backward()
            opt.step()
    with torch.no_grad():
        tr = float((lin(a).argmax(1) == ya).float().mean())
        te = float((lin(b).argmax(1) == torch.from_numpy(yte)).float().mean())
    return {"train_acc": tr, "test_acc": te, "n_train": int(len(ytr)), "n_test": int(len(yte))}


def head_accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of the classifier's own 1x1 head (argmax over classes) on pooled region features."""
    w = model.classifier.weight.detach().float().cpu().flatten(1)  # [C, D]
    scores = torch.from_numpy(x) @ w.T
    return float((scores.argmax(1) == torch.from_numpy(y)).float().mean())


def part_probes(args, model, device, cache: Path) -> dict:
    from weakseg.models.classifier_io import build_classifier_model

    cfg = synth_config(args.data)
    n_train = len(VOCDataset(args.data, "train").ids)
    torch.manual_seed(0)
    random_model = build_classifier_model(model.config).to(device).eval()
    backbones = {"trained": (model, model_identity(args.model_file)), "random_init": (random_model, "random-seed0")}
    for spec in args.probe_backbones or []:  # NAME=STATE_DICT: e.g. the self-supervised backbone, before any labels
        name, path = spec.split("=", 1)
        net = build_classifier_model(model.config).to(device)
        from weakseg.models.pretrained import load_pretrained_backbone

        load_pretrained_backbone(net, path)
        backbones[name] = (net.eval(), model_identity(Path(path)))
    result = {"far_px": args.far_px, "min_cells": args.min_cells, "probe_steps": args.probe_steps}
    for name, (net, ident) in backbones.items():
        if args.probe_only and name not in args.probe_only:
            continue
        net.eval()
        feats = {}
        for split, start in (("train", 0), ("val", n_train)):
            key = short_hash({"model": ident, "split": split, "far_px": args.far_px, "min_cells": args.min_cells,
                              "data": str(args.data.resolve())})
            path = cache / f"probe-{name}-{split}-{key}.npz"
            if not path.exists():
                t0 = time.perf_counter()
                data = probe_features(net, VOCDataset(args.data, split), cfg, split, start, args.far_px,
                                      args.min_cells, device)
                atomic_save_npz(path, **data)
                print(f"  probes {name}/{split}: features in {time.perf_counter() - t0:.0f}s "
                      f"({int(data['checked_masks'])} regenerated masks identical to the stored ones)")
            with np.load(path) as z:
                feats[split] = {k: z[k] for k in z.files}
        rows = {}
        for region in ("part", "body", "body_far", "background"):
            tr, te = feats["train"], feats["val"]
            r = fit_probe(tr[f"{region}_x"], tr[f"{region}_y"], te[f"{region}_x"], te[f"{region}_y"],
                          len(args.classes), args.probe_steps)
            if name == "trained":
                r["head_acc_test"] = head_accuracy(net, te[f"{region}_x"], te[f"{region}_y"])
                if f"{region}_cam" in te:
                    r["mean_cam_over_region"] = float(te[f"{region}_cam"].mean())
            rows[region] = r
            print(f"  probe {name:11s} {region:10s} test acc {r['test_acc']:.3f} (train {r['train_acc']:.3f}, "
                  f"n {r['n_train']}/{r['n_test']})" + (f", classifier head {r['head_acc_test']:.3f}" if 'head_acc_test' in r else "")
                  + (f", mean CAM {r['mean_cam_over_region']:.3f}" if 'mean_cam_over_region' in r else ""))
        result[name] = rows
    result["chance"] = float(1.0 / len(args.classes))
    return result


# ----------------------------------------------------------------------------- steps

def trajectories(model, x: torch.Tensor, classes: list[int], cfg: AdvCAM, steps: int) -> dict[str, np.ndarray]:
    """CAM(x^t) for t = 0..steps (ReLU'd raw), logits y_c and ||z^t - z^0||_inf at checks, per (class, flip).

    Runs the same climb_step as AdvCAM (one batch: classes x [image, flipped image]).
    """
    rows = torch.cat([x, x.flip(-1)], 0).repeat(len(classes), 1, 1, 1)
    targets = torch.as_tensor(classes, device=x.device).repeat_interleave(2)
    mean, std = input_normalization(model, rows)
    z0 = (rows - mean) / std
    bounds = (z0.amin(dim=(1, 2, 3), keepdim=True), z0.amax(dim=(1, 2, 3), keepdim=True))
    z, ref, ref_max = z0.clone(), None, None
    cams, logit, linf = [], {}, {}
    checks = check_steps(steps)

    def checkpoint(t, zt):
        if t in checks:
            with torch.no_grad():
                lg, _ = climb_forward(model, zt, targets, cfg, mean, std)
            logit[t] = lg.gather(1, targets[:, None])[:, 0].cpu().numpy()
            linf[t] = (zt - z0).abs().amax(dim=(1, 2, 3)).cpu().numpy()

    checkpoint(0, z)
    for t in range(1, steps + 1):
        z, current, ref, ref_max = climb_step(model, z, targets, cfg, mean, std, ref, ref_max, bounds)
        cams.append(current)
        checkpoint(t, z)
    with torch.no_grad():
        _, cam = climb_forward(model, z, targets, cfg, mean, std)
    cams.append(F.relu(cam))
    c = torch.stack(cams).view(steps + 1, len(classes), 2, *cams[0].shape[-2:])
    c[:, :, 1] = c[:, :, 1].flip(-1)  # flipped trajectories back to image orientation
    return {"cams": c.cpu().numpy().astype(np.float32),
            "logit": np.stack([logit[t] for t in checks]).reshape(len(checks), len(classes), 2),
            "linf": np.stack([linf[t] for t in checks]).reshape(len(checks), len(classes), 2)}


def upsample(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return F.interpolate(torch.from_numpy(m)[None].float(), size=size, mode="bilinear", align_corners=False)[0].numpy()


def step_maps(traj: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(per-step CAM(x^t) summed over flips [S,K,H,W], A_t = cumulative sum normalised by its own max [S,K,H,W])."""
    per = np.stack([upsample(traj[t].sum(1), size) for t in range(traj.shape[0])])
    per = np.maximum(per, 0)
    cum = np.cumsum(per, axis=0)
    a = cum / np.maximum(cum.reshape(*cum.shape[:2], -1).max(-1), 1e-5)[..., None, None]
    return per, a


def part_steps(args, model, dataset: VOCDataset, device, cache: Path) -> dict:
    cfg = synth_config(args.data)
    ids = dataset.ids[: args.step_images]
    variants = {"text": AdvCAM(steps=args.advcam_steps, restrict_scale="max"), "code": AdvCAM(steps=args.advcam_steps, variant="code"),
                "text_nomask": AdvCAM(steps=args.advcam_steps, restrict=False),
                # the text's restricting term in the logit's units (restrict_scale="logit", issue 13 item 5)
                "text_logit": AdvCAM(steps=args.advcam_steps, restrict_scale="logit")}
    variants = {k: v for k, v in variants.items() if k in args.step_variants}
    key = short_hash({"model": model_identity(args.model_file), "steps": args.advcam_steps,
                      "variants": {k: v.config() for k, v in variants.items()}})  # files are per image id
    folder = cache / f"steps-{key}"
    folder.mkdir(parents=True, exist_ok=True)
    checked_equal = None
    for n, image_id in enumerate(ids):
        path = folder / f"{image_id}.npz"
        if path.exists():
            continue
        t0 = time.perf_counter()
        x = to_tensor(dataset.image(image_id)).to(device)[None]
        classes = [c - 1 for c in dataset.label_ids(image_id)]
        out = {}
        for vname, method in variants.items():
            tr = trajectories(model, x, classes, method, args.advcam_steps)
            out.update({f"{vname}_{k}": v for k, v in tr.items()})
            if n == 0 and vname != "text_nomask":  # our recorder reproduces the method's own trajectory maps
                ref = method.trajectory_maps(model, torch.cat([x, x.flip(-1)]), torch.as_tensor(classes))
                ref = ref.sum(0).cpu().numpy()  # [2, K, h, w]
                ref[1] = ref[1][..., ::-1].copy()
                s = tr["cams"] if vname == "text" else tr["cams"][:-1]
                mine = s.sum(0).transpose(1, 0, 2, 3)
                err = float(np.abs(mine - ref).max() / max(np.abs(ref).max(), 1e-6))
                checked_equal = max(checked_equal or 0.0, err)
                print(f"  steps: recorder vs AdvCAM.trajectory_maps ({vname}) max rel diff {err:.2e}")
        atomic_save_npz(path, class_ids=np.asarray(dataset.label_ids(image_id), np.int16), **out)
        print(f"  steps {n + 1}/{len(ids)} {image_id}: {time.perf_counter() - t0:.1f}s")
    if checked_equal is not None:
        atomic_write_json(folder / "recorder_check.json", {"max_rel_diff": checked_equal})

    # ---- summaries
    summary: dict = {"ids": ids, "scale": 1.0, "flip": True, "steps": args.advcam_steps}
    rc = folder / "recorder_check.json"
    if rc.exists():
        summary["recorder_vs_method_max_rel_diff"] = json.loads(rc.read_text())["max_rel_diff"]
    figure_rows: dict[str, list] = {"image": [], "cam": [], **{v: [] for v in variants}}
    checks = check_steps(args.advcam_steps)
    for vname in variants:
        acc = {t: {"in": [], "out": [], "mass_in": [], "amp_rd": [], "amp_rnd": [], "amp_part": [], "amp_body": [],
                   "logit_gain": [], "linf": []} for t in checks}
        seed_items = {t: [] for t in checks}
        for image_id in ids:
            with np.load(folder / f"{image_id}.npz") as z:
                traj, logit, linf = z[f"{vname}_cams"], z[f"{vname}_logit"], z[f"{vname}_linf"]
                class_ids = z["class_ids"].astype(np.int64)
            gt = dataset.mask(image_id)
            sample = regenerate(cfg, dataset.root, image_id, "train", 0)
            per, a = step_maps(traj, gt.shape)
            valid = gt != IGNORE_INDEX
            for t in checks:
                seed_items[t].append((a[t], class_ids, gt))
            for k, cid in enumerate(class_ids):
                inside = (gt == cid)
                outside = valid & ~inside
                part = np.zeros_like(inside)
                for obj in sample.objects:
                    if obj["label"] == cid:
                        part |= (sample.part_mask == obj["instance"]) & (sample.instance_mask == obj["instance"])
                body = inside & ~part
                c0 = per[0, k] / max(per[0, k].max(), 1e-5)
                rd, rnd = c0 >= 0.5, (c0 > 0.1) & (c0 < 0.5)
                for i, t in enumerate(checks):
                    d = np.abs(a[t, k] - a[0, k])
                    acc[t]["in"].append(d[inside].mean())
                    acc[t]["out"].append(d[outside].mean())
                    acc[t]["mass_in"].append(a[t, k][inside].sum() / max(a[t, k][valid].sum(), 1e-9))
                    ratio = per[t, k] / np.maximum(per[0, k], 1e-5)
                    acc[t]["amp_rd"].append(ratio[rd].mean() if rd.any() else np.nan)
                    acc[t]["amp_rnd"].append(ratio[rnd].mean() if rnd.any() else np.nan)
                    acc[t]["amp_part"].append(per[t, k][part].mean() / max(per[0, k][part].mean(), 1e-5) if part.any() else np.nan)
                    acc[t]["amp_body"].append(per[t, k][body].mean() / max(per[0, k][body].mean(), 1e-5) if body.any() else np.nan)
                    acc[t]["logit_gain"].append(float(np.mean(logit[i, k] - logit[0, k])))
                    acc[t]["linf"].append(float(np.max(linf[i, k])))
            if vname == next(iter(variants)):
                figure_rows["image"].append(dataset.image(image_id))
                figure_rows["cam"].append(a[0].max(0))
            figure_rows[vname].append(a[-1].max(0))
        rows = {}
        for t in checks:
            rep = evaluate_seeds(seed_items[t], dataset.classes)
            rows[str(t)] = {"mean_abs_change_in_object": float(np.mean(acc[t]["in"])),
                            "mean_abs_change_outside": float(np.mean(acc[t]["out"])),
                            "map_mass_in_object": float(np.mean(acc[t]["mass_in"])),
                            "amplification_R_D": float(np.nanmean(acc[t]["amp_rd"])),
                            "amplification_R_ND": float(np.nanmean(acc[t]["amp_rnd"])),
                            "amplification_part": float(np.nanmean(acc[t]["amp_part"])),
                            "amplification_body": float(np.nanmean(acc[t]["amp_body"])),
                            "logit_gain": float(np.mean(acc[t]["logit_gain"])),
                            "linf_max_normalised": float(np.max(acc[t]["linf"])),
                            "linf_mean_normalised": float(np.mean(acc[t]["linf"])),
                            "seed_mIoU": float(rep.miou), "seed_threshold": float(rep.threshold)}
        summary[vname] = rows
        print(f"  AdvCAM {vname}: t | |A_t-A_0| in / out | mass in obj | amp R_D / R_ND | amp part / body | "
              f"logit gain | ||x^t-x^0||_inf max (mean) | seed mIoU")
        for t in checks:
            r = rows[str(t)]
            print(f"    {t:2d} | {r['mean_abs_change_in_object']:.4f} / {r['mean_abs_change_outside']:.4f} | "
                  f"{r['map_mass_in_object']:.3f} | {r['amplification_R_D']:.3f} / {r['amplification_R_ND']:.3f} | "
                  f"{r['amplification_part']:.3f} / {r['amplification_body']:.3f} | {r['logit_gain']:+.3f} | "
                  f"{r['linf_max_normalised']:.4f} ({r['linf_mean_normalised']:.4f}) | {r['seed_mIoU']:.3f}")
    if args.figure:
        figure(figure_rows, args.figure, args.figure_images)
        summary["figure"] = str(args.figure)
    return summary


def figure(rows: dict, path: Path, n: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(n, len(rows["image"]))
    labels = {"text": "AdvCAM text\n(T=27, xi=0.008)", "code": "AdvCAM code\n(T=27, xi=0.08 Linf)",
              "text_logit": "AdvCAM text,\nlogit-scaled M", "text_nomask": "AdvCAM text\nno restriction"}
    names = [("image", "image"), ("cam", "CAM"), *[(k, labels[k]) for k in labels if k in rows and k != "text_nomask"]]
    fig, axes = plt.subplots(len(names), n, figsize=(1.6 * n + 0.9, 1.6 * len(names)), squeeze=False)
    for r, (key, label) in enumerate(names):
        for c in range(n):
            ax = axes[r, c]
            img = rows["image"][c]
            ax.imshow(img)
            if key != "image":
                ax.imshow(rows[key][c], cmap="jet", alpha=0.5, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=7)
    fig.tight_layout(pad=0.2)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=70)
    plt.close(fig)
    from PIL import Image

    Image.open(tmp).convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    tmp.unlink()


# ----------------------------------------------------------------------------- seeds

def part_seeds(args, dataset: VOCDataset, ids_path: Path, device, cache: Path) -> dict:
    from weakseg.models.classifier_io import load_classifier

    multiscale = MultiScale(scales=(1.0,), flip=True)
    methods = {"cam": CAM(), "advcam": AdvCAM(steps=args.advcam_steps, restrict_scale="max"),  # Eq. 3.6 as printed
               "advcam-code": AdvCAM(steps=args.advcam_steps, variant="code"),
               # diagnostic: the code variant with its restricting term at the text's strength (1 / max raw CAM,
               # about 1/80 for runs/clf) instead of 5e-4, i.e. the mask actually holding the discriminative cells
               "advcam-code-mask": AdvCAM(steps=args.advcam_steps, variant="code", code_map_scale=args.diag_map_scale),
               "advcam-logit": AdvCAM(steps=args.advcam_steps, restrict_scale="logit"),
               "advcam-noreg": AdvCAM(steps=args.advcam_steps, suppress_others=False, restrict=False)}
    methods = {k: v for k, v in methods.items() if k in args.seed_rows}
    ids = dataset.ids[: args.seed_images]
    out = {}
    for label, model_path in zip(args.seed_labels, args.seed_models):
        model = load_classifier(model_path, device)[0].eval()
        file = model_path / "model.safetensors" if model_path.is_dir() else model_path
        rows = {}
        for row, method in methods.items():
            record = {"row": row, "method": method.config(), "model_sha256": model_identity(file),
                      "multiscale": {"scales": list(multiscale.scales), "flip": multiscale.flip},
                      "ids": ids}
            folder = cache / f"seeds-{row}-{short_hash(record)}"
            run_cached(method, model, dataset, ids, multiscale, folder, device, record)
            ev = evaluate_cached(dataset, folder, crf=False).plain
            rows[row] = {"seed_mIoU": float(ev.miou), "threshold": float(ev.threshold), "precision": float(ev.precision),
                         "recall": float(ev.recall), "F1": float(ev.f1)}
            print(f"  seeds {label:10s} {row:12s} mIoU {ev.miou:.3f} (t {ev.threshold:.2f}) P {ev.precision:.3f} "
                  f"R {ev.recall:.3f} F1 {ev.f1:.3f}")
        out[label] = {"model": str(model_path), **rows}
    return {"images": len(ids), "ids": ids, "scales": [1.0], "flip": True, "models": out}


# ----------------------------------------------------------------------------- ssl

def simclr_views(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """One random view per image of x [N,3,H,W] in [0,1]: resized crop (area 0.25-1), flip, brightness/contrast.

    No hue or saturation jitter: colour is the body's class cue on this benchmark, and the point is to keep it.
    """
    n, _, h, w = x.shape
    out = torch.empty_like(x)
    for i in range(n):
        area = float(torch.empty(1).uniform_(0.25, 1.0, generator=g)) * h * w
        ratio = float(torch.exp(torch.empty(1).uniform_(-0.29, 0.29, generator=g)))
        ch = int(min(h, max(8, round((area / ratio) ** 0.5))))
        cw = int(min(w, max(8, round((area * ratio) ** 0.5))))
        top = int(torch.randint(0, h - ch + 1, (1,), generator=g))
        left = int(torch.randint(0, w - cw + 1, (1,), generator=g))
        v = F.interpolate(x[i:i + 1, :, top:top + ch, left:left + cw], size=(h, w), mode="bilinear",
                          align_corners=False)[0]
        if float(torch.rand(1, generator=g)) < 0.5:
            v = v.flip(-1)
        b = float(torch.empty(1).uniform_(0.75, 1.25, generator=g))
        c = float(torch.empty(1).uniform_(0.75, 1.25, generator=g))
        m = v.mean()
        out[i] = ((v * b - m * b) * c + m * b).clamp(0, 1)
    return out


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's normalised temperature-scaled cross entropy over the 2N views."""
    z = F.normalize(torch.cat([a, b]), dim=1)
    sim = z @ z.T / temperature
    n = len(a)
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


def part_ssl(args, device, cache: Path) -> dict:
    """SimCLR-lite on the unlabelled train images + OoD pool; saves a torchvision-style ResNet-18 state dict."""
    import torchvision

    from weakseg.io import read_rgb

    key = short_hash({"data": str(args.data.resolve()), "epochs": args.ssl_epochs, "batch": args.ssl_batch,
                      "method": "simclr-lite-v1"})
    out_path = cache / f"ssl-simclr-{key}.pth"
    log_path = out_path.with_suffix(".json")
    if out_path.exists() and log_path.exists():
        return json.loads(log_path.read_text())
    train_ids = VOCDataset(args.data, "train").ids
    files = [args.data / "JPEGImages" / f"{i}.jpg" for i in train_ids]
    files += sorted((args.data / "OoD" / "JPEGImages").glob("*.jpg"))
    images = torch.stack([to_tensor(read_rgb(f)) for f in files])  # no labels are read
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=128)
    net.fc = torch.nn.Sequential(torch.nn.Linear(512, 512), torch.nn.ReLU(inplace=True), torch.nn.Linear(512, 128))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    net.to(device).train()
    steps_per_epoch = len(images) // args.ssl_batch
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=args.ssl_epochs * steps_per_epoch)
    g = torch.Generator().manual_seed(0)
    history = []
    t0 = time.perf_counter()
    for epoch in range(args.ssl_epochs):
        perm = torch.randperm(len(images), generator=g)
        tot = 0.0
        for s in range(steps_per_epoch):
            x = images[perm[s * args.ssl_batch:(s + 1) * args.ssl_batch]]
            va = ((simclr_views(x, g) - mean) / std).to(device)
            vb = ((simclr_views(x, g) - mean) / std).to(device)
            with torch.enable_grad():
                loss = nt_xent(net(va), net(vb), 0.2)
                opt.zero_grad()
                loss.backward()
                opt.step()
            sched.step()
            tot += float(loss.detach())
        history.append({"epoch": epoch + 1, "loss": tot / steps_per_epoch, "seconds": round(time.perf_counter() - t0, 1)})
        print(f"  ssl epoch {epoch + 1}/{args.ssl_epochs}: NT-Xent {tot / steps_per_epoch:.3f} "
              f"({time.perf_counter() - t0:.0f}s)", flush=True)
    state = {k: v.cpu() for k, v in net.state_dict().items() if not k.startswith("fc.")}
    torch.save(state, out_path)
    info = {"task": "SimCLR-lite (2 views: resized crop 0.25-1, flip, brightness/contrast 0.75-1.25; NT-Xent, T=0.2)",
            "images": len(images), "epochs": args.ssl_epochs, "batch": args.ssl_batch, "arch": "resnet18 (stride 32)",
            "history": history, "state_dict": str(out_path.relative_to(ROOT) if out_path.is_relative_to(ROOT) else out_path)}
    atomic_write_json(log_path, info)
    return info


# ----------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT / "data" / "bench", help="benchmark VOC2012 folder (synth)")
    p.add_argument("--model", type=Path, default=ROOT / "runs" / "clf", help="trained CAM classifier (run or file)")
    p.add_argument("--split", default="train")
    p.add_argument("--images", type=int, default=20, help="fixed subset size (seeds part)")
    p.add_argument("--step-images", type=int, default=10, help="first ids of the subset used by the steps part")
    p.add_argument("--subset-seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cache" / "advcam_investigation")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "advcam_investigation.json")
    p.add_argument("--figure", type=Path, default=ROOT / "docs" / "images" / "advcam_steps.png")
    p.add_argument("--figure-images", type=int, default=6)
    p.add_argument("--parts", nargs="+", default=["probes", "steps"], choices=["probes", "steps", "seeds", "ssl"])
    p.add_argument("--advcam-steps", type=int, default=27)
    p.add_argument("--far-px", type=int, default=12, help="body_far: body pixels farther than this from the part")
    p.add_argument("--min-cells", type=float, default=1.0, help="least region area in feature cells to keep it")
    p.add_argument("--probe-steps", type=int, default=300)
    p.add_argument("--probe-backbones", nargs="+", default=None, metavar="NAME=PATH",
                   help="extra backbones (torchvision-style state dicts) to probe, e.g. ssl=PATH")
    p.add_argument("--probe-only", nargs="+", default=None, help="probe only these backbones (trained, random_init, ...)")
    p.add_argument("--seed-models", type=Path, nargs="+", default=None, help="classifiers for the seeds part")
    p.add_argument("--seed-labels", nargs="+", default=None)
    p.add_argument("--seed-images", type=int, default=20, help="first ids of the subset used by the seeds part")
    p.add_argument("--seed-rows", nargs="+", default=["cam", "advcam", "advcam-code"],
                   choices=["cam", "advcam", "advcam-code", "advcam-code-mask", "advcam-logit", "advcam-noreg"])
    p.add_argument("--step-variants", nargs="+", default=["text", "code", "text_nomask"],
                   choices=["text", "code", "text_nomask", "text_logit"], help="AdvCAM variants of the steps part")
    p.add_argument("--diag-map-scale", type=float, default=0.0125,
                   help="code_map_scale of the advcam-code-mask row (1 / typical max raw CAM)")
    p.add_argument("--ssl-epochs", type=int, default=6)
    p.add_argument("--ssl-batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)

    args.model_file = args.model / "model.safetensors" if args.model.is_dir() else args.model
    dataset, ids_path, model, device = open_subset(args, "ids")
    model.eval()
    args.classes = dataset.classes
    cache = args.out
    result = json.loads(args.json.read_text()) if args.json.exists() else {}
    result.update({"data": str(args.data), "model": str(args.model), "model_sha256": model_identity(args.model_file),
                   "threads": torch.get_num_threads()})
    for part in args.parts:
        t0 = time.perf_counter()
        print(f"== {part}")
        if part == "probes":
            result.setdefault("probes", {}).update(part_probes(args, model, device, cache))
        elif part == "steps":
            result["steps"] = part_steps(args, model, dataset, device, cache)
        elif part == "seeds":
            args.seed_models = args.seed_models or [args.model]
            args.seed_labels = args.seed_labels or [m.name for m in args.seed_models]
            new = part_seeds(args, dataset, ids_path, device, cache)
            seeds = result.setdefault("seeds", {})
            if seeds.get("ids") != new["ids"]:
                seeds.clear()
            models = seeds.setdefault("models", {})
            seeds.update({k: v for k, v in new.items() if k != "models"})
            for label, rows in new["models"].items():  # rows of earlier calls (other --seed-rows) are kept
                models.setdefault(label, {}).update(rows)
        elif part == "ssl":
            result.setdefault("ssl", {})[f"epochs_{args.ssl_epochs}"] = part_ssl(args, device, cache)
        result.setdefault("seconds", {})[part] = round(time.perf_counter() - t0, 1)
        atomic_write_json(args.json, result)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Sparse vs dense IRN random walk on the same inputs (issue 15): equal labels, peak memory and time.

Inputs per image size (128, 256, 512 px by default): one image of the synthetic benchmark (seeded), the walk
at stride 4 (32^2, 64^2, 128^2 nodes). The boundary map is an oracle stand-in for IRN's (the true instance
boundaries, max-pooled to the stride and smoothed once with a 3x3 mean); the scores are CAM-like: each
present class's distinctive part, pooled to the stride, smoothed and max-normalised (partial activation, which
the walk is there to spread). Memory and time do not depend on the values.

Each walk runs in its own fresh process (`--threads` torch threads). Memory: the peak resident set growth of
that process during the walk, i.e. VmHWM after the walk minus VmRSS before it, with the peak reset just
before the walk by writing 5 to /proc/self/clear_refs (Linux); torch's CPU allocations are outside
tracemalloc's view, so RSS is the honest figure. Labels follow IRN's make_sem_seg_labels: the walk's scores
upsampled x4 (bilinear), divided by their maximum, a background plane at 0.25, argmax. The dense walk is
skipped (with the reason printed) when its matrices alone would exceed --max-dense-gib.

    python benchmarks/random_walk_memory.py --threads 1 --out benchmarks/results/random_walk_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
GIB = 2**30


def proc_kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status, in KiB (VmRSS: now, VmHWM: peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS; False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def child(args: argparse.Namespace) -> None:
    """Run one walk on saved inputs in this process, save its scores and print one JSON line."""
    import torch

    torch.set_num_threads(args.threads)
    from weakseg.refine.random_walk import dense_random_walk, random_walk

    with np.load(args.inputs) as z:
        scores, edge = torch.from_numpy(z["scores"]), torch.from_numpy(z["edge"])
    walk = random_walk if args.method == "sparse" else dense_random_walk
    walk(scores[:, :4, :4].contiguous(), edge[:4, :4].contiguous(), beta=args.beta, steps=2)  # warm the kernels
    reset = reset_peak()
    before = proc_kib("VmRSS")
    t0 = time.perf_counter()
    rw = walk(scores, edge, beta=args.beta, steps=args.steps)
    seconds = time.perf_counter() - t0
    peak = proc_kib("VmHWM")
    np.save(args.result, rw.numpy())
    print(
        json.dumps(
            {
                "method": args.method,
                "seconds": round(seconds, 3),
                "peak_reset": reset,
                "rss_before_mib": round(before / 1024, 1),
                "peak_rss_mib": round(peak / 1024, 1),
                "peak_growth_mib": round((peak - before) / 1024, 1),
                "threads": torch.get_num_threads(),
                "load_average_1min_after": round(os.getloadavg()[0], 2),  # the machine is shared: context for times
            }
        )
    )


def inputs(px: int, stride: int, seed: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(scores [K,h,w], edge [h,w]) float32 at the stride for one seeded benchmark image of px x px, and its facts."""
    import torch
    import torch.nn.functional as F

    from weakseg.data.classes import IGNORE_INDEX
    from weakseg.data.synth import SynthConfig, render_sample_detailed

    sample = render_sample_detailed(SynthConfig(seed=seed, size=px), np.random.default_rng(seed))
    inst = sample.instance_mask.astype(np.int64)
    boundary = np.zeros(inst.shape, bool)
    boundary[:, 1:] |= inst[:, 1:] != inst[:, :-1]
    boundary[1:] |= inst[1:] != inst[:-1]
    boundary |= inst == IGNORE_INDEX

    def pool(a: np.ndarray, how: str) -> torch.Tensor:
        t = torch.from_numpy(a.astype(np.float32))[None, None]
        t = F.max_pool2d(t, stride, ceil_mode=True) if how == "max" else F.avg_pool2d(t, stride, ceil_mode=True)
        return F.avg_pool2d(t, 3, stride=1, padding=1, count_include_pad=False)[0, 0]  # one 3x3 smoothing

    edge = pool(boundary, "max").clamp(0, 1)
    labels = sorted({o["label"] for o in sample.objects})
    planes = []
    for c in labels:
        ids = [o["instance"] for o in sample.objects if o["label"] == c]
        plane = pool(np.isin(sample.part_mask, ids), "mean")
        planes.append(plane / plane.max().clamp(min=1e-6))
    scores = torch.stack(planes)
    facts = {"image_px": [int(s) for s in inst.shape], "nodes": [int(s) for s in edge.shape], "classes": labels}
    return scores.numpy(), edge.numpy(), facts


def irn_labels(rw: np.ndarray, image_hw: tuple[int, int], stride: int, bg: float) -> np.ndarray:
    """IRN's semantic label indices from walk scores: upsample by the stride, / max, background plane, argmax."""
    import torch
    import torch.nn.functional as F

    up = F.interpolate(torch.from_numpy(rw)[None], scale_factor=stride, mode="bilinear", align_corners=False)[0]
    up = up[:, : image_hw[0], : image_hw[1]]
    up = up / up.max().clamp(min=1e-12)
    return F.pad(up, (0, 0, 0, 0, 1, 0), value=bg).argmax(0).numpy()


def run_child(method: str, inputs_path: Path, result: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One walk in a fresh process; its JSON record."""
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": str(args.threads),
        "MKL_NUM_THREADS": str(args.threads),
    }
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "--method",
        method,
        "--inputs",
        str(inputs_path),
        "--result",
        str(result),
        "--steps",
        str(args.steps),
        "--beta",
        str(args.beta),
        "--threads",
        str(args.threads),
    ]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{method} walk failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(rows: list[dict[str, Any]]) -> str:
    """The Markdown table of the measurements."""
    head = (
        "| image px | nodes | K | sparse s | sparse peak MiB | dense s | dense peak MiB | dense matrices GiB "
        "| labels equal | max abs score diff (rel.) |"
    )
    lines = [head, "| " + " | ".join(["---"] * 10) + " |"]
    for r in rows:
        s, d = r["sparse"], r.get("dense")
        dense = f"{d['seconds']:.1f} | {d['peak_growth_mib']:.0f}" if d else "skipped | skipped"
        eq = f"{r['labels_equal']:.6f}" if d else "-"
        diff = f"{r['max_abs_score_diff']:.2e} ({r['max_rel_score_diff']:.2e})" if d else "-"
        lines.append(
            f"| {r['image_px'][0]} | {r['nodes'][0]}x{r['nodes'][1]} | {len(r['classes'])} | {s['seconds']:.2f} "
            f"| {s['peak_growth_mib']:.1f} | {dense} | {r['dense_matrices_gib']:.2f} | {eq} | {diff} |"
        )
    return "\n".join(lines)


def main() -> None:
    """Measure every size, print the table, write the JSON."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512], help="image sides (px)")
    p.add_argument("--stride", type=int, default=4, help="the walk's stride (IRN: 4)")
    p.add_argument("--steps", type=int, default=256, help="walk steps (IRN: exp_times 8 = 256)")
    p.add_argument("--beta", type=float, default=10.0)
    p.add_argument("--bg", type=float, default=0.25, help="background plane of the labels (IRN's sem_seg_bg_thres)")
    p.add_argument("--seed", type=int, default=0, help="the benchmark image's seed")
    p.add_argument("--threads", type=int, default=1, help="torch threads of each walk's process")
    p.add_argument(
        "--max-dense-gib",
        type=float,
        default=8.0,
        help="skip the dense walk where its matrices alone would need more than this (GiB)",
    )
    p.add_argument("--work", type=Path, default=None, help="folder for inputs and outputs (default: a temp folder)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "random_walk_memory.json")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--method", choices=["sparse", "dense"], help=argparse.SUPPRESS)
    p.add_argument("--inputs", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    sys.path.insert(0, str(REPO))
    import torch

    from weakseg.io import atomic_write_json
    from weakseg.refine.random_walk import dense_walk_bytes, neighbour_offsets, random_walk

    work = args.work or Path(tempfile.mkdtemp(prefix="rw_memory_"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for px in args.sizes:
        scores, edge, facts = inputs(px, args.stride, args.seed)
        inputs_path = work / f"inputs_{px}.npz"
        np.savez(inputs_path, scores=scores, edge=edge)
        h, w = edge.shape
        need = dense_walk_bytes(h, w)
        row: dict[str, Any] = {
            **facts,
            "dense_matrices_gib": round(need / GIB, 3),
            "sparse_weights_mib": round(len(neighbour_offsets()) * h * w * 8 / 2**20, 2),  # float64 inside
        }
        print(f"{px} px: {h}x{w} nodes, {len(facts['classes'])} classes; sparse walk ...", flush=True)
        row["sparse"] = run_child("sparse", inputs_path, work / f"sparse_{px}.npy", args)
        print(f"  sparse: {json.dumps(row['sparse'])}", flush=True)
        if need > args.max_dense_gib * GIB:
            row["dense"] = None
            row["dense_skipped"] = f"its matrices need {need / GIB:.2f} GiB > --max-dense-gib {args.max_dense_gib}"
            print(f"  dense: skipped, {row['dense_skipped']}", flush=True)
        else:
            print(f"  dense walk ({need / GIB:.2f} GiB of matrices) ...", flush=True)
            row["dense"] = run_child("dense", inputs_path, work / f"dense_{px}.npy", args)
            print(f"  dense: {json.dumps(row['dense'])}", flush=True)
            sparse_rw, dense_rw = np.load(work / f"sparse_{px}.npy"), np.load(work / f"dense_{px}.npy")
            diff = float(np.abs(sparse_rw - dense_rw).max())
            hw = (facts["image_px"][0], facts["image_px"][1])
            ls, ld = irn_labels(sparse_rw, hw, args.stride, args.bg), irn_labels(dense_rw, hw, args.stride, args.bg)
            # Which float32 walk is nearer the exact one: the sparse walk in float64 (equal to the dense in float64
            # to ~1e-13, tests/test_random_walk.py) as the reference.
            exact = random_walk(
                torch.from_numpy(scores).double(), torch.from_numpy(edge).double(), beta=args.beta, steps=args.steps
            ).numpy()
            le = irn_labels(exact.astype(np.float32), hw, args.stride, args.bg)
            row.update(
                {
                    "labels_equal": float((ls == ld).mean()),
                    "label_pixels_different": int((ls != ld).sum()),
                    "label_pixels": int(ls.size),
                    "max_abs_score_diff": diff,
                    "max_rel_score_diff": diff / max(float(np.abs(dense_rw).max()), 1e-12),
                    "node_argmax_equal": float((sparse_rw.argmax(0) == dense_rw.argmax(0)).mean()),
                    "float64_reference": {
                        "sparse_max_abs_diff": float(np.abs(sparse_rw - exact).max()),
                        "dense_max_abs_diff": float(np.abs(dense_rw - exact).max()),
                        "sparse_labels_equal": float((ls == le).mean()),
                        "dense_labels_equal": float((ld == le).mean()),
                    },
                }
            )
        rows.append(row)
    report = {
        "command": " ".join(["python", "benchmarks/random_walk_memory.py", *sys.argv[1:]]),
        "walk": {
            "stride": args.stride,
            "steps": args.steps,
            "beta": args.beta,
            "radius": 5,
            "dtype": "float32",
            "labels": f"x{args.stride} bilinear, / max, background {args.bg}, argmax (IRN make_sem_seg_labels)",
        },
        "inputs": f"synthetic benchmark image (seed {args.seed}), oracle instance boundaries, CAM-like part scores",
        "memory": "peak RSS growth of a fresh process during the walk: VmHWM after minus VmRSS before "
        "(peak reset by /proc/self/clear_refs)",
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "threads": args.threads,
        },
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, report)
    print(table(rows))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

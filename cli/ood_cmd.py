"""`weakseg ood mine|review`: hard-OoD mining and its review; the W-OoD options of `weakseg train classifier --ood`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from cli.common import add_device, add_parser, add_threads
from weakseg.device import resolve_device, set_threads
from weakseg.errors import WeaksegError
from weakseg.ood.losses import DEFAULT_VARIANT, VARIANT_LOSS, VARIANT_TRAINING, WOOD_VARIANTS, WoodLossConfig

# the variant-dependent flags: --wood-<name> (WoodLossConfig or WoodJob field) -> {variant: default}
VARIANT_DEFAULTS = {
    name: {v: {**VARIANT_LOSS[v], **VARIANT_TRAINING[v]}[name] for v in WOOD_VARIANTS}
    for name in (*VARIANT_LOSS[DEFAULT_VARIANT], *VARIANT_TRAINING[DEFAULT_VARIANT])
}


def _by_variant(name: str) -> str:
    """'[text X, code Y]' for a variant-dependent flag's help."""
    return "[" + ", ".join(f"{v} {VARIANT_DEFAULTS[name][v]}" for v in sorted(WOOD_VARIANTS, reverse=True)) + "]"


def register(sub: argparse._SubParsersAction) -> None:
    """Add `ood mine` and `ood review`."""
    ood = add_parser(sub, "ood", "hard out-of-distribution images for W-OoD: mine candidates, review them")
    osub = ood.add_subparsers(dest="ood_command", metavar="STEP")
    osub.required = True
    p = add_parser(
        osub, "mine", "score every OoD pool image with the classifier; keep and rank those with p(c) >= threshold"
    )
    p.add_argument("--model", type=Path, required=True, help="in-distribution classifier (run folder or .safetensors)")
    p.add_argument(
        "--pool",
        type=Path,
        required=True,
        help="candidate OoD folder (the benchmark's <VOC2012>/OoD, or a folder of images)",
    )
    p.add_argument(
        "--out", type=Path, required=True, help="output folder (mine.json, scores.csv, candidates.csv, per_class/)"
    )
    p.add_argument("--threshold", type=float, default=0.5, help="keep images with p(c) >= threshold for some class c")
    p.add_argument("--batch-size", type=int, default=16, help="images per forward pass")
    add_device(p)
    add_threads(p)
    p.set_defaults(func=run_mine)

    p = add_parser(
        osub,
        "review",
        "review mined candidates: a local web page (keep = hard OoD, reject = contains a class), "
        "or --oracle / --accept-all without a person",
    )
    p.add_argument(
        "--candidates", type=Path, required=True, help="mining folder; decisions go to its review.json (resumes)"
    )
    p.add_argument("--host", default="127.0.0.1", help="address the page is served on")
    p.add_argument("--port", type=int, default=8765, help="port of the page (0: any free port)")
    p.add_argument("--exit-when-done", action="store_true", help="stop serving once every candidate is decided")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--oracle", action="store_true", help="decide from the synthetic benchmark's truth.csv (unattended experiments)"
    )
    mode.add_argument(
        "--accept-all", action="store_true", help="keep every candidate unchecked (no review, no label cost)"
    )
    p.add_argument("--truth", type=Path, default=None, help="truth.csv for --oracle (default: the pool's)")
    p.set_defaults(func=run_review)


def add_wood_options(p: argparse.ArgumentParser) -> None:
    """The W-OoD options of `train classifier` (active with --ood); defaults are the library's (weakseg.ood.losses)."""
    from training.wood import WoodJob

    loss = WoodLossConfig()
    job = {f.name: f.default for f in dataclasses.fields(WoodJob) if f.default is not dataclasses.MISSING}
    g = p.add_argument_group("W-OoD (with --ood; dissertation Sec. 4.3.2)")
    g.add_argument(
        "--init",
        type=Path,
        default=None,
        help="fine-tune this classifier (run or .safetensors) instead of training from scratch; required with --ood",
    )
    g.add_argument(
        "--ood",
        type=Path,
        default=None,
        help="hard OoD set: a reviewed mining folder (its keeps), review.json, or a text list of image paths",
    )
    g.add_argument(
        "--ood-batch-size",
        type=int,
        default=job["ood_batch_size"],
        help="OoD images per step (beside --batch-size in-distribution images)",
    )
    g.add_argument(
        "--wood-variant",
        default=DEFAULT_VARIANT,
        choices=sorted(WOOD_VARIANTS, reverse=True),
        help="defaults of the flags below: the authors' code (OoD weight 0.25, mean reduction with the pull term "
        "times |C|/K, batch-wide top-tau, centres once, one anti-adversarial step), or the dissertation's "
        "text (sums: unbounded below on raw features, it diverged on both benchmarks; README)",
    )
    g.add_argument("--wood-lambda", type=float, default=loss.lam, help="lambda of L = L_cls + lambda L_d")
    g.add_argument(
        "--wood-tau", type=float, default=loss.tau, help="share of the OoD clusters counted as closest (0.2 = 20%%)"
    )
    g.add_argument(
        "--wood-k",
        type=int,
        default=loss.k_max,
        help="K-means clusters of the OoD features: K = min(this, number of OoD images)",
    )
    g.add_argument(
        "--wood-ood-weight", type=float, default=None, help=f"weight of BCE(F(x_ood), 0) {_by_variant('ood_weight')}"
    )
    g.add_argument("--wood-no-pull", action="store_true", help="drop L_d's in-distribution (class-centre) term")
    g.add_argument("--wood-no-push", action="store_true", help="drop L_d's OoD (cluster) term")
    g.add_argument("--wood-distance", default=loss.distance, choices=["euclidean", "squared"], help="d of Eq. 4.1")
    g.add_argument(
        "--wood-features",
        default=loss.features,
        choices=["raw", "unit"],
        help="L_d on the raw features z (text, code) or on z/||z|| (bounded; raw L_d can be lowered without "
        "bound by scaling z up)",
    )
    g.add_argument(
        "--wood-reduction",
        default=None,
        choices=["sum", "mean"],
        help=f"sum over classes/clusters (Eq. 4.2) or mean {_by_variant('reduction')}",
    )
    g.add_argument(
        "--wood-in-scale",
        default=None,
        choices=["one", "classes_over_k"],
        help=f"factor on the pull term (classes_over_k: |C|/K) {_by_variant('in_scale')}",
    )
    g.add_argument(
        "--wood-scope",
        default=None,
        choices=["image", "batch"],
        help=f"top-tau per image or over the batch {_by_variant('scope')}",
    )
    g.add_argument(
        "--wood-centre-every",
        type=int,
        default=None,
        help=f"recompute centres every N epochs; 0 = once before training {_by_variant('centre_every')}",
    )
    g.add_argument(
        "--wood-adv-steps",
        type=int,
        default=None,
        help=f"anti-adversarial steps on OoD images {_by_variant('adv_steps')}",
    )
    g.add_argument(
        "--wood-adv-xi",
        type=float,
        default=job["adv_xi"],
        help="anti-adversarial step on [0,1] pixels (the code's 0.07 normalised)",
    )
    g.add_argument(
        "--wood-kmeans-iters", type=int, default=job["kmeans_iters"], help="maximum Lloyd iterations of K-means"
    )
    g.add_argument(
        "--wood-bn",
        default=job["bn"],
        choices=["frozen", "train"],
        help="BatchNorm during the fine-tune: frozen keeps the initial classifier's statistics, so training features "
        "match the eval-mode features the centres come from and OoD batches do not shift the statistics CAM uses",
    )
    g.add_argument(
        "--select",
        default=job["select"],
        choices=["last", "val_loss"],
        help="checkpoint kept: the last epoch, or the lowest image-level validation BCE (never pixel labels)",
    )


def _variant(args: argparse.Namespace, name: str):
    value = getattr(args, f"wood_{name}")
    return value if value is not None else VARIANT_DEFAULTS[name][args.wood_variant]


def wood_job_from_args(args: argparse.Namespace, classifier_job):
    """The training tier's WoodJob from the parsed W-OoD options and a ClassifierJob."""
    from training.wood import WoodJob

    loss = WoodLossConfig(
        lam=args.wood_lambda,
        tau=args.wood_tau,
        k_max=args.wood_k,
        ood_weight=_variant(args, "ood_weight"),
        pull=not args.wood_no_pull,
        push=not args.wood_no_push,
        distance=args.wood_distance,
        reduction=_variant(args, "reduction"),
        in_scale=_variant(args, "in_scale"),
        scope=_variant(args, "scope"),
        features=args.wood_features,
    )
    return WoodJob(
        classifier=classifier_job,
        ood=args.ood,
        loss=loss,
        ood_batch_size=args.ood_batch_size,
        centre_every=_variant(args, "centre_every"),
        adv_steps=_variant(args, "adv_steps"),
        adv_xi=args.wood_adv_xi,
        kmeans_iters=args.wood_kmeans_iters,
        select=args.select,
        bn=args.wood_bn,
    ).validate()


def run_mine(args: argparse.Namespace) -> int:
    """Score the pool and write the ranked candidates; print the summary as JSON."""
    from weakseg.models.checkpoint import file_sha256
    from weakseg.models.classifier_io import load_classifier
    from weakseg.ood.mining import score_pool, write_mining
    from weakseg.ood.pool import open_pool

    set_threads(args.threads)
    device = resolve_device(args.device)
    if args.batch_size < 1:
        raise WeaksegError("--batch-size must be >= 1")
    pool = open_pool(args.pool)
    model, classes = load_classifier(args.model, device)
    t0 = time.time()
    scores = score_pool(model, pool, device, args.batch_size)
    summary = write_mining(
        args.out,
        pool,
        classes,
        scores,
        args.threshold,
        {"model": str(args.model), "model_sha256": file_sha256(args.model)},
    )
    print(json.dumps({"out": str(args.out), "seconds": round(time.time() - t0, 2), **summary}))
    return 0


def run_review(args: argparse.Namespace) -> int:
    """Review candidates (page, oracle or accept-all) and print the review summary as JSON."""
    from training.ood_review import ReviewServer, accept_all, oracle_review
    from weakseg.ood.decisions import ReviewLog

    log = ReviewLog(args.candidates)
    if args.oracle:
        oracle_review(log, args.truth)
    elif args.accept_all:
        accept_all(log)
    elif log.pending():
        server = ReviewServer(log, args.host, args.port).start()
        print(
            f"review page: {server.url}  ({len(log.pending())} of {len(log.candidates)} candidates pending; "
            f"decisions are saved to {log.path} as you go; Ctrl-C to stop)",
            flush=True,
        )
        try:
            while not (args.exit_when_done and not log.pending()):
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            server.shutdown()
    print(json.dumps({"review": str(log.path), **log.summary().to_json()}))
    return 0

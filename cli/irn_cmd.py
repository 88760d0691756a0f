"""`weakseg train irn` (hooked into the `train` parser): IRN's boundary and displacement branches."""

from __future__ import annotations

import argparse
from pathlib import Path

from weakseg.device import resolve_device, set_threads
from weakseg.errors import WeaksegError


def register_irn(tsub: argparse._SubParsersAction) -> None:
    """Add `train irn` to the `train` parser's trainers."""
    from cli.common import add_parser
    from cli.train_cmd import add_train_options

    p = add_parser(
        tsub,
        "irn",
        "train IRN (boundary + displacement branches on the classifier's frozen backbone) on a maps folder",
        description="Train IRN (Ahn et al. 2019) on inter-pixel affinity labels from the confident seeds of "
        "a maps folder (fg 0.30 / bg 0.05 with CRF, cached in RUN/ir_labels/), pairs within --radius at stride 4. "
        "The boundary map it learns drives `IRNRefiner`'s random walk. The authors' recipe: 3 epochs, SGD lr 0.1 "
        "poly (x10 for the displacement branch), weight decay 1e-4, crop 512, batch 32 on GPUs; the batch default "
        "here is 8, which keeps a CPU step short (pass --batch-size 32 on a GPU). Re-running into the same --out "
        "resumes.",
    )
    p.add_argument(
        "--maps", type=Path, required=True, help="pseudo-label folder (`weakseg pseudo --out`: maps/, manifest.json)"
    )
    add_train_options(
        p,
        epochs=3,
        batch_size=8,
        lr=0.1,
        lr_help="peak learning rate of the boundary branch (poly decay); the displacement branch gets "
        "--head-lr-mult times it (the authors' 0.1 and x10)",
    )
    p.set_defaults(optimizer="sgd")  # the authors' PolyOptimizer (SGD)
    p.add_argument(
        "--model",
        type=Path,
        default=None,
        help="classifier run folder or .safetensors whose backbone IRN sits on [default: the one the maps' "
        "manifest records]",
    )
    p.add_argument("--split", default=None, help="training split [default: the maps' split]")
    p.add_argument(
        "--crop",
        type=int,
        default=None,
        help="square training crop, a multiple of 4 [default: min(512, the largest image side), the authors' 512 "
        "scaled to the images]",
    )
    p.add_argument(
        "--scale-range", type=float, nargs=2, default=[0.5, 1.5], metavar=("MIN", "MAX"), help="random rescale range"
    )
    p.add_argument(
        "--radius",
        type=int,
        default=10,
        help="pair radius in stride-4 cells (the authors' training PathIndex; the crop must exceed 8 x (radius - 1))",
    )
    p.add_argument("--fg-thresh", type=float, default=0.30, help="confident foreground of the ir label (IRN: 0.30)")
    p.add_argument("--bg-thresh", type=float, default=0.05, help="confident background of the ir label (IRN: 0.05)")
    p.add_argument("--no-crf", action="store_true", help="ir labels without the dense CRF (IRN uses it)")
    p.add_argument(
        "--skip-missing", action="store_true", help="train on the images that have maps instead of refusing the split"
    )
    p.add_argument(
        "--head-lr-mult", type=float, default=10.0, help="learning-rate multiplier of the displacement branch"
    )
    p.add_argument(
        "--momentum",
        type=float,
        default=1e-4,
        help="SGD momentum (the authors' PolyOptimizer passes its weight decay, 1e-4, into SGD's momentum slot)",
    )
    p.add_argument("--edge-width", type=int, default=32, help="channels per stage of the boundary branch")
    p.add_argument(
        "--disp-width", type=int, default=0, help="width of the displacement branch (0: penultimate stage channels / 4)"
    )
    p.set_defaults(func=run_irn)


def run_irn(args: argparse.Namespace) -> int:
    """Train an IRN and print its final record as JSON."""
    from cli.train_cmd import print_fit_result, train_config_from_args
    from training.irn import IRNJob, train_irn

    if not 0 <= args.bg_thresh <= args.fg_thresh <= 1:
        raise WeaksegError(f"need 0 <= --bg-thresh <= --fg-thresh <= 1, got {args.bg_thresh} and {args.fg_thresh}")
    set_threads(args.threads)
    device = resolve_device(args.device)
    train = train_config_from_args(args)
    train.momentum = args.momentum
    job = IRNJob(
        maps=args.maps,
        data=args.data,
        out=args.out,
        model=args.model,
        split=args.split,
        crop=args.crop,
        scale_range=(args.scale_range[0], args.scale_range[1]),
        radius=args.radius,
        fg_thresh=args.fg_thresh,
        bg_thresh=args.bg_thresh,
        crf=not args.no_crf,
        skip_missing=args.skip_missing,
        edge_width=args.edge_width,
        disp_width=args.disp_width,
        train=train,
    )
    return print_fit_result(args.out, train_irn(job, device, progress=not args.quiet))

"""`weakseg synth`: write the procedural VOC-layout benchmark (see weakseg.data.synth)."""

from __future__ import annotations

import argparse
import os

from cli.common import add_parser

DESCRIPTION = """\
Generate a procedural benchmark in PASCAL VOC 2012 layout (JPEGImages, SegmentationClass,
SegmentationObject, Annotations, ImageSets/Segmentation, classes.txt, synth.json) plus an OoD pool
(OoD/JPEGImages, OoD/ImageSets/pool.txt, OoD/truth.csv).

It reproduces the two problems weak supervision faces: each class has a small distinctive PART on a
BODY with only weak class evidence (partial activation), and a preferred background CONTEXT that
co-occurs with it (spurious correlation). Output is byte-identical for a given --seed and knobs."""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `synth` subcommand."""
    from weakseg.data.synth import CLASS_DESIGNS, SynthConfig

    d = SynthConfig()
    p = add_parser(
        sub, "synth", help="generate the procedural VOC-layout benchmark with an OoD pool", description=DESCRIPTION
    )
    p.add_argument("--out", required=True, default=argparse.SUPPRESS, help="output folder (plays the role of VOC2012/)")
    p.add_argument(
        "--seed", type=int, default=d.seed, help="random seed; output is a pure function of it and the knobs"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a previous benchmark in --out (refuses folders holding other files)",
    )
    p.add_argument("--workers", type=int, default=1, help="processes; does not change the output")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    g = p.add_argument_group("sizes")
    g.add_argument("--train", type=int, default=d.train, help="train images")
    g.add_argument("--val", type=int, default=d.val, help="val images")
    g.add_argument("--ood", type=int, default=d.ood, help="OoD pool images")
    g.add_argument("--classes", type=int, default=d.classes, help=f"foreground classes (1..{len(CLASS_DESIGNS)})")
    g.add_argument("--size", type=int, default=d.size, help="image side in pixels")
    g.add_argument(
        "--size-jitter",
        type=float,
        default=d.size_jitter,
        help="each image side varies by up to this fraction (0 = all square --size)",
    )

    g = p.add_argument_group("objects")
    g.add_argument("--max-instances", type=int, default=d.max_instances, help="instances per image: 1..this")
    g.add_argument("--max-classes", type=int, default=d.max_classes, help="classes per image: 1..this (mostly 1-2)")
    g.add_argument(
        "--min-size", type=float, default=d.min_size, help="smallest object extent, fraction of the image side"
    )
    g.add_argument(
        "--max-size", type=float, default=d.max_size, help="largest object extent, fraction of the image side"
    )
    g.add_argument(
        "--min-visible",
        type=float,
        default=d.min_visible,
        help="drop an instance (not drawn, not labelled) when less than this fraction stays visible",
    )
    g.add_argument("--min-pixels", type=int, default=d.min_pixels, help="drop an instance with fewer visible pixels")
    g.add_argument(
        "--void-width",
        type=int,
        default=d.void_width,
        help="void (255) band on each side of every instance boundary, in pixels (0 = none)",
    )

    g = p.add_argument_group("the two phenomena")
    g.add_argument(
        "--part-fraction",
        type=float,
        nargs=2,
        metavar=("LO", "HI"),
        default=list(d.part_fraction),
        help="area of the distinctive part as a fraction of the object, drawn in [LO, HI]",
    )
    g.add_argument(
        "--body-strength",
        type=float,
        default=d.body_strength,
        help="class evidence in the body: 0 = body identical for all classes, 1 = as distinctive as the part",
    )
    g.add_argument(
        "--camouflage",
        type=float,
        default=d.camouflage,
        help="blend each body towards a fresh draw of its image's background texture (0 = off, 1 = the body has "
        "the background's colours), so that colour no longer separates object from background",
    )
    g.add_argument(
        "--context-prob",
        type=float,
        default=d.context_prob,
        help="probability that an image shows the preferred context of one of its classes",
    )
    g.add_argument(
        "--class-context-prob",
        type=float,
        nargs="+",
        default=None,
        metavar="P",
        help="one context probability per class, in class order, instead of --context-prob (some classes "
        "strongly context-correlated, others weakly)",
    )
    g.add_argument(
        "--neutral-prob",
        type=float,
        default=d.neutral_prob,
        help="otherwise: probability of a neutral background (else an absent class's context)",
    )

    g = p.add_argument_group("OoD pool")
    g.add_argument(
        "--ood-context",
        type=float,
        default=d.ood_context,
        help="fraction of OoD images showing a class's context alone (hard OoD)",
    )
    g.add_argument(
        "--ood-foreground",
        type=float,
        default=d.ood_foreground,
        help="fraction of OoD images that do contain a class object (label noise, truth.csv says so); "
        "the rest are neutral or novel backgrounds",
    )

    g = p.add_argument_group("photometry")
    g.add_argument("--noise", type=float, default=d.noise, help="Gaussian pixel noise sigma (0..255 scale)")
    g.add_argument(
        "--photometric",
        type=float,
        default=d.photometric,
        help="global brightness/contrast/colour-gain jitter amplitude",
    )
    g.add_argument("--blur", type=float, default=d.blur, help="strength of a global 3x3 blur (0 = sharp)")
    g.add_argument("--jpeg-quality", type=int, default=d.jpeg_quality, help="JPEG quality of the images")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the config, generate, print a summary."""
    from weakseg.data.synth import SynthConfig, generate

    cfg = SynthConfig(
        seed=args.seed,
        train=args.train,
        val=args.val,
        ood=args.ood,
        classes=args.classes,
        size=args.size,
        size_jitter=args.size_jitter,
        min_size=args.min_size,
        max_size=args.max_size,
        max_instances=args.max_instances,
        max_classes=args.max_classes,
        part_fraction=(float(args.part_fraction[0]), float(args.part_fraction[1])),
        body_strength=args.body_strength,
        camouflage=args.camouflage,
        context_prob=args.context_prob,
        class_context_prob=tuple(args.class_context_prob or ()),
        neutral_prob=args.neutral_prob,
        min_visible=args.min_visible,
        min_pixels=args.min_pixels,
        void_width=args.void_width,
        noise=args.noise,
        photometric=args.photometric,
        blur=args.blur,
        ood_context=args.ood_context,
        ood_foreground=args.ood_foreground,
        jpeg_quality=args.jpeg_quality,
    )
    s = generate(cfg, args.out, progress=not args.no_progress, workers=max(1, args.workers), overwrite=args.overwrite)
    k = s["ood_kinds"]
    print(
        f"synth: {s['train']} train + {s['val']} val images, {s['objects']} objects "
        f"({s['objects_per_image']:.2f}/image, {s['dropped_occluded']} dropped as occluded), "
        f"{len(s['classes'])} classes"
    )
    print(
        f"synth: context matched on {100 * s['context_matched_fraction']:.1f}% of labelled images; "
        f"OoD pool {s['ood']} images: {k['context']} context-only, {k['unrelated']} unrelated, "
        f"{k['foreground']} with an unlabelled object"
    )
    print(f"synth: wrote {os.path.abspath(s['out'])} in {s['seconds']:.1f} s")
    return 0

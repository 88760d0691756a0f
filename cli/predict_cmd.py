"""`weakseg predict`: offline segmentation of a folder of arbitrary images into mask PNGs (and overlays)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cli.common import add_device, add_parser, add_threads
from cli.segmenter_cmd import add_inference_options, inference_config

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def register(sub: argparse._SubParsersAction) -> None:
    """Add `predict`."""
    p = add_parser(
        sub,
        "predict",
        "segment a folder of images with a trained segmenter into VOC-palette mask PNGs",
        description="Writes <out>/<stem>.png (palette PNG: 0 background, i = i-th class) for every image "
        "in --images (not recursive), and with --overlay <out>/overlays/<stem>.png.",
    )
    p.add_argument("--model", type=Path, required=True, help="segmenter run folder or .safetensors file")
    p.add_argument("--images", type=Path, required=True, help="folder of images (jpg, png, bmp, webp, tif)")
    p.add_argument("--out", type=Path, required=True, help="output folder for masks")
    p.add_argument("--overlay", action="store_true", help="also write colour overlays of the masks on the images")
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip images that do not decode (listed in the summary) instead of stopping",
    )
    add_inference_options(p)
    add_device(p)
    add_threads(p)
    p.set_defaults(func=run)


def list_images(folder: Path) -> list[Path]:
    """Image files directly under folder, sorted; DataError if none or two share a stem."""
    from weakseg.errors import DataError

    if not folder.is_dir():
        raise DataError(f"{folder}: image folder not found")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    stems: dict[str, Path] = {}
    for f in files:
        if f.stem in stems:
            raise DataError(f"{f}: shares its name with {stems[f.stem].name}; masks would overwrite each other")
        stems[f.stem] = f
    return files


def run(args: argparse.Namespace) -> int:
    """Segment every image; print a JSON summary on the last line."""
    from tqdm import tqdm

    from weakseg.data.classes import voc_palette
    from weakseg.device import resolve_device, set_threads
    from weakseg.errors import DataError
    from weakseg.io import atomic_save_png, read_rgb
    from weakseg.models.segmenter_infer import segment
    from weakseg.models.segmenter_io import load_segmenter
    from weakseg.report.overlay import mask_overlay

    set_threads(args.threads)
    device = resolve_device(args.device)
    cfg = inference_config(args)
    files = list_images(args.images)
    model, classes = load_segmenter(args.model, device)
    palette = voc_palette()
    written, skipped = 0, []
    for path in tqdm(files, desc="predict", unit="img", file=sys.stderr):
        try:
            image = read_rgb(path)
        except DataError as e:
            if not args.skip_bad:
                raise
            skipped.append({"image": str(path), "error": str(e)})
            continue
        mask = segment(model, image, device, cfg)
        atomic_save_png(args.out / f"{path.stem}.png", mask, palette=palette)
        if args.overlay:
            atomic_save_png(args.out / "overlays" / f"{path.stem}.png", mask_overlay(image, mask))
        written += 1
    print(
        json.dumps(
            {
                "out": str(args.out),
                "images": len(files),
                "written": written,
                "skipped": skipped,
                "classes": ["background", *classes],
            }
        )
    )
    return 0

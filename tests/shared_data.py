"""Where the real sample data lives: vendored under tests/data (see its README.md and PROVENANCE.tsv)."""

from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parent / "data"
VOC_SAMPLE = SHARED_DATA / "voc_sample" / "VOCdevkit" / "VOC2012"
IRN_LISTS = SHARED_DATA / "irn_lists"
COCO_SAMPLE = SHARED_DATA / "coco_sample"

"""Where the real sample data lives: `shared/data` beside the checkout (override with WEAKSEG_SHARED_DATA)."""

import os
from pathlib import Path

SHARED_DATA = Path(os.environ.get("WEAKSEG_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
VOC_SAMPLE = SHARED_DATA / "voc_sample" / "VOCdevkit" / "VOC2012"
IRN_LISTS = SHARED_DATA / "irn_lists"
COCO_SAMPLE = SHARED_DATA / "coco_sample"

"""Label cost of each form of supervision (dissertation Table 2.1) and the sentence every evaluation states:
"X% of full supervision at Y% of its label cost".

Costs are average annotation seconds per image from Bearman et al. and Bellver et al. as quoted in Table 2.1.
A hard-OoD review (W-OoD, Chapter 4) is a person checking a candidate image for foreground objects; the
dissertation puts it "at the same order of magnitude as collecting the category labels", so each image
checked is counted at the class-tag cost (REVIEW_SECONDS_PER_IMAGE).
"""

from __future__ import annotations

from dataclasses import dataclass

from weakseg.errors import WeaksegError

SECONDS_PER_IMAGE: dict[str, float] = {
    "class": 20.0,  # image-level class tags
    "point": 22.2,
    "box": 38.1,  # bounding boxes
    "scribble": 34.9,
    "full": 239.7,  # pixel-level masks
}
REVIEW_SECONDS_PER_IMAGE = SECONDS_PER_IMAGE["class"]  # one hard-OoD candidate checked by a person


def label_cost_seconds(supervision: str, images: int, reviewed: int = 0) -> float:
    """Annotation seconds for `images` training images under `supervision` plus `reviewed` hard-OoD checks."""
    if supervision not in SECONDS_PER_IMAGE:
        raise WeaksegError(f"unknown supervision {supervision!r}; choose from {', '.join(SECONDS_PER_IMAGE)}")
    if images < 1 or reviewed < 0:
        raise WeaksegError(f"label cost needs images >= 1 and reviewed >= 0, got {images} and {reviewed}")
    return SECONDS_PER_IMAGE[supervision] * images + REVIEW_SECONDS_PER_IMAGE * reviewed


def cost_fraction(supervision: str, images: int = 1, reviewed: int = 0) -> float:
    """Label cost relative to full masks on the same training images (class tags: 20/239.7 = 0.083)."""
    return label_cost_seconds(supervision, images, reviewed) / label_cost_seconds("full", images)


@dataclass(frozen=True)
class SupervisionRatio:
    """A weakly supervised result against its fully supervised equivalent, with the label cost it took."""

    weak_miou: float
    full_miou: float
    supervision: str
    images: int
    reviewed: int = 0

    @property
    def performance(self) -> float:
        """weak mIoU / full mIoU."""
        if not self.full_miou > 0:
            raise WeaksegError(f"the fully supervised mIoU must be positive to form a ratio, got {self.full_miou}")
        return self.weak_miou / self.full_miou

    @property
    def cost(self) -> float:
        """weak label cost / full label cost."""
        return cost_fraction(self.supervision, self.images, self.reviewed)

    def sentence(self) -> str:
        """'X% of full supervision at Y% of its label cost'."""
        return f"{100 * self.performance:.1f}% of full supervision at {100 * self.cost:.1f}% of its label cost"

    def to_json(self) -> dict:
        """The ratio, the cost fraction, the inputs and the sentence."""
        return {
            "weak_miou": self.weak_miou,
            "full_miou": self.full_miou,
            "supervision": self.supervision,
            "images": self.images,
            "hard_ood_reviewed": self.reviewed,
            "performance_ratio": self.performance,
            "label_cost_ratio": self.cost,
            "sentence": self.sentence(),
        }


def ratio_sentence(weak_miou: float, full_miou: float, supervision: str, images: int = 1, reviewed: int = 0) -> str:
    """'X% of full supervision at Y% of its label cost' for one weak result and its full baseline."""
    return SupervisionRatio(weak_miou, full_miou, supervision, images, reviewed).sentence()

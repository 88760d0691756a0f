"""The review-decision file of the manual pruning step (Sec. 4.3.1) and its cost arithmetic.

`<candidates>/review.json` holds, in decision order, one entry per reviewed candidate: keep (no foreground
object: a hard OoD) or reject (contains a class). It is rewritten atomically after every decision and undo, so
a review killed at any moment resumes from the last completed decision. The positive rate r is the share of
rejected images; obtaining n hard OoD images takes n / (1 - r) checks, each counted at the class-label cost.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from weakseg.errors import DataError, WeaksegError
from weakseg.io import atomic_write_json, sha256_file
from weakseg.label_cost import REVIEW_SECONDS_PER_IMAGE
from weakseg.ood.mining import CANDIDATES_NAME, Candidate, read_mining
from weakseg.ood.pool import find_image, read_path_list

REVIEW_NAME = "review.json"
FORMAT = "weakseg-ood-review"
KEEP, REJECT = "keep", "reject"
HUMAN_SOURCES = ("human", "oracle")  # decisions that stand for a person checking the image


@dataclass(frozen=True)
class Decision:
    """One reviewed candidate."""

    image: str
    decision: str  # keep | reject
    cls: str
    score: float
    by: str  # human | oracle | accept-all
    time: float


@dataclass(frozen=True)
class ReviewSummary:
    """Counts of a review, its positive rate and its label cost."""

    candidates: int
    decided: int
    kept: int
    rejected: int
    human_checks: int

    @property
    def positive_rate(self) -> float | None:
        """r: the share of decided candidates that contain a class (None before any decision)."""
        return self.rejected / self.decided if self.decided else None

    @property
    def expected_checks(self) -> float | None:
        """n / (1 - r): checks needed on average for the kept n hard OoD images."""
        r = self.positive_rate
        return None if r is None or r >= 1 else self.kept / (1 - r)

    @property
    def label_seconds(self) -> float:
        """Annotation seconds of the checks a person made (or an oracle stood in for)."""
        return self.human_checks * REVIEW_SECONDS_PER_IMAGE

    def to_json(self) -> dict:
        """JSON with the derived figures."""
        return {
            **asdict(self),
            "pending": self.candidates - self.decided,
            "positive_rate": self.positive_rate,
            "expected_checks": self.expected_checks,
            "seconds_per_check": REVIEW_SECONDS_PER_IMAGE,
            "label_seconds": self.label_seconds,
        }


def _digest(path: Path) -> str:
    return sha256_file(path)


class ReviewLog:
    """The decisions over one mining folder's candidates; every change is written to review.json at once."""

    def __init__(self, folder: str | os.PathLike) -> None:
        """Open (or start) the review of a mining folder; an existing review.json is resumed."""
        self.folder = Path(folder)
        self.meta, self.candidates = read_mining(self.folder)
        self.path = self.folder / REVIEW_NAME
        self.by_image = {c.image: c for c in self.candidates}
        self.candidates_sha256 = _digest(self.folder / CANDIDATES_NAME)
        self.decisions: list[Decision] = []
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        try:
            obj = json.loads(self.path.read_text())
            if obj.get("format") != FORMAT:
                raise ValueError(f"format is {obj.get('format')!r}, expected {FORMAT!r}")
            decisions = [Decision(**d) for d in obj["decisions"]]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(f"{self.path}: unreadable review file ({e})") from e
        if obj.get("candidates_sha256") != self.candidates_sha256:
            raise DataError(f"{self.path}: was made for a different candidates.csv; move it away to start a new review")
        bad = next((d for d in decisions if d.image not in self.by_image or d.decision not in (KEEP, REJECT)), None)
        if bad is not None:
            raise DataError(f"{self.path}: decision {bad.decision!r} for {bad.image!r} does not fit the candidates")
        self.decisions = decisions

    def save(self) -> None:
        """Write review.json atomically."""
        atomic_write_json(
            self.path,
            {
                "format": FORMAT,
                "version": 1,
                "candidates_sha256": self.candidates_sha256,
                "pool": self.meta.get("pool"),
                "images_dir": self.meta.get("images_dir"),
                "decisions": [asdict(d) for d in self.decisions],
            },
        )

    @property
    def decided(self) -> dict[str, Decision]:
        """The decision of every decided image."""
        return {d.image: d for d in self.decisions}

    def pending(self) -> list[Candidate]:
        """Candidates without a decision, in rank order."""
        done = self.decided
        return [c for c in self.candidates if c.image not in done]

    def decide(self, image: str, decision: str, by: str = "human", save: bool = True) -> Decision:
        """Record (or change) the decision for one candidate and write the file."""
        if decision not in (KEEP, REJECT):
            raise WeaksegError(f"decision must be {KEEP!r} or {REJECT!r}, got {decision!r}")
        cand = self.by_image.get(image)
        if cand is None:
            raise WeaksegError(f"{image!r} is not a candidate of {self.folder}")
        self.decisions = [d for d in self.decisions if d.image != image]
        entry = Decision(image, decision, cand.cls, cand.score, by, round(time.time(), 3))
        self.decisions.append(entry)
        if save:
            self.save()
        return entry

    def undo(self) -> Decision | None:
        """Remove the most recent decision (also across restarts) and write the file; None if there is none."""
        if not self.decisions:
            return None
        last = self.decisions.pop()
        self.save()
        return last

    def summary(self) -> ReviewSummary:
        """Counts, positive rate and cost so far."""
        kept = sum(d.decision == KEEP for d in self.decisions)
        human = sum(d.by in HUMAN_SOURCES for d in self.decisions)
        return ReviewSummary(len(self.candidates), len(self.decisions), kept, len(self.decisions) - kept, human)

    def kept_images(self) -> list[Path]:
        """Image files of the candidates kept as hard OoD, in rank order."""
        images_dir = Path(self.meta["images_dir"])
        done = self.decided
        files = [
            find_image(images_dir, c.image)
            for c in self.candidates
            if c.image in done and done[c.image].decision == KEEP
        ]
        missing = next((f for f in files if not f.exists()), None)
        if missing is not None:
            raise DataError(f"{missing}: kept as hard OoD in {self.path} but not found")
        return files


def resolve_ood_images(path: str | os.PathLike) -> list[Path]:
    """The OoD training images named by a review folder or review.json (its keeps) or a text list of paths."""
    path = Path(path)
    if path.is_dir() or path.name == REVIEW_NAME:
        folder = path if path.is_dir() else path.parent
        if not (folder / REVIEW_NAME).is_file():
            raise DataError(f"{folder}: no {REVIEW_NAME}; review the candidates first (`weakseg ood review`)")
        images = ReviewLog(folder).kept_images()
        if not images:
            raise DataError(f"{folder / REVIEW_NAME}: no candidate was kept as hard OoD")
        return images
    if not path.is_file():
        raise DataError(f"{path}: OoD set not found (a review folder, review.json or a list of image paths)")
    return read_path_list(path)

"""The vendored real samples (tests/data): inside the repository, complete, and byte-identical to their sources."""

from __future__ import annotations

import hashlib
from pathlib import Path

from tests.shared_data import COCO_SAMPLE, IRN_LISTS, SHARED_DATA, VOC_SAMPLE

REPO = Path(__file__).resolve().parents[1]
# Files made for the sample (filtered lists, a 34-image subset), not copied from a source repository.
DERIVED = {
    "voc_sample/VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt",
    "voc_sample/VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt",
    "voc_sample/VOCdevkit/VOC2012/ImageSets/Segmentation/trainval.txt",
    "coco_sample/voc100_boxes_coco_format/instances_v2_subset34.json",
}


def git_blob_sha1(data: bytes) -> str:
    """The object id git gives a file with these bytes."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def provenance() -> list[list[str]]:
    """Rows of PROVENANCE.tsv: file, bytes, source repo, commit, source path, git blob sha1."""
    lines = (SHARED_DATA / "PROVENANCE.tsv").read_text().splitlines()
    assert lines[0].startswith("# file<TAB>bytes<TAB>source_repo")
    return [line.split("\t") for line in lines[1:] if line.strip()]


def test_sample_data_lives_in_the_repository() -> None:
    for path in (SHARED_DATA, VOC_SAMPLE, IRN_LISTS, COCO_SAMPLE):
        assert path.is_dir(), path
        assert path.resolve().is_relative_to(REPO), path  # a fresh clone has it; nothing read from ../shared
    assert (SHARED_DATA / "README.md").read_text().count("Licences") == 1


def test_every_file_has_provenance_and_matches_it() -> None:
    rows = provenance()
    assert all(len(r) == 6 for r in rows)
    listed = {r[0] for r in rows}
    own_notes = {"README.md", "PROVENANCE.tsv"}
    present = {str(p.relative_to(SHARED_DATA)) for d in (VOC_SAMPLE, IRN_LISTS, COCO_SAMPLE) for p in d.rglob("*")
               if p.is_file()}
    assert present - DERIVED == listed, (sorted(present - DERIVED - listed), sorted(listed - present))
    assert DERIVED <= present and not own_notes & listed
    unverified = []
    for name, size, repo, commit, _source, blob in rows:
        data = (SHARED_DATA / name).read_bytes()
        assert len(data) == int(size), name
        assert "/" in repo and len(commit) == 40, name
        if len(blob) == 40:
            assert git_blob_sha1(data) == blob, name
        else:
            unverified.append(name)
    assert unverified == ["coco_sample/hf_transformers_coco_39769/coco_annotations.txt"]  # its source gave no blob sha


def test_the_sample_counts_the_readme_states() -> None:
    voc = VOC_SAMPLE
    assert len(list((voc / "JPEGImages").glob("*.jpg"))) == 34
    assert len(list((voc / "Annotations").glob("*.xml"))) == 34
    assert len(list((voc / "SegmentationClass").glob("*.png"))) == 32
    lists = {n: (IRN_LISTS / f"{n}.txt").read_text().split() for n in ("train", "val", "train_aug")}
    assert {n: len(v) for n, v in lists.items()} == {"train": 1464, "val": 1449, "train_aug": 10582}
    total = sum(p.stat().st_size for p in SHARED_DATA.rglob("*") if p.is_file() and "imagenet_check" not in p.parts)
    assert total < 8_000_000  # a few MB: only what the tests read

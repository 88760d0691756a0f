"""Tests of the procedural VOC-layout benchmark (weakseg.data.synth, `weakseg synth`)."""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from weakseg.data.classes import IGNORE_INDEX, voc_palette
from weakseg.errors import WeaksegError
from weakseg.data.synth import (CLASS_DESIGNS, SynthConfig, generate, render_ood, render_sample,
                                render_sample_detailed)
from weakseg.data import synth_draw

TINY = dict(train=12, val=4, ood=12, size=80, ood_foreground=0.25)


def _tiny(**kw) -> SynthConfig:
    return SynthConfig(**{**TINY, **kw})


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "VOC2012"
    generate(_tiny(seed=3), out, progress=False)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _meta(root: Path) -> dict:
    return json.loads((root / "synth.json").read_text())


def _label(root: Path, sub: str, image_id: str) -> np.ndarray:
    with Image.open(root / sub / f"{image_id}.png") as im:
        assert im.mode == "P"
        assert im.getpalette() == voc_palette()
        return np.asarray(im).copy()


def _xml_objects(root: Path, image_id: str) -> list[tuple[str, tuple[int, int, int, int]]]:
    tree = ET.parse(root / "Annotations" / f"{image_id}.xml").getroot()
    out = []
    for ob in tree.findall("object"):
        bb = ob.find("bndbox")
        out.append((ob.findtext("name"), tuple(int(bb.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))))
    return out


def _tight_box(m: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(m.any(1))[0], np.nonzero(m.any(0))[0]
    return (int(cols[0]) + 1, int(rows[0]) + 1, int(cols[-1]) + 1, int(rows[-1]) + 1)


# ----------------------------------------------------------------------------- layout and determinism

def test_voc_layout(bench: Path) -> None:
    meta = _meta(bench)
    train = (bench / "ImageSets/Segmentation/train.txt").read_text().split()
    val = (bench / "ImageSets/Segmentation/val.txt").read_text().split()
    assert len(train) == 12 and len(val) == 4
    assert (bench / "ImageSets/Segmentation/trainval.txt").read_text().split() == train + val
    assert train[0] == "s_000000" and val[0] == "s_000012"
    for i in train + val:
        for sub, ext in (("JPEGImages", "jpg"), ("SegmentationClass", "png"), ("SegmentationObject", "png"),
                         ("Annotations", "xml")):
            assert (bench / sub / f"{i}.{ext}").is_file()
        with Image.open(bench / "JPEGImages" / f"{i}.jpg") as im:
            assert im.format == "JPEG" and im.size == (80, 80)
    assert (bench / "classes.txt").read_text().splitlines() == [d.name for d in CLASS_DESIGNS[:8]]
    assert meta["version"] >= 1 and meta["config"]["seed"] == 3
    assert [c["preferred_context"] for c in meta["classes"]] == [d.context for d in CLASS_DESIGNS[:8]]
    pool = (bench / "OoD/ImageSets/pool.txt").read_text().split()
    assert pool == [f"ood_{i:06d}" for i in range(12)]
    assert all((bench / "OoD/JPEGImages" / f"{i}.jpg").is_file() for i in pool)
    main = (bench / "ImageSets/Main/train_train.txt").read_text().splitlines()
    assert [ln.split()[0] for ln in main] == train
    assert not list(bench.rglob("*.tmp")), "atomic writes left temporary files"


def test_deterministic_bytes(bench: Path, tmp_path: Path) -> None:
    generate(_tiny(seed=3), tmp_path / "again", progress=False)
    assert _files(tmp_path / "again") == _files(bench)
    generate(_tiny(seed=4), tmp_path / "other", progress=False)
    other = _files(tmp_path / "other")
    assert other["JPEGImages/s_000000.jpg"] != _files(bench)["JPEGImages/s_000000.jpg"]


def test_independent_of_generation_order_and_workers(bench: Path, tmp_path: Path) -> None:
    # Fewer images: the first ones are the same bytes (each image has its own generator).
    generate(_tiny(seed=3, train=5, val=0, ood=3), tmp_path / "few", progress=False)
    few, full = _files(tmp_path / "few"), _files(bench)
    for i in range(5):
        for sub, ext in (("JPEGImages", "jpg"), ("SegmentationClass", "png"), ("Annotations", "xml")):
            key = f"{sub}/s_{i:06d}.{ext}"
            assert few[key] == full[key]
    assert few["OoD/JPEGImages/ood_000002.jpg"] == full["OoD/JPEGImages/ood_000002.jpg"]
    generate(_tiny(seed=3), tmp_path / "par", progress=False, workers=2)
    assert _files(tmp_path / "par") == full


def test_render_sample_pure() -> None:
    cfg = SynthConfig(size=64)
    a = render_sample(cfg, np.random.default_rng([1, 0, 7]))
    b = render_sample(cfg, np.random.default_rng([1, 0, 7]))
    image, cls, inst, objects = a
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert cls.shape == inst.shape == (64, 64) and cls.dtype == inst.dtype == np.uint8
    assert all(np.array_equal(x, y) for x, y in zip(a[:3], b[:3])) and a[3] == b[3]
    assert 1 <= len(objects) <= cfg.max_instances


# ----------------------------------------------------------------------------- ground truth

def test_masks_consistent(bench: Path) -> None:
    meta = _meta(bench)
    for i, m in meta["images"].items():
        cls, inst = _label(bench, "SegmentationClass", i), _label(bench, "SegmentationObject", i)
        objs = _xml_objects(bench, i)
        assert 1 <= len(objs) <= 4 and len(objs) == len(m["objects"])
        assert len(set(m["classes"])) <= 3
        void = inst == IGNORE_INDEX
        assert np.array_equal(void, cls == IGNORE_INDEX), "void band differs between class and object masks"
        assert void.any()  # void_width=1 draws a band around every instance
        assert np.array_equal((inst == 0), (cls == 0))
        names = [d.name for d in CLASS_DESIGNS]
        for k, (name, _) in enumerate(objs, 1):
            pix = cls[inst == k]
            assert pix.size > 0, f"{i}: instance {k} has no non-void pixel"
            assert np.all(pix == names.index(name) + 1), f"{i}: class mask disagrees with instance {k}"
        assert set(np.unique(inst)) <= set(range(len(objs) + 1)) | {IGNORE_INDEX}
        present = {names[v - 1] for v in np.unique(cls) if 0 < v < IGNORE_INDEX}
        assert present == {n for n, _ in objs} == set(m["classes"])


def test_boxes_are_tight_on_visible_pixels(bench: Path, tmp_path: Path) -> None:
    out = tmp_path / "novoid"
    generate(_tiny(seed=5, void_width=0, ood=0), out, progress=False)
    for i in _meta(out)["images"]:
        inst = _label(out, "SegmentationObject", i)
        assert not (inst == IGNORE_INDEX).any()
        for k, (_, box) in enumerate(_xml_objects(out, i), 1):
            assert box == _tight_box(inst == k)
    # With a void band the box is that of the visible pixels, void included: it contains the non-void
    # pixels of the instance, and each of its four edges touches the instance or the void band.
    for i in _meta(bench)["images"]:
        inst = _label(bench, "SegmentationObject", i)
        for k, (_, box) in enumerate(_xml_objects(bench, i), 1):
            inner = _tight_box(inst == k)
            assert box[0] <= inner[0] and box[1] <= inner[1] and box[2] >= inner[2] and box[3] >= inner[3]
            x0, y0, x1, y1 = (v - 1 for v in box)
            crop = (inst[y0:y1 + 1, x0:x1 + 1] == k) | (inst[y0:y1 + 1, x0:x1 + 1] == IGNORE_INDEX)
            assert crop[0].any() and crop[-1].any() and crop[:, 0].any() and crop[:, -1].any()


def test_occlusion_drops_hidden_instances() -> None:
    cfg = SynthConfig(size=96, max_instances=4, max_classes=3, max_size=0.8)
    for n in range(40):
        s = render_sample_detailed(cfg, np.random.default_rng([0, 5, n]))
        for o in s.objects:
            assert o["visible_fraction"] >= cfg.min_visible and o["visible_area"] >= cfg.min_pixels


def test_part_fraction_within_range() -> None:
    lo, hi = 0.12, 0.2
    cfg = SynthConfig(size=96, part_fraction=(lo, hi))
    checked = 0
    for n in range(40):
        s = render_sample_detailed(cfg, np.random.default_rng([2, 0, n]))
        for o in s.objects:
            assert lo <= o["part_fraction"] <= hi
            if not o["occluded"] and not o["truncated"]:
                part = int((s.part_mask == o["instance"]).sum())
                assert o["visible_area"] == o["area"]
                assert lo <= part / o["visible_area"] <= hi
                checked += 1
    assert checked > 20


@pytest.mark.parametrize("prob", [0.0, 1.0])
def test_context_probability(prob: float, tmp_path: Path) -> None:
    out = tmp_path / "ctx"
    generate(_tiny(context_prob=prob, train=16, val=4, ood=0), out, progress=False)
    meta = _meta(out)
    preferred = {c["name"]: c["preferred_context"] for c in meta["classes"]}
    for m in meta["images"].values():
        own = {preferred[c] for c in m["classes"]}
        assert m["context_matched"] == (prob == 1.0)
        assert (m["context"] in own) == (prob == 1.0)


def test_per_class_context_probability(tmp_path: Path) -> None:
    """class_context_prob: a class at 1.0 always brings its context when it is the drawn class, one at 0.0 never."""
    out = tmp_path / "ctx"
    cfg = _tiny(classes=2, class_context_prob=(1.0, 0.0), max_classes=1, train=24, val=4, ood=0)
    generate(cfg, out, progress=False)
    meta = _meta(out)
    preferred = {c["name"]: c["preferred_context"] for c in meta["classes"]}
    assert [c["context_prob"] for c in meta["classes"]] == [1.0, 0.0]
    seen = set()
    for m in meta["images"].values():
        (name,) = m["classes"]  # one class per image
        seen.add(name)
        assert m["context_matched"] == (name == meta["classes"][0]["name"])
        assert (m["context"] == preferred[name]) == m["context_matched"]
    assert seen == set(preferred)


@pytest.mark.parametrize("values", [(0.5,), (0.5, 1.5)])
def test_per_class_context_probability_is_validated(values: tuple[float, ...]) -> None:
    with pytest.raises(WeaksegError, match="class-context-prob"):
        _tiny(classes=2, class_context_prob=values).validate()


def test_ood_truth(bench: Path) -> None:
    meta = _meta(bench)
    pool = (bench / "OoD/ImageSets/pool.txt").read_text().split()
    with open(bench / "OoD/truth.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id", "contains_foreground", "classes"]
    assert [r[0] for r in rows[1:]] == pool
    names = set((bench / "classes.txt").read_text().split())
    preferred = {c["name"]: c["preferred_context"] for c in meta["classes"]}
    kinds = set()
    for image_id, fg, classes in rows[1:]:
        m = meta["ood"][image_id]
        kinds.add(m["kind"])
        if fg == "0":
            assert classes == "" and m["objects"] == [] and m["kind"] in ("context", "unrelated")
            if m["kind"] == "context":
                assert m["context"] == preferred[m["context_of_class"]]
            else:
                assert m["context"] not in preferred.values()
        else:
            assert fg == "1" and m["kind"] == "foreground" and m["objects"]
            assert set(classes.split(";")) == set(m["classes"]) and set(m["classes"]) <= names
    assert "context" in kinds


def test_ood_kinds_follow_knobs() -> None:
    cfg = SynthConfig(size=48, ood_context=1.0, ood_foreground=0.0)
    kinds = {render_ood(cfg, np.random.default_rng([0, 2, n]))[1]["kind"] for n in range(10)}
    assert kinds == {"context"}
    cfg = SynthConfig(size=64, ood_context=0.0, ood_foreground=1.0)
    img, meta = render_ood(cfg, np.random.default_rng([0, 2, 0]))
    assert meta["contains_foreground"] and meta["objects"] and img.shape == (64, 64, 3)


# ----------------------------------------------------------------------------- the partial-activation property

def _erode(m: np.ndarray, r: int) -> np.ndarray:
    h, w = m.shape
    p = np.pad(m, r)
    out = m.copy()
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            out &= p[r + dy:r + dy + h, r + dx:r + dx + w]
    return out


def _part_body_features(strength: float, n: int = 120, camouflage: float = 0.0):
    cfg = SynthConfig(body_strength=strength, camouflage=camouflage)
    part_f, body_f, labels = [], [], []
    for i in range(n):
        s = render_sample_detailed(cfg, np.random.default_rng([11, 0, i]))
        img = s.image.astype(np.float32)
        for o in s.objects:
            inst = s.instance_mask == o["instance"]
            part = s.part_mask == o["instance"]
            core_part = _erode(part, 1) & inst
            body = _erode(inst, 1) & _erode(~part, 2)  # away from the part and the boundary (blur, JPEG-free)
            if core_part.sum() < 5 or body.sum() < 20:
                continue
            part_f.append(img[core_part].mean(0))
            body_f.append(img[body].mean(0))
            labels.append(o["label"])
    return np.array(part_f), np.array(body_f), np.array(labels)


def _nearest_centroid_accuracy(x: np.ndarray, y: np.ndarray) -> float:
    train = np.arange(len(y)) % 2 == 0
    classes = np.unique(y[train])
    cents = np.stack([x[train & (y == c)].mean(0) for c in classes])
    pred = classes[np.argmin(((x[~train][:, None] - cents[None]) ** 2).sum(-1), 1)]
    return float((pred == y[~train]).mean())


def test_part_is_more_distinctive_than_body() -> None:
    """Mean colour of the part identifies the class; of the body only weakly (chance at strength 0)."""
    chance = 1 / 8
    part_f, body_f, y = _part_body_features(0.3)
    part_acc, body_acc = _nearest_centroid_accuracy(part_f, y), _nearest_centroid_accuracy(body_f, y)
    assert part_acc > 0.9
    assert body_acc > chance + 0.1, "with body_strength > 0 the body carries some class evidence"
    assert part_acc > body_acc + 0.3, "the part must be far more distinctive than the body"
    _, body0, y0 = _part_body_features(0.0)
    assert _nearest_centroid_accuracy(body0, y0) < chance + 0.1, "body_strength 0: body carries no class colour"


def _body_background_gaps(camouflage: float, n: int = 40) -> list[float]:
    """Per instance: distance between the mean colour of its body (away from part and boundary) and of the
    background ring just outside it."""
    cfg = SynthConfig(camouflage=camouflage)
    gaps = []
    for i in range(n):
        s = render_sample_detailed(cfg, np.random.default_rng([12, 0, i]))
        img = s.image.astype(np.float32)
        objects = s.instance_mask > 0
        ring = _dilate(objects, 6) & ~_dilate(objects, 2)
        for o in s.objects:
            inst = s.instance_mask == o["instance"]
            body = _erode(inst, 2) & _erode(s.part_mask != o["instance"], 2)
            near = ring & _dilate(inst, 6)
            if body.sum() < 30 or near.sum() < 30:
                continue
            gaps.append(float(np.linalg.norm(img[body].mean(0) - img[near].mean(0))))
    return gaps


def _dilate(m: np.ndarray, r: int) -> np.ndarray:
    return ~_erode(~m, r)


def test_camouflage_takes_the_background_colour_not_the_ground_truth() -> None:
    """--camouflage moves each body's colour to its background's; masks, boxes and parts stay as they were."""
    plain, camo = _body_background_gaps(0.0), _body_background_gaps(0.7)
    assert len(plain) > 30 and len(camo) > 30
    assert np.median(camo) < 0.5 * np.median(plain), (np.median(camo), np.median(plain))
    for i in range(5):
        a = render_sample_detailed(SynthConfig(), np.random.default_rng([13, 0, i]))
        b = render_sample_detailed(SynthConfig(camouflage=1.0), np.random.default_rng([13, 0, i]))
        assert np.array_equal(a.instance_mask, b.instance_mask) and np.array_equal(a.part_mask, b.part_mask)
        assert a.objects == b.objects and a.context == b.context
        assert not np.array_equal(a.image, b.image)
    part_f, _, y = _part_body_features(0.3, camouflage=0.7)
    assert _nearest_centroid_accuracy(part_f, y) > 0.9, "the part still names the class"


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_camouflage_is_validated(value: float) -> None:
    with pytest.raises(WeaksegError, match="--camouflage"):
        SynthConfig(camouflage=value).validate()


def test_contexts_render_and_differ() -> None:
    rng = np.random.default_rng(0)
    means = []
    for name in synth_draw.CONTEXTS:
        img = synth_draw.draw_context(name, rng, 64, 80)
        assert img.shape == (64, 80, 3) and np.isfinite(img).all()
        means.append(img.reshape(-1, 3).mean(0))
    means = np.array(means)
    gaps = np.sqrt(((means[:, None] - means[None]) ** 2).sum(-1)) + np.eye(len(means)) * 1e9
    assert gaps.min() > 5, "two contexts share their mean colour"
    prefs = [d.context for d in CLASS_DESIGNS]
    assert len(set(prefs)) == len(prefs) and set(prefs) <= set(synth_draw.CONTEXTS)


# ----------------------------------------------------------------------------- CLI

def test_cli(tmp_path: Path, capsys) -> None:
    from cli.main import main

    out = tmp_path / "cli"
    args = ["synth", "--out", str(out), "--train", "3", "--val", "1", "--ood", "2", "--size", "64",
            "--classes", "5", "--no-progress", "--seed", "7"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "3 train + 1 val" in text and str(out) in text
    assert len((out / "classes.txt").read_text().split()) == 5
    assert _meta(out)["config"]["classes"] == 5
    assert main(args) == 2  # not empty: refuses without --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
    assert main(["synth", "--out", str(tmp_path / "bad"), "--classes", "99", "--no-progress"]) == 2

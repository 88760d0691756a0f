"""`weakseg pseudo --method bbam|box|grabcut` (issue 14 items 3 and 5a) end to end through the CLI: the label format
plus instance PNG/JSON and the job-end COCO file (read back by `weakseg eval labels` and pycocotools), resume (one
output deleted -> only that image recomputed), a real local Ray == in-process (identical files), every bad input with
and without --skip-bad, difficult boxes, and the instance index rule by hand.

The detector: `weakseg train detector` for one epoch on a 6-image, 64 px synthetic set, then its box predictor fitted
briefly to the boxes (tests/bbam_helpers.fit_box_heads, so that positives exist) and saved in the detector checkpoint
format; BBAM at 3 iterations, 50 proposals, IoU 0.5 and a fixed stride of 8 (the adaptive stride gives a 1x1 grid on a
64 px image)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from cli.main import main
from tests.box_helpers import fitted_detector
from weakseg.box_pseudo import label_and_instances
from weakseg.data.annotations import ObjectBox, parse_voc_xml, write_voc_xml
from weakseg.data.box_labels import DIFFICULT_IGNORE, image_boxes
from weakseg.data.box_targets import box_region
from weakseg.data.voc import VOCDataset
from weakseg.models.checkpoint import file_sha256
from weakseg.refine.box_masks import BoxMasks

N = 6  # training images of the set
BBAM_FLAGS = ["--bbam-iterations", "3", "--bbam-proposals", "50", "--bbam-iou-cascade", "0.5"]
BBAM_FLAGS += ["--bbam-stride", "fixed", "--bbam-fixed-stride", "8"]
RUN = ["--workers", "0", "--threads", "1", "--quiet", "--device", "cpu"]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def box_synth(tmp_path_factory):
    """6 train / 2 val images at 64 px, 3 classes."""
    from weakseg.data.synth import SynthConfig, generate

    out = tmp_path_factory.mktemp("boxsynth") / "VOC2012"
    generate(SynthConfig(seed=5, train=N, val=2, ood=0, classes=3, size=64), out, progress=False)
    return out


@pytest.fixture(scope="module")
def detector(box_synth, tmp_path_factory):
    """A detector trained one epoch by the CLI, its box predictor then fitted to the boxes (a .safetensors file)."""
    run = tmp_path_factory.mktemp("det") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rc = main(
            ["train", "detector", "--data", str(box_synth), "--out", str(run), "--epochs", "1", "--val-split", "",
             "--warmup-steps", "1", "--device", "cpu", "--quiet", "--min-size", "64", "--max-size", "128",
             "--box-batch-size-per-image", "32", "--box-head-dim", "64", "--batch-size", "3"]
        )  # fmt: skip
        assert rc == 0
        return fitted_detector(run, box_synth, run.parent / "detector_fit.safetensors", steps=100)
    finally:
        torch.set_num_threads(threads)


def _pseudo(method, data, out, *extra, detector=None):
    args = ["pseudo", "--method", method, "--data", str(data), "--out", str(out), *RUN, *extra]
    return main(args + (["--detector", str(detector)] if detector else []))


def _summary(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _files(out) -> dict[str, bytes]:
    """Every per-image output file and the COCO file, by relative path."""
    names = [p for d in ("maps", "labels", "instances") for p in sorted((out / d).iterdir())]
    return {str(p.relative_to(out)): p.read_bytes() for p in names + [out / "instances_coco.json"]}


@pytest.fixture(scope="module")
def bbam_out(box_synth, detector, tmp_path_factory):
    """The BBAM job's output folder (in this process)."""
    out = tmp_path_factory.mktemp("bbam") / "out"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert _pseudo("bbam", box_synth, out, *BBAM_FLAGS, detector=detector) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def _check_outputs(out, data, method):
    """The label format, the instance outputs and their agreement; the COCO file through pycocotools."""
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    dataset = VOCDataset(data, "train")
    sources = []
    for image_id in dataset.ids:
        label = np.asarray(Image.open(out / "labels" / f"{image_id}.png"))
        index = np.asarray(Image.open(out / "instances" / f"{image_id}.png"))
        record = json.loads((out / "instances" / f"{image_id}.json").read_text())
        with np.load(out / "maps" / f"{image_id}.npz") as f:
            maps, class_ids, boxes = f["maps"], f["class_ids"], f["boxes"]
        targets = image_boxes(dataset, image_id)
        assert maps.dtype == np.float16 and maps.shape == (len(targets.boxes), 64, 64)
        assert class_ids.tolist() == targets.class_ids.tolist() and np.array_equal(boxes, targets.boxes)
        assert record["method"] == method and len(record["instances"]) == len(boxes)
        assert np.array_equal(index == 255, label == 255)  # the instance PNG ignores exactly what the label does
        for inst in record["instances"]:
            k, c = inst["index"], inst["class_id"]
            assert np.all(label[index == k] == c)  # each labelled pixel's instance is of the label's class
            mask = mask_utils.decode(inst["rle"]).astype(bool)
            assert mask.sum() == inst["area"] and not (mask & ~box_region(inst["box"], 64, 64)).any()
            assert np.all(mask[index == k])  # the index PNG shows an instance only where its mask is
            sources.append(inst["source"])
        assert set(np.unique(label)) <= {0, 255, *class_ids.tolist()}
    coco = COCO(str(out / "instances_coco.json"))
    assert len(coco.getImgIds()) == N and len(coco.getAnnIds()) == len(sources)
    first = coco.loadImgs(1)[0]
    record = json.loads((out / "instances" / f"{first['weakseg_id']}.json").read_text())
    for ann, inst in zip(coco.loadAnns(coco.getAnnIds(imgIds=[1])), record["instances"], strict=True):
        assert np.array_equal(coco.annToMask(ann).astype(bool), mask_utils.decode(inst["rle"]).astype(bool))
        assert ann["category_id"] == inst["class_id"]
    return sources


def test_bbam_end_to_end(bbam_out, box_synth, detector, capsys):
    """BBAM's outputs agree with each other and with the boxes; the manifest pins the config and the detector's
    sha256; `weakseg eval labels` scores the labels."""
    sources = _check_outputs(bbam_out, box_synth, "bbam")
    assert "map" in sources  # the BBAM path itself, not only its fallbacks
    manifest = json.loads((bbam_out / "manifest.json").read_text())
    assert manifest["method"]["method"] == "bbam" and manifest["method"]["iterations"] == 3
    assert manifest["method"]["iou_cascade"] == [0.5] and "batch_objects" not in manifest["method"]
    assert manifest["detector_sha256"] == file_sha256(detector) and manifest["masks"]["th_fg"] == 0.85
    record = json.loads(next((bbam_out / "instances").glob("*.json")).read_text())
    assert {"positives", "iou_threshold", "stride"} <= set(record["instances"][0]["bbam"])
    capsys.readouterr()
    assert main(["eval", "labels", "--labels", str(bbam_out)]) == 0
    report = _summary(capsys)
    assert report["num_images"] == N and 0 <= report["miou"] <= 1


@pytest.mark.parametrize("method", ["box", "grabcut"])
def test_baselines_end_to_end(method, box_synth, tmp_path, capsys):
    """The filled-box and GrabCut baselines through the same outputs; the filled box is the box."""
    out = tmp_path / method
    assert _pseudo(method, box_synth, out) == 0
    summary = _summary(capsys)
    assert summary["succeeded"] == N and summary["instances_coco"]["images"] == N
    sources = _check_outputs(out, box_synth, method)
    assert set(sources) <= ({"box"} if method == "box" else {"box", "grabcut"})
    if method == "box":
        for p in (out / "instances").glob("*.json"):
            for inst in json.loads(p.read_text())["instances"]:
                box = box_region(inst["box"], 64, 64)
                assert inst["area"] == box.sum()
    assert main(["eval", "labels", "--labels", str(out)]) == 0


def test_resume_recomputes_only_the_deleted_image(bbam_out, box_synth, detector, tmp_path, capsys):
    """One label deleted: the re-run computes that image alone, to the same bytes, and rebuilds the COCO file;
    a changed setting is refused, naming it."""
    out = tmp_path / "resume"
    shutil.copytree(bbam_out, out)
    before = _files(out)
    victim = sorted((out / "labels").iterdir())[2]
    victim.unlink()
    (out / "instances_coco.json").unlink()
    others = {
        p: p.stat().st_mtime_ns
        for d in ("maps", "labels", "instances")
        for p in (out / d).iterdir()
        if p.stem != victim.stem
    }
    capsys.readouterr()
    assert _pseudo("bbam", box_synth, out, *BBAM_FLAGS, detector=detector) == 0
    summary = _summary(capsys)
    assert (summary["skipped"], summary["succeeded"], summary["failed"]) == (N - 1, 1, 0)
    assert all(p.stat().st_mtime_ns == t for p, t in others.items())  # no other image was rewritten
    assert _files(out) == before
    assert _pseudo("bbam", box_synth, out, *BBAM_FLAGS, "--bbam-lam", "0.01", detector=detector) == 2
    assert "method.lam" in capsys.readouterr().err


def test_ray_equals_in_process(bbam_out, box_synth, detector, tmp_path, capsys):
    """Two real local Ray workers (1 thread each, 512 MiB object store, no dashboard) write the same files."""
    from batch.cluster import LOCAL_RAY_ENV

    for key, value in LOCAL_RAY_ENV.items():
        os.environ.setdefault(key, value)
    out = tmp_path / "ray"
    args = ["pseudo", "--method", "bbam", "--data", str(box_synth), "--out", str(out), "--detector", str(detector)]
    args += [*BBAM_FLAGS, "--workers", "2", "--threads-per-worker", "1", "--object-store-mb", "512", "--quiet"]
    assert main([*args, "--device", "cpu"]) == 0
    summary = _summary(capsys)
    assert summary["executor"] == "ray" and summary["workers"] == 2 and summary["succeeded"] == N
    assert _files(out) == _files(bbam_out)


def _rewrite(data, image_id, edit):
    """Apply edit(objects) -> objects to one image's XML."""
    path = data / "Annotations" / f"{image_id}.xml"
    ann = parse_voc_xml(path)
    ann.objects = edit(list(ann.objects))
    path.write_text(write_voc_xml(ann))


def _bad_outside(objects):
    return [dataclasses.replace(objects[0], xmax=70)] + objects[1:]


def _bad_degenerate(objects):
    return [dataclasses.replace(objects[0], xmin=0, xmax=0)] + objects[1:]


def _bad_class(objects):
    return objects + [ObjectBox("dog", 2, 2, 20, 20)]


def _bad_none(objects):
    return []


BAD = {  # case -> (edit, what the one-line message says)
    "outside": (_bad_outside, "outside the 64x64 image"),
    "degenerate": (_bad_degenerate, "is empty in the 64x64 image"),
    "class": (_bad_class, "class 'dog' is not in the detector"),
    "no-boxes": (_bad_none, "the image has no boxes"),
}


@pytest.mark.parametrize("skip", [False, True], ids=["stop", "skip-bad"])
@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input(case, skip, box_synth, detector, tmp_path, capsys):
    """Each bad input names the XML file (and the box); without --skip-bad the job stops there (exit 2, that one
    message, nothing computed) and with it the image is recorded in failures.jsonl and the others are done."""
    data = tmp_path / "VOC2012"
    shutil.copytree(box_synth, data)
    (data / "classes.txt").write_text("train\nboat\nbird\ndog\n")  # 'dog' is the dataset's, not the detector's
    bad_id = VOCDataset(data, "train").ids[1]
    edit, says = BAD[case]
    _rewrite(data, bad_id, edit)
    out = tmp_path / "out"
    capsys.readouterr()
    rc = _pseudo("box", data, out, *(["--skip-bad"] if skip else []), detector=detector)
    captured = capsys.readouterr()
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert [f["id"] for f in failures] == [bad_id] and says in failures[0]["error"]
    assert f"{bad_id}.xml" in failures[0]["error"]
    if case in ("degenerate", "class", "outside"):
        assert "box " in failures[0]["error"]  # the box is named (index or coordinates)
    labels = sorted(p.stem for p in (out / "labels").iterdir())
    if not skip:
        assert rc == 2 and labels == []
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and says in lines[0] and f"{bad_id}.xml" in lines[0]
    else:
        assert rc == 0
        summary = json.loads(captured.out.strip().splitlines()[-1])
        assert summary["bad"] == 1 and summary["bad_images"] == [bad_id] and summary["succeeded"] == N - 1
        assert bad_id not in labels and len(labels) == N - 1


def test_difficult_boxes(box_synth, tmp_path, capsys):
    """--difficult ignore: a difficult box gets no instance and its free pixels are 255 (label and instances);
    include: it is an ordinary instance. An image whose only box is difficult has no box to explain."""
    data = tmp_path / "VOC2012"
    shutil.copytree(box_synth, data)
    ids = VOCDataset(data, "train").ids
    multi = next(i for i in ids if len(parse_voc_xml(data / "Annotations" / f"{i}.xml").objects) > 1)
    _rewrite(data, multi, lambda objs: [dataclasses.replace(objs[0], difficult=True)] + objs[1:])
    dataset = VOCDataset(data, "train")
    difficult = image_boxes(dataset, multi, difficult=DIFFICULT_IGNORE)
    assert len(difficult.ignored) == 1 and len(difficult.boxes) == len(dataset.boxes(multi)) - 1
    for policy in ("ignore", "include"):
        out = tmp_path / policy
        assert _pseudo("box", data, out, "--difficult", policy) == 0
        record = json.loads((out / "instances" / f"{multi}.json").read_text())
        label = np.asarray(Image.open(out / "labels" / f"{multi}.png"))
        region = box_region(difficult.ignored[0], 64, 64)
        if policy == "ignore":
            assert len(record["instances"]) == len(difficult.boxes) and len(record["ignored_boxes"]) == 1
            assert not (label[region] == 0).any() and (label[region] == 255).any()
        else:
            assert len(record["instances"]) == len(difficult.boxes) + 1 and record["ignored_boxes"] == []
    single = tmp_path / "single"
    shutil.copytree(data, single)
    _rewrite(single, ids[0], lambda objs: [dataclasses.replace(objs[0], difficult=True)])
    capsys.readouterr()
    assert _pseudo("box", single, tmp_path / "single_out") == 2
    assert "all difficult" in capsys.readouterr().err


def test_instance_index_by_hand():
    """Two overlapping boxes of different classes and one box inside another of its class: the index PNG gives each
    labelled pixel the smallest box of the label's class covering it and 255 where the label is 255."""
    from weakseg.data.box_labels import ImageBoxes
    from weakseg.refine.box_masks import semantic_label

    h = w = 8
    boxes = np.array([[0, 0, 6, 6], [4, 4, 8, 8], [1, 1, 3, 3]], dtype=np.float32)
    labels = np.array([1, 2, 1])
    tight = np.stack([box_region(b, h, w) for b in boxes])
    loose = tight.copy()
    loose[1, 3, 4:] = True  # a band row above box 1
    masks = BoxMasks(tight, loose, labels, semantic_label(tight, loose, boxes, labels), ("box",) * 3)
    targets = ImageBoxes(
        source=__file__, height=h, width=w, boxes=boxes, names=("a", "b", "a"), class_ids=labels,  # type: ignore[arg-type]
        detector_ids=labels, ignored=np.zeros((0, 4), np.float32), ignored_names=(),
    )  # fmt: skip
    label, index = label_and_instances(masks, targets)
    expected = np.zeros((h, w), dtype=np.uint8)
    expected[0:6, 0:6] = 1
    expected[1:3, 1:3] = 3  # inside box 0, same class: the smaller box
    expected[4:8, 4:8] = 2
    expected[4:6, 4:6] = 255  # claimed by two classes
    expected[3, 4:8] = 255  # box 1's band (over box 0's mask too: the label ignores it)
    assert label[3, 6] == 255 and label[4, 4] == 255 and label[2, 2] == 1
    assert np.array_equal(index, expected)


def test_box_noise_moves_every_side_by_its_share_and_stays_in_the_image():
    """benchmarks/bbam_ablation.noisy_boxes by hand: +10 % grows each side by a tenth of the box's side, -60 %
    would cross the sides over (kept 1 px wide at the centre), and the image border clips."""
    from benchmarks.bbam_ablation import noisy_boxes
    from weakseg.data.box_labels import ImageBoxes

    boxes = np.array([[10, 10, 30, 20], [0, 40, 20, 48]], dtype=np.float32)
    targets = ImageBoxes(
        source=__file__, height=48, width=64, boxes=boxes, names=("a", "b"), class_ids=np.array([1, 2]),
        detector_ids=np.array([1, 2]), ignored=np.zeros((0, 4), np.float32), ignored_names=(),
    )  # fmt: skip
    assert noisy_boxes(targets, 0.0) is targets
    np.testing.assert_allclose(noisy_boxes(targets, 0.1).boxes, [[8, 9, 32, 21], [0, 39.2, 22, 48]])
    np.testing.assert_allclose(noisy_boxes(targets, -0.6).boxes, [[19.5, 14.5, 20.5, 15.5], [9.5, 43.5, 10.5, 44.5]])


def test_bbam_ablation_rows_agree_and_a_rerun_computes_nothing(box_synth, detector, tmp_path, monkeypatch, capsys):
    """benchmarks/bbam_ablation.py end to end on the tiny detector: Table 5.5's default row and Fig. 5.7(a)'s
    exact-box BBAM row are the same setting and score the same; the noisy maps were computed from the moved boxes;
    a second run reads everything back (BBAM.run would fail) and writes the same tables."""
    import benchmarks.bbam_ablation as ablation
    from weakseg.attribution.bbam import BBAM
    from weakseg.data.box_labels import image_boxes
    from weakseg.data.voc import VOCDataset
    from weakseg.models.detector import load_detector

    out = tmp_path / "ablation"
    argv = ["bbam_ablation.py", "--data", str(box_synth), "--detector", str(detector), "--out", str(out),
            "--images", "2", "--iterations", "2", "--parts", "t55", "fig57a", "--noise", "0", "0.1",
            "--threads", "1", "--device", "cpu"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    ablation.main()
    first = json.loads((out / "bbam_ablation.json").read_text())
    t55, fig = first["tables"]["t55"], first["tables"]["fig57a"]
    assert len(t55) == len(ablation.T55_ROWS) and [r["label"] for r in fig] == [
        "BBAM +0%", "filled box +0%", "BBAM +10%", "filled box +10%"
    ]  # fmt: skip
    for r in t55 + fig:
        assert all(0.0 <= r[c] <= 1.0 for c in ablation.COLUMNS), r
    assert {c: t55[-1][c] for c in ablation.COLUMNS} == {c: fig[0][c] for c in ablation.COLUMNS}
    _, config = load_detector(detector)
    dataset = VOCDataset(box_synth, "train")
    (noisy,) = [d for d in (out / "maps").iterdir() if "noise+0.10" in d.name]
    for image_id in first["ids"]:
        true = image_boxes(dataset, image_id, list(config.classes))
        saved = np.load(noisy / f"{image_id}.npz")["boxes"]
        np.testing.assert_allclose(saved, ablation.noisy_boxes(true, 0.1).boxes)
    capsys.readouterr()

    def no_compute(*args, **kwargs):
        raise AssertionError("BBAM ran again on a cached setting")

    monkeypatch.setattr(BBAM, "run", no_compute)
    ablation.main()
    assert json.loads((out / "bbam_ablation.json").read_text())["tables"] == first["tables"]
    assert "BBAM +10%" in capsys.readouterr().out

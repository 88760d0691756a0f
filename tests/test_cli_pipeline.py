"""The `weakseg` CLI end to end on the tiny benchmark: pseudo labels, seed and label evaluation, bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from cli.main import main
from weakseg.data.voc import VOCDataset
from weakseg.io import read_label_png
from weakseg.metrics.seeds import evaluate_labels, evaluate_seeds, evaluate_seeds_refined
from weakseg.refine.crf import CRFConfig, crf_refine_label
from tests.metric_reference import confusion_by_hand, reference_scores, reference_seed_sweep


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_pseudo_then_eval_seeds_and_labels(tiny_synth, tiny_classifier, tmp_path, capsys):
    out = tmp_path / "cam"
    args = ["pseudo", "--method", "cam", "--model", str(tiny_classifier), "--data", str(tiny_synth), "--split", "train",
            "--out", str(out), "--limit", "6", "--scales", "1.0", "0.5", "--crf", "--quiet", "--device", "cpu", "--workers", "0"]
    assert main(args) == 0
    summary = _last_json(capsys.readouterr().out)
    assert summary["succeeded"] == 6 and summary["failed"] == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method"]["method"] == "cam" and manifest["labels"]["crf"] is not None
    first = sorted((out / "maps").glob("*.npz"))[0]
    with np.load(first) as z:
        assert z["maps"].dtype == np.float16 and z["maps"].shape[0] == len(z["class_ids"])
        assert 0 <= z["maps"].min() and z["maps"].max() <= 1
        classes = set(z["class_ids"].tolist())
    label = read_label_png(out / "labels" / f"{first.stem}.png")
    assert set(np.unique(label).tolist()) <= classes | {0, 255}

    # re-running skips every finished image
    assert main(args) == 0
    assert _last_json(capsys.readouterr().out)["skipped"] == 6

    assert main(["eval", "seeds", "--data", str(tiny_synth), "--split", "train", "--maps", str(out), "--crf"]) == 0
    result = _last_json(capsys.readouterr().out)
    assert (out / "seed_report.md").exists() and (out / "seed_report.png").exists()
    dataset = VOCDataset(tiny_synth, "train")
    items = []
    for path in sorted((out / "maps").glob("*.npz")):
        with np.load(path) as z:
            items.append((path.stem, z["maps"].astype(np.float32), z["class_ids"].astype(np.int64)))
    assert [i for i, _, _ in items] == dataset.ids[:6]
    triples = [(maps, cls, dataset.mask(i)) for i, maps, cls in items]
    # the same numbers as the library on the same maps, and as a plain per-threshold recount
    library = evaluate_seeds(triples, dataset.classes).to_json()
    assert {k: v for k, v in result.items() if k not in ("crf", "num_images")} == library
    assert result["num_images"] == 6
    by_hand = reference_seed_sweep(triples, len(dataset.classes) + 1)
    assert result["threshold"] == pytest.approx(by_hand["threshold"])
    for key in ("miou", "precision", "recall", "f1"):
        assert result[key] == pytest.approx(by_hand[key], abs=1e-12), key
    assert [m for _, m in result["curve"]] == pytest.approx(by_hand["curve"], abs=1e-12)
    assert list(result["per_class"]) == ["background", *dataset.classes]
    np.testing.assert_allclose([np.nan if v is None else v for v in result["per_class"].values()],
                               by_hand["per_class"], atol=1e-12)
    best = result["threshold"]
    window = [round(t, 2) for t in np.arange(max(0.0, best - 0.1), min(0.95, best + 0.1) + 1e-9, 0.05)]
    crf_items = [(dataset.image(i), maps, cls, dataset.mask(i)) for i, maps, cls in items]
    refined = evaluate_seeds_refined(crf_items, dataset.classes, lambda im, lb: crf_refine_label(im, lb, CRFConfig()),
                                     window)
    assert result["crf"] == refined.to_json() and [t for t, _ in result["crf"]["curve"]] == pytest.approx(window)

    assert main(["eval", "labels", "--data", str(tiny_synth), "--split", "train", "--labels", str(out)]) == 0
    labels = _last_json(capsys.readouterr().out)
    pngs = [(dataset.mask(i), read_label_png(out / "labels" / f"{i}.png")) for i, _, _ in items]
    assert labels == evaluate_labels(pngs, dataset.classes).to_json() and labels["num_images"] == 6
    by_hand = reference_scores(confusion_by_hand(pngs, len(dataset.classes) + 1))
    valid = sum(int((gt != 255).sum()) for gt, _ in pngs)
    unsure = sum(int(((gt != 255) & (label == 255)).sum()) for gt, label in pngs)
    assert labels["ignored_fraction"] == pytest.approx(unsure / valid) and 0 < unsure < valid
    for key, ours in (("miou", "miou"), ("pixel_accuracy", "pixel_acc"), ("precision", "precision"), ("f1", "f1")):
        assert labels[key] == pytest.approx(by_hand[ours], abs=1e-12), key


def test_changed_configuration_into_the_same_folder_is_refused(tiny_synth, tiny_classifier, tmp_path, capsys):
    base = ["pseudo", "--model", str(tiny_classifier), "--data", str(tiny_synth), "--out", str(tmp_path / "o"),
            "--limit", "2", "--scales", "1.0", "--quiet", "--device", "cpu", "--workers", "0"]
    assert main(base + ["--method", "cam"]) == 0
    capsys.readouterr()
    assert main(base + ["--method", "gradcam"]) == 2
    assert "different configuration" in capsys.readouterr().err


@pytest.mark.parametrize("problem", ["missing_root", "bad_xml", "bad_image", "unknown_class"])
def test_bad_datasets_give_one_line_errors(tiny_synth, tmp_path, problem):
    data = tmp_path / "VOC2012"
    if problem != "missing_root":
        shutil.copytree(tiny_synth, data)
    first = (tiny_synth / "ImageSets" / "Segmentation" / "train.txt").read_text().split()[0]
    if problem == "bad_xml":
        (data / "Annotations" / f"{first}.xml").write_text("<annotation><size>")
    elif problem == "bad_image":
        (data / "JPEGImages" / f"{first}.jpg").write_bytes(b"\xff\xd8 truncated")
    elif problem == "unknown_class":
        xml = data / "Annotations" / f"{first}.xml"
        text = xml.read_text()
        name = text.split("<name>")[1].split("</name>")[0]
        xml.write_text(text.replace(f"<name>{name}</name>", "<name>unicorn</name>"))
    proc = subprocess.run([sys.executable, "-m", "cli.main", "train", "classifier", "--data", str(data), "--out",
                           str(tmp_path / "run"), "--epochs", "1", "--device", "cpu", "--quiet"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("weakseg: error:") and "Traceback" not in proc.stderr
    if problem != "missing_root":
        assert first in err[0] or "unicorn" in err[0]

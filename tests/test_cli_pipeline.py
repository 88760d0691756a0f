"""The `weakseg` CLI end to end on the tiny benchmark: pseudo labels, seed and label evaluation, bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from cli.main import main
from weakseg.io import read_label_png


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
    assert {"miou", "threshold", "precision", "recall", "f1", "per_class"} <= set(result)
    assert result["num_images"] == 6 and 0 <= result["miou"] <= 1 and "crf" in result
    assert (out / "seed_report.md").exists() and (out / "seed_report.png").exists()

    assert main(["eval", "labels", "--data", str(tiny_synth), "--split", "train", "--labels", str(out)]) == 0
    labels = _last_json(capsys.readouterr().out)
    assert 0 <= labels["ignored_fraction"] <= 1 and labels["num_images"] == 6


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

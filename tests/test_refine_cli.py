"""`weakseg refine irn|par` and `weakseg pseudo --refine` in process (issue 15 item 3), on a 6-image 64 px synthetic
benchmark with CAM maps of a seeded classifier and a 1-epoch IRN (the fixtures of tests/test_irn_training.py):
the refined folder's format (maps copied, labels equal to the refiner's, manifest pinning the source and the
refiner) read by `eval seeds` / `eval labels`; resume recomputing only a missing label; a changed configuration
refused naming its keys; failures recorded; the pseudo stage equal to refining afterwards; bad input one line,
exit 2, nothing written."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cli.main import main
from tests.test_irn_training import irn_inputs, irn_run  # noqa: F401  (module fixtures: data, CAM maps, an IRN)
from weakseg.data.voc import VOCDataset
from weakseg.io import read_label_png
from weakseg.models.checkpoint import file_sha256
from weakseg.models.irn import load_irn, save_irn
from weakseg.pseudo import manifest_mismatch
from weakseg.refine.irn_refiner import IRNRefineConfig, IRNRefiner
from weakseg.refine.refiner import PARRefiner
from weakseg.report.seed_eval import load_maps

CPU = ["--device", "cpu", "--quiet", "--threads", "1"]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _refine(name: str, maps: Path, out: Path, *extra: str) -> int:
    return main(["refine", name, "--maps", str(maps), "--out", str(out), *CPU, *extra])


def _labels(folder: Path) -> dict[str, bytes]:
    return {p.stem: p.read_bytes() for p in sorted((folder / "labels").glob("*.png"))}


def _fails_with_one_line(capsys, argv: list[str], needle: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("weakseg: error:") and needle in err, err
    return err


@pytest.fixture(scope="module")
def par_folder(irn_inputs) -> Path:  # noqa: F811
    """`weakseg refine par` over the CAM maps (data taken from their manifest)."""
    out = irn_inputs["root"] / "par"
    threads = torch.get_num_threads()
    try:
        assert _refine("par", irn_inputs["maps"], out) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def test_refine_par_writes_the_label_format_and_eval_reads_it(irn_inputs, par_folder, capsys):  # noqa: F811
    cam, dataset = irn_inputs["maps"], VOCDataset(irn_inputs["data"], "train")
    summary = json.loads((par_folder / "summary.json").read_text())
    assert (summary["total"], summary["succeeded"], summary["failed"], summary["executor"]) == (6, 6, 0, "local")
    refiner = PARRefiner()
    for image_id in dataset.ids:
        source = cam / "maps" / f"{image_id}.npz"
        assert (par_folder / "maps" / f"{image_id}.npz").read_bytes() == source.read_bytes()  # the seeds, copied
        maps, class_ids = load_maps(source)
        label = read_label_png(par_folder / "labels" / f"{image_id}.png")
        assert np.array_equal(label, refiner.refine(dataset.image(image_id), maps, class_ids)), image_id
        assert set(np.unique(label).tolist()) <= {0, *class_ids.tolist()}  # no 255: PAR labels every pixel
    manifest = json.loads((par_folder / "manifest.json").read_text())
    source_manifest = json.loads((cam / "manifest.json").read_text())
    assert manifest["kind"] == "refine" and manifest["refine"] == refiner.config()
    assert manifest["source"] == source_manifest
    assert manifest["source_sha256"] == hashlib.sha256((cam / "manifest.json").read_bytes()).hexdigest()
    assert (manifest["split"], manifest["classes"], manifest["data"]) == ("train", dataset.classes,
                                                                        str(irn_inputs["data"].resolve()))
    assert not list(par_folder.rglob("*.tmp"))
    capsys.readouterr()
    # eval labels scores the refined labels; --data and --split default to the folder's manifest
    assert main(["eval", "labels", "--labels", str(par_folder)]) == 0
    scored = _last_json(capsys)
    assert main(["eval", "labels", "--labels", str(par_folder / "labels"), "--data", str(irn_inputs["data"])]) == 0
    assert _last_json(capsys) == scored and 0 <= scored["miou"] <= 1 and scored["ignored_fraction"] == 0
    # eval seeds on the refined folder scores the same seeds as on the source (the maps are the method's)
    assert main(["eval", "seeds", "--maps", str(par_folder), "--report", str(par_folder.parent / "r1.md")]) == 0
    seeds = _last_json(capsys)
    assert main(["eval", "seeds", "--maps", str(cam), "--report", str(par_folder.parent / "r2.md")]) == 0
    assert _last_json(capsys) == seeds


def test_refine_irn_pins_the_checkpoint_and_gives_the_refiners_labels(irn_inputs, irn_run, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "irn"
    assert _refine("irn", irn_inputs["maps"], out, "--irn", str(irn_run), "--irn-exp-times", "6") == 0
    assert _last_json(capsys)["succeeded"] == 6
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["refine"]["irn_sha256"] == file_sha256(irn_run) and manifest["refine"]["exp_times"] == 6
    assert manifest["refine_locations"] == {"irn": str(irn_run.resolve())}
    refiner = IRNRefiner.from_checkpoint(irn_run, IRNRefineConfig(exp_times=6))
    dataset = VOCDataset(irn_inputs["data"], "train")
    for image_id in dataset.ids:
        maps, class_ids = load_maps(irn_inputs["maps"] / "maps" / f"{image_id}.npz")
        label = read_label_png(out / "labels" / f"{image_id}.png")
        assert np.array_equal(label, refiner.refine(dataset.image(image_id), maps, class_ids)), image_id
    assert main(["eval", "labels", "--labels", str(out)]) == 0
    assert 0 <= _last_json(capsys)["miou"] <= 1
    # an IRN moved elsewhere with the same weights resumes (the location is recorded, the sha256 pinned)
    moved = tmp_path / "moved_irn"
    shutil.copytree(irn_run, moved)
    assert _refine("irn", irn_inputs["maps"], out, "--irn", str(moved), "--irn-exp-times", "6") == 0
    assert _last_json(capsys)["skipped"] == 6


def test_resume_recomputes_only_the_missing_label(irn_inputs, par_folder, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "par"
    shutil.copytree(par_folder, out)
    before = _labels(out)
    gone = sorted(before)[2]
    (out / "labels" / f"{gone}.png").unlink()
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "labels").glob("*.png")}
    assert _refine("par", irn_inputs["maps"], out) == 0
    summary = _last_json(capsys)
    assert (summary["skipped"], summary["succeeded"], summary["failed"]) == (5, 1, 0)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "labels").glob("*.png") if p.stem != gone} == stamps
    assert _labels(out) == before  # the recomputed label is the one it replaced


def test_a_changed_configuration_is_refused_naming_its_keys(irn_inputs, par_folder, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "par"
    shutil.copytree(par_folder, out)
    before = _labels(out)
    err = _fails_with_one_line(capsys, ["refine", "par", "--maps", str(irn_inputs["maps"]), "--out", str(out), *CPU,
                                        "--par-num-iter", "3", "--par-bg-score", "0.3"], "different configuration")
    assert "refine.bg_score, refine.par.num_iter" in err
    # other source maps (another method) into the same folder: the embedded source manifest differs
    gradcam = tmp_path / "gradcam"
    assert main(["pseudo", "--method", "gradcam", "--model", str(irn_inputs["clf"]), "--data", str(irn_inputs["data"]),
                 "--out", str(gradcam), "--workers", "0", "--scales", "1.0", *CPU]) == 0
    capsys.readouterr()
    _fails_with_one_line(capsys, ["refine", "par", "--maps", str(gradcam), "--out", str(out), *CPU], "source.method")
    assert _labels(out) == before


def test_failures_are_recorded_and_a_streak_stops_the_job(irn_inputs, tmp_path, capsys):  # noqa: F811
    data = tmp_path / "VOC2012"
    shutil.copytree(irn_inputs["data"], data)
    dataset = VOCDataset(data, "train")
    for image_id in dataset.ids[:2]:
        dataset.image_path(image_id).write_bytes(b"\xff\xd8 not an image")
    out = tmp_path / "out"
    argv = ["refine", "par", "--maps", str(irn_inputs["maps"]), "--out", str(out), "--data", str(data), *CPU,
            "--retries", "0"]
    _fails_with_one_line(capsys, [*argv, "--max-consecutive-failures", "2"], "stopped after 2 consecutive failed")
    assert main([*argv, "--max-consecutive-failures", "0"]) == 1  # recorded, the others done
    summary = _last_json(capsys)
    assert (summary["failed"], summary["succeeded"]) == (2, 4)
    records = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in records) == sorted(dataset.ids[:2]) and "DataError" in records[0]["error"]


def test_pseudo_refine_stage_equals_refining_afterwards(irn_inputs, par_folder, tmp_path, capsys):  # noqa: F811
    base = ["pseudo", "--model", str(irn_inputs["clf"]), "--data", str(irn_inputs["data"]), "--workers", "0",
            "--scales", "1.0", *CPU]
    staged = tmp_path / "staged"
    assert main([*base, "--out", str(staged), "--refine", "par"]) == 0
    assert _labels(staged) == _labels(par_folder)  # identical PNGs
    for p in sorted((irn_inputs["maps"] / "maps").glob("*.npz")):  # the maps stay the method's
        # recomputed here, so equal up to float16 rounding of the CPU's float sums (thread counts differ by test order)
        with np.load(staged / "maps" / p.name) as got, np.load(p) as want:
            np.testing.assert_array_equal(got["class_ids"], want["class_ids"])
            np.testing.assert_allclose(got["maps"].astype(np.float32), want["maps"].astype(np.float32), atol=2e-3)
    manifest = json.loads((staged / "manifest.json").read_text())
    assert manifest["refine"] == PARRefiner().config() and manifest["refine_locations"] == {}
    capsys.readouterr()
    # the plain CAM folder (its manifest has no "refine") resumes as refine None; asking for a refiner is refused
    plain = json.loads((irn_inputs["maps"] / "manifest.json").read_text())
    assert "refine" not in plain and manifest_mismatch(plain, {**plain, "refine": None}) == []
    assert manifest_mismatch(plain, manifest) == ["refine"]
    err = _fails_with_one_line(capsys, [*base, "--out", str(irn_inputs["maps"]), "--refine", "par"], "differs in")
    assert "(differs in: refine)" in err
    _fails_with_one_line(capsys, [*base, "--out", str(staged), "--refine", "par", "--par-w2", "0.02"],
                         "refine.par.w2")


def test_pseudo_refine_irn_stage(irn_inputs, irn_run, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "staged_irn"
    assert main(["pseudo", "--model", str(irn_inputs["clf"]), "--data", str(irn_inputs["data"]), "--out", str(out),
                 "--workers", "0", "--scales", "1.0", *CPU, "--refine", "irn", "--irn", str(irn_run),
                 "--irn-exp-times", "6", "--limit", "2"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["refine"]["irn_sha256"] == file_sha256(irn_run)
    refiner = IRNRefiner.from_checkpoint(irn_run, IRNRefineConfig(exp_times=6))
    dataset = VOCDataset(irn_inputs["data"], "train")
    for image_id in dataset.ids[:2]:
        maps, class_ids = load_maps(out / "maps" / f"{image_id}.npz")
        assert np.array_equal(read_label_png(out / "labels" / f"{image_id}.png"),
                              refiner.refine(dataset.image(image_id), maps, class_ids))


def test_bad_input_is_one_line_exit_2_and_nothing_written(irn_inputs, irn_run, tmp_path, capsys):  # noqa: F811
    maps, data = irn_inputs["maps"], irn_inputs["data"]
    out = tmp_path / "out"

    def refused(name: str, source: Path, needle: str, *extra: str) -> None:
        _fails_with_one_line(capsys, ["refine", name, "--maps", str(source), "--out", str(out), *CPU, *extra], needle)
        assert not out.exists()

    bare = tmp_path / "bare"
    shutil.copytree(maps / "maps", bare / "maps")  # the maps without their manifest
    refused("par", bare, "no manifest.json")
    refused("irn", maps, "no checkpoint found", "--irn", str(tmp_path / "no_irn"))
    refused("irn", maps, "not an IRN", "--irn", str(irn_inputs["clf"]))
    other = tmp_path / "other_irn"
    save_irn(other / "model.safetensors", load_irn(irn_run), ["cat", "dog", "cow"])
    refused("irn", maps, "trained on classes ['cat', 'dog', 'cow']", "--irn", str(other))
    holes = tmp_path / "holes"
    shutil.copytree(data, holes)
    VOCDataset(holes, "train").image_path(VOCDataset(holes, "train").ids[4]).unlink()
    refused("par", maps, "1 of the 6 images", "--data", str(holes))
    refused("par", maps, "is the --maps folder", "--out", str(maps))  # the last --out wins: into the source
    refused("par", maps, "num_iter must be", "--par-num-iter", "-1")
    base = ["pseudo", "--model", str(irn_inputs["clf"]), "--data", str(data), "--out", str(out), "--workers", "0", *CPU]
    _fails_with_one_line(capsys, [*base, "--refine", "par", "--irn-beta", "5"], "--irn-beta applies to the irn")
    _fails_with_one_line(capsys, [*base, "--refine", "par", "--crf"], "--crf")
    _fails_with_one_line(capsys, [*base, "--refine", "irn"], "needs an IRN checkpoint")
    _fails_with_one_line(capsys, [*base, "--refine", "irn", "--irn", str(other)], "trained on classes")
    assert not out.exists()

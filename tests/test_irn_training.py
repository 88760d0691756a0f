"""`weakseg train irn` end to end on a tiny synthetic benchmark (issue 15): two steps through the CLI with the
classifier taken from the maps' manifest, cached ir labels, exact resume after an interruption, one-line exit-2
errors for bad input, and IRNRefiner's labels."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cli.main import main
from training.irn import IRNJob, irn_train_config, prepare_irn
from weakseg.data.voc import VOCDataset
from weakseg.engine import fit
from weakseg.io import read_label_png
from weakseg.models.checkpoint import read_metadata
from weakseg.models.irn import load_irn
from weakseg.refine.irn_refiner import IRNRefineConfig, IRNRefiner
from weakseg.refine.refiner import Refiner
from weakseg.report.seed_eval import load_maps

TRAIN_ARGS = ["--radius", "4", "--batch-size", "3", "--device", "cpu", "--quiet", "--threads", "1"]


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def irn_inputs(tmp_path_factory) -> dict[str, Path]:
    """A 6-image 64 px benchmark, a seeded untrained ResNet-18 classifier and its CAM maps (through the CLI)."""
    from weakseg.data.classes import load_classes
    from weakseg.models.classifier_io import save_classifier
    from weakseg.models.resnet_cam import CAMClassifier, ClassifierConfig

    root = tmp_path_factory.mktemp("irn")
    data, clf, maps = root / "VOC2012", root / "clf", root / "maps"
    synth = ["synth", "--out", str(data), "--train", "6", "--val", "2", "--ood", "0", "--classes", "3"]
    assert main([*synth, "--size", "64", "--no-progress"]) == 0
    torch.manual_seed(0)
    model = CAMClassifier(ClassifierConfig(num_classes=3)).eval()
    save_classifier(clf / "model.safetensors", model, load_classes(data))
    pseudo = ["pseudo", "--method", "cam", "--model", str(clf), "--data", str(data), "--out", str(maps)]
    assert main([*pseudo, "--workers", "0", "--scales", "1.0", "--quiet", "--device", "cpu"]) == 0
    return {"data": data, "clf": clf, "maps": maps, "root": root}


@pytest.fixture(scope="module")
def irn_run(irn_inputs) -> Path:
    """An IRN trained 1 epoch (2 steps of 3 images) through the CLI, the classifier from the maps' manifest."""
    run = irn_inputs["root"] / "irn"
    args = ["train", "irn", "--maps", str(irn_inputs["maps"]), "--data", str(irn_inputs["data"]), "--out", str(run)]
    threads = torch.get_num_threads()
    try:
        assert main([*args, "--epochs", "1", *TRAIN_ARGS]) == 0
    finally:
        torch.set_num_threads(threads)
    return run


def test_two_steps_through_the_cli_with_cached_ir_labels(irn_inputs, irn_run, capsys):
    record = json.loads((irn_run / "run.json").read_text())
    assert record["kind"] == "irn" and record["model"] == str(irn_inputs["clf"].resolve())  # from the manifest
    assert record["crop"] == 64 and record["train_images"] == 6 and record["radius"] == 4
    (epoch,) = record["history"]
    assert {"loss", "pos_aff", "neg_aff", "dp_fg", "dp_bg", "mean_shift_dy", "mean_shift_dx"} <= set(epoch)
    assert all(np.isfinite(epoch[k]) for k in ("loss", "pos_aff", "neg_aff", "dp_fg", "dp_bg"))
    assert read_metadata(irn_run)["kind"] == "irn"
    model = load_irn(irn_run, "cpu")
    assert model.classes == VOCDataset(irn_inputs["data"], "train").classes
    assert torch.equal(model.mean_shift, torch.tensor([epoch["mean_shift_dy"], epoch["mean_shift_dx"]]))
    # the branches moved away from their seeded initial weights
    job = IRNJob(maps=irn_inputs["maps"], data=irn_inputs["data"], out=irn_inputs["root"] / "fresh", radius=4)
    fresh = prepare_irn(job, torch.device("cpu"), progress=False).model
    assert not torch.equal(fresh.edge_out.weight, model.edge_out.weight)
    assert torch.equal(fresh.backbone.layer1[0].conv1.weight, model.backbone.layer1[0].conv1.weight)  # frozen

    dataset = VOCDataset(irn_inputs["data"], "train")
    cache = irn_run / "ir_labels"
    assert json.loads((cache / "settings.json").read_text())["fg_thresh"] == 0.30
    stamps = {}
    for image_id in dataset.ids:
        label = read_label_png(cache / f"{image_id}.png")
        _, class_ids = load_maps(irn_inputs["maps"] / "maps" / f"{image_id}.npz")
        assert label.shape == dataset.image_size(image_id)
        assert set(np.unique(label).tolist()) <= {0, 255, *class_ids.tolist()}
        stamps[image_id] = (cache / f"{image_id}.png").stat().st_mtime_ns
    args = ["train", "irn", "--maps", str(irn_inputs["maps"]), "--data", str(irn_inputs["data"]), "--out", str(irn_run)]
    assert main([*args, "--epochs", "1", *TRAIN_ARGS]) == 0
    assert _last_json(capsys.readouterr().out)["resumed_from_epoch"] == 1  # finished: nothing redone
    assert stamps == {i: (cache / f"{i}.png").stat().st_mtime_ns for i in dataset.ids}  # ir labels not recomputed
    labels = [read_label_png(cache / f"{i}.png") for i in dataset.ids]
    total = sum(label.size for label in labels)
    summary = json.loads((cache / "summary.json").read_text())
    assert summary["images"] == 6
    assert summary["confident_bg"] == pytest.approx(sum(int((x == 0).sum()) for x in labels) / total)
    assert summary["unsure"] == pytest.approx(sum(int((x == 255).sum()) for x in labels) / total)
    assert summary["confident_fg"] + summary["confident_bg"] + summary["unsure"] == pytest.approx(1.0)


def test_ir_label_fractions_and_the_warnings_that_name_the_threshold():
    from weakseg.refine.irn_labels import fraction_warnings, label_fractions

    a = np.array([[0, 0, 255, 3]], np.uint8)
    b = np.array([[255, 255, 255, 255], [1, 0, 255, 255]], np.uint8)
    f = label_fractions([a, b])
    assert f == pytest.approx({"confident_fg": 2 / 12, "confident_bg": 3 / 12, "unsure": 7 / 12})
    assert fraction_warnings(f, 0.3, 0.05) == []
    (bg,) = fraction_warnings({"confident_fg": 0.3, "confident_bg": 0.01, "unsure": 0.69}, 0.3, 0.05)
    assert "raise --bg-thresh" in bg and "1.0 %" in bg
    (fg,) = fraction_warnings({"confident_fg": 0.0, "confident_bg": 0.5, "unsure": 0.5}, 0.3, 0.05)
    assert "lower --fg-thresh" in fg


def test_interrupted_run_resumes_to_the_uninterrupted_weights(irn_inputs, tmp_path):
    base = ["train", "irn", "--maps", str(irn_inputs["maps"]), "--data", str(irn_inputs["data"])]
    threads = torch.get_num_threads()
    try:
        assert main([*base, "--out", str(tmp_path / "straight"), "--epochs", "2", *TRAIN_ARGS]) == 0
        # the same run, dying after epoch 1 was saved (as the CLI builds it: IRN's defaults, batch 3, radius 4)
        train = dataclasses.replace(irn_train_config(), epochs=2, batch_size=3)
        job = IRNJob(maps=irn_inputs["maps"], data=irn_inputs["data"], out=tmp_path / "resumed", radius=4, train=train)
        setup = prepare_irn(job, torch.device("cpu"), progress=False)

        def dies_at_epoch_2(model, epoch):
            if epoch == 2:
                raise KeyboardInterrupt  # before epoch 2 is saved
            return setup.on_epoch_end(model, epoch)

        with pytest.raises(KeyboardInterrupt):
            fit(
                setup.model,
                setup.loader,
                setup.loss_fn,
                train,
                job.out,
                setup.save,
                device=torch.device("cpu"),
                head_params=setup.model.displacement_parameters(),
                run_info=setup.run_info,
                progress=False,
                on_epoch_end=dies_at_epoch_2,
            )
        assert [h["epoch"] for h in json.loads((tmp_path / "resumed" / "run.json").read_text())["history"]] == [1]
        assert main([*base, "--out", str(tmp_path / "resumed"), "--epochs", "2", *TRAIN_ARGS]) == 0
    finally:
        torch.set_num_threads(threads)
    straight, resumed = load_irn(tmp_path / "straight"), load_irn(tmp_path / "resumed")
    for (key, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), key
    assert resumed.mean_shift.abs().sum() > 0
    history = json.loads((tmp_path / "resumed" / "run.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2]


def _fails_with_one_line(capsys, argv: list[str], needle: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("weakseg: error:") and needle in err, err


def test_bad_input_is_one_line_and_exit_2(irn_inputs, tmp_path, capsys):
    data, maps = str(irn_inputs["data"]), irn_inputs["maps"]
    base = ["train", "irn", "--data", data, "--epochs", "1", *TRAIN_ARGS]
    bare = tmp_path / "bare"
    shutil.copytree(maps / "maps", bare / "maps")  # the maps without their manifest
    _fails_with_one_line(capsys, [*base, "--maps", str(bare), "--out", str(tmp_path / "r1")], "manifest")
    _fails_with_one_line(capsys, [*base, "--maps", str(bare / "maps"), "--out", str(tmp_path / "r1")], "manifest")
    missing = tmp_path / "no_clf"
    _fails_with_one_line(
        capsys, [*base, "--maps", str(maps), "--model", str(missing), "--out", str(tmp_path / "r2")], "no checkpoint"
    )
    moved = tmp_path / "moved"
    shutil.copytree(maps, moved)
    manifest = json.loads((moved / "manifest.json").read_text())
    (moved / "manifest.json").write_text(json.dumps({**manifest, "model": str(missing)}))
    _fails_with_one_line(capsys, [*base, "--maps", str(moved), "--out", str(tmp_path / "r3")], "no checkpoint")
    del manifest["model"]  # a manifest from before manifests named the classifier
    (moved / "manifest.json").write_text(json.dumps(manifest))
    _fails_with_one_line(capsys, [*base, "--maps", str(moved), "--out", str(tmp_path / "r3")], "pass --model")
    gaps = tmp_path / "gaps"
    shutil.copytree(maps, gaps)
    first = sorted((gaps / "maps").glob("*.npz"))[0]
    first.unlink()
    _fails_with_one_line(capsys, [*base, "--maps", str(gaps), "--out", str(tmp_path / "r4")], "have no maps")
    assert not (tmp_path / "r4" / "model.safetensors").exists()
    assert main([*base, "--maps", str(gaps), "--out", str(tmp_path / "r5"), "--skip-missing"]) == 0
    assert json.loads((tmp_path / "r5" / "run.json").read_text())["train_images"] == 5
    capsys.readouterr()
    # 64 px crops: a 16 x 16 grid at stride 4 holds no pair within the authors' radius 10
    radius10 = [*base, "--maps", str(maps), "--out", str(tmp_path / "r6"), "--radius", "10"]  # the last --radius wins
    _fails_with_one_line(capsys, radius10, "no pair")


def test_irn_refiner_labels_hold_only_the_images_classes_and_background(irn_inputs, irn_run):
    refiner = IRNRefiner.from_checkpoint(irn_run)
    assert isinstance(refiner, Refiner)
    config = refiner.config()
    assert config["name"] == "irn" and len(config["irn_sha256"]) == 64
    assert {k: config[k] for k in ("beta", "exp_times", "radius", "bg_thresh")} == {
        "beta": 10.0,
        "exp_times": 8,
        "radius": 5,
        "bg_thresh": 0.25,
    }
    dataset = VOCDataset(irn_inputs["data"], "train")
    seen: set[int] = set()
    for image_id in dataset.ids:
        image = dataset.image(image_id)
        maps, class_ids = load_maps(irn_inputs["maps"] / "maps" / f"{image_id}.npz")
        label = refiner.refine(image, maps, class_ids)
        assert label.dtype == np.uint8 and label.shape == image.shape[:2]
        assert set(np.unique(label).tolist()) <= {0, *class_ids.tolist()}
        seen |= set(np.unique(label).tolist())
    assert seen - {0}  # some class survives the walk
    image = dataset.image(dataset.ids[0])
    maps, class_ids = load_maps(irn_inputs["maps"] / "maps" / f"{dataset.ids[0]}.npz")
    empty = refiner.refine(image, maps[:0], class_ids[:0])
    assert empty.shape == image.shape[:2] and not empty.any()
    all_bg = IRNRefiner(refiner.model, IRNRefineConfig(bg_thresh=1.01)).refine(image, maps, class_ids)
    assert not all_bg.any()  # the walked scores are divided by their maximum: nothing beats 1.01
    no_bg = IRNRefiner(refiner.model, IRNRefineConfig(bg_thresh=-1.0)).refine(image, maps, class_ids)
    assert no_bg.all()
    with pytest.raises(ValueError, match="maps are"):
        refiner.refine(image[:32], maps, class_ids)

"""One place for each default (issue 16, item 6): W-OoD defaults come from weakseg.ood.losses everywhere, the
benchmark's cached runs keep their names, --init refuses a contradicting architecture, boolean flags are strict."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest
import torch

from benchmarks import wood_table
from benchmarks.attribution_common import short_hash
from cli import main as cli_main
from cli.common import parse_bool
from cli.method_args import add_method_options, method_from_args
from cli.ood_cmd import wood_job_from_args
from training.classifier import ClassifierJob, build_classifier
from training.wood import WoodJob
from weakseg.data.classes import load_classes
from weakseg.errors import WeaksegError
from weakseg.ood.losses import CODE_TRAINING, DEFAULT_VARIANT, WoodLossConfig, variant_training


def test_library_defaults_are_the_authors_code() -> None:
    assert DEFAULT_VARIANT == "code"
    assert WoodLossConfig() == WoodLossConfig.code()
    assert WoodLossConfig().to_dict() == {"lam": 0.007, "tau": 0.2, "k_max": 50, "ood_weight": 0.25, "pull": True,
                                          "push": True, "distance": "euclidean", "reduction": "mean",
                                          "in_scale": "classes_over_k", "scope": "batch"}
    assert WoodLossConfig.text().to_dict() == {**WoodLossConfig().to_dict(), "ood_weight": 1.0, "reduction": "sum",
                                               "in_scale": "one", "scope": "image"}
    job = WoodJob(classifier=ClassifierJob(data=Path("d"), out=Path("o")), ood=Path("x"))
    assert (job.centre_every, job.adv_steps) == (0, 1) == (CODE_TRAINING["centre_every"], CODE_TRAINING["adv_steps"])
    assert variant_training("text") == {"centre_every": 1, "adv_steps": 0}
    with pytest.raises(WeaksegError, match="unknown variant 'paper'"):
        WoodLossConfig.variant("paper")


def _train_args(*extra: str) -> argparse.Namespace:
    parser = cli_main.build_parser("train")
    return parser.parse_args(["train", "classifier", "--data", "d", "--out", "o", "--init", "i", "--ood", "x", *extra])


def _cjob(args: argparse.Namespace) -> ClassifierJob:
    return ClassifierJob(data=args.data, out=args.out, init=args.init)


def test_cli_wood_defaults_are_the_library_defaults() -> None:
    """With no W-OoD flag the CLI's job is WoodJob's own defaults, field by field; --wood-variant text is the text."""
    args = _train_args()
    cjob = _cjob(args)
    assert wood_job_from_args(args, cjob) == WoodJob(classifier=cjob, ood=args.ood)
    text = _train_args("--wood-variant", "text")
    assert wood_job_from_args(text, cjob) == WoodJob(classifier=cjob, ood=text.ood, loss=WoodLossConfig.text(),
                                                     **variant_training("text"))
    # an explicit flag beats the variant's default
    mixed = wood_job_from_args(_train_args("--wood-variant", "text", "--wood-reduction", "mean", "--wood-adv-steps", "2"), cjob)
    assert mixed.loss.reduction == "mean" and mixed.loss.scope == "image" and mixed.adv_steps == 2 and mixed.centre_every == 1


def _bench_args() -> argparse.Namespace:
    return argparse.Namespace(epochs=3, lr=1e-4, batch_size=16, ood_batch_size=8, crop=128, wood=[],
                              head_lr_mult=1.0)


@pytest.mark.parametrize("variant", ["code", "text"])
def test_benchmark_runs_keep_their_cached_names(variant: str) -> None:
    """The records that name cached fine-tunes are those written before the defaults moved (written out here)."""
    a = _bench_args()
    a.wood_variant = variant
    base = wood_table.base_loss(a)
    common = {"base": "sha", "ood": "a.png\n", "seed": 1, "epochs": 3, "lr": 1e-4, "batch": 16, "ood_batch": 8, "crop": 128}
    text_f = {"lam": 0.007, "tau": 0.2, "k_max": 50, "ood_weight": 1.0, "pull": True, "push": True,
              "distance": "euclidean", "reduction": "sum", "in_scale": "one", "scope": "image"}
    code_f = {**text_f, "ood_weight": 0.25, "reduction": "mean", "in_scale": "classes_over_k", "scope": "batch"}
    expected_f = {"name": "f", **common, "loss": code_f if variant == "code" else text_f,
                  **({"job": {"centre_every": 0, "adv_steps": 1}} if variant == "code" else {})}
    expected_a = {"name": "a", **common, "loss": {**text_f, "ood_weight": 0.0, "pull": False, "push": False}}
    for row, expected in (("f", expected_f), ("a", expected_a)):
        loss = wood_table.loss_for(row, base)
        settings = wood_table.finetune_settings(loss, variant_training(variant))
        record = wood_table.finetune_record(a, row, "sha", "a.png\n", loss, 1, settings)
        assert record == expected and short_hash(record) == short_hash(expected)
        # and the fine-tune really runs with the variant's settings (row (a): the text's, which do nothing there)
        assert settings == variant_training(variant if row == "f" else "text")


def test_benchmark_rejects_a_bool_typo() -> None:
    a = _bench_args()
    a.wood_variant, a.wood = "code", ["pull=ture"]
    with pytest.raises(SystemExit, match="pull=ture.*expected a boolean"):
        wood_table.base_loss(a)
    a.wood = ["pull=no"]
    assert wood_table.base_loss(a).pull is False


@pytest.mark.parametrize("text,value", [("true", True), ("YES", True), ("1", True), ("on", True),
                                        ("false", False), ("No", False), ("0", False), ("off", False)])
def test_parse_bool_accepts_the_usual_words(text: str, value: bool) -> None:
    assert parse_bool(text) is value


def test_a_bool_method_flag_typo_is_an_error(capsys) -> None:
    p = argparse.ArgumentParser()
    add_method_options(p)
    with pytest.raises(SystemExit) as e:
        p.parse_args(["--method", "advcam", "--advcam-restrict", "ture"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--advcam-restrict: expected a boolean" in err and "got 'ture'" in err
    assert method_from_args(p.parse_args(["--method", "advcam", "--advcam-restrict", "no"])).restrict is False
    assert method_from_args(p.parse_args(["--method", "rib", "--rib-disjoint", "TRUE"])).disjoint is True


def test_init_takes_the_architecture_of_the_init_classifier(tiny_synth, random_model, tmp_path) -> None:
    classes = load_classes(tiny_synth)
    cpu = torch.device("cpu")
    same = build_classifier(ClassifierJob(data=tiny_synth, out=tmp_path, init=random_model), classes, cpu)
    assert same.config.arch == "resnet18" and same.config.output_stride == 8
    assert build_classifier(ClassifierJob(data=tiny_synth, out=tmp_path, init=random_model, arch="resnet18",
                                          head="cam"), classes, cpu).config == same.config
    with pytest.raises(WeaksegError, match=r"has arch resnet18, output stride 8; --arch resnet50, --output-stride 16 contradicts"):
        build_classifier(ClassifierJob(data=tiny_synth, out=tmp_path, init=random_model, arch="resnet50",
                                       output_stride=16), classes, cpu)
    fresh = build_classifier(ClassifierJob(data=tiny_synth, out=tmp_path, output_stride=16), classes, cpu)
    defaults = dataclasses.asdict(fresh.config)
    assert defaults["arch"] == "resnet18" and defaults["output_stride"] == 16 and defaults["head"] == "cam"


def test_cli_init_with_another_arch_is_a_one_line_error(tiny_synth, random_model, tmp_path, capsys) -> None:
    rc = cli_main.main(["train", "classifier", "--data", str(tiny_synth), "--out", str(tmp_path / "r"), "--init",
                        str(random_model), "--arch", "resnet50", "--epochs", "1", "--val-split", "", "--device", "cpu",
                        "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "--arch resnet50 contradicts" in err
    assert not (tmp_path / "r" / "run.json").exists()


def test_a_missing_subcommand_module_is_an_error(monkeypatch) -> None:
    """No silent 'not landed yet' fallback: every listed command module must import."""
    monkeypatch.setattr(cli_main, "SUBCOMMAND_MODULES", (*cli_main.SUBCOMMAND_MODULES, "cli.nonexistent_cmd"))
    with pytest.raises(ModuleNotFoundError, match="cli.nonexistent_cmd"):
        cli_main.build_parser()

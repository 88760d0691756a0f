"""`weakseg ... --help` names each subcommand's real options with the defaults the README documents.

The expected commands, options and defaults below are written out by hand from the README (command table,
attribution-method table, pseudo-label thresholds), not read from the parsers, so a dropped command, a
renamed or hidden option, or a changed documented default fails here.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

import pytest

from cli.main import build_parser, main

# Every leaf command with options its help must name (README "Command line" table plus the shared ones).
EXPECTED_OPTIONS: dict[str, tuple[str, ...]] = {
    "synth": ("--out", "--seed", "--body-strength", "--context-prob", "--class-context-prob", "--train", "--val",
              "--ood", "--size"),
    "data fetch": ("--root", "--url", "--sha256", "--keep-archive", "--quiet"),
    "data check": ("--data", "--split", "--no-decode"),
    "train classifier": ("--data", "--out", "--epochs", "--arch", "--pretrained", "--init", "--ood", "--head",
                         "--device", "--threads"),
    "train segmenter": ("--data", "--out", "--epochs", "--labels", "--device"),
    "train detector": ("--data", "--out", "--epochs", "--arch", "--pretrained", "--split", "--val-split", "--min-size",
                       "--max-size", "--device", "--threads"),
    "train instance": ("--data", "--labels", "--out", "--epochs", "--arch", "--pretrained", "--split", "--val-split",
                       "--min-size", "--max-size", "--mask-head-dim", "--device"),
    "train irn": ("--maps", "--data", "--out", "--model", "--epochs", "--batch-size", "--lr", "--crop", "--radius",
                  "--device"),
    "pseudo": ("--method", "--model", "--data", "--split", "--out", "--crf", "--scales", "--no-flip", "--limit",
               "--retries", "--fg-thresh", "--bg-thresh", "--device", "--gradcam-target-layer", "--advcam-steps",
               "--advcam-xi", "--advcam-lam", "--advcam-tau", "--advcam-variant", "--rib-steps", "--rib-lr",
               "--rib-batch", "--rib-margin", "--rib-tau", "--rib-data", "--fickle-samples", "--refine", "--irn",
               "--irn-beta", "--par-num-iter", "--workers", "--address", "--detector", "--difficult", "--skip-bad",
               "--bbam-iterations", "--bbam-proposals", "--bbam-iou-cascade", "--mask-th-fg", "--grabcut-iterations"),
    "refine irn": ("--maps", "--out", "--data", "--irn", "--irn-beta", "--irn-exp-times", "--irn-radius",
                   "--irn-bg-thresh", "--limit", "--retries", "--max-consecutive-failures", "--device", "--workers",
                   "--address"),
    "refine par": ("--maps", "--out", "--data", "--par-dilations", "--par-num-iter", "--par-w1", "--par-w2", "--par-eps",
                   "--par-normalize", "--par-bg-score", "--limit", "--device", "--workers", "--address"),
    "eval seeds": ("--data", "--split", "--maps", "--crf"),
    "eval labels": ("--data", "--split", "--labels"),
    "eval segmenter": ("--model", "--data", "--split", "--device"),
    "eval detector": ("--model", "--data", "--split", "--device"),
    "eval instance": ("--model", "--labels", "--data", "--split", "--mask-threshold", "--abo-score", "--device"),
    "demo": ("--out", "--device"),
    "export": ("--model", "--repo", "--name"),
    "predict": ("--model", "--images", "--out", "--device"),
    "ood mine": ("--model", "--pool", "--out", "--threshold"),
    "ood review": ("--candidates", "--oracle", "--accept-all"),
    "serve": ("--repo", "--backend", "--port", "--device", "--max-bbam-iterations", "--max-bbam-proposals"),
    "client segment": ("--model", "--out", "--server"),
    "client explain": ("--model", "--out", "--method", "--box", "--bbam-iterations", "--bbam-proposals", "--server"),
    "client overlay": ("--model", "--out", "--method", "--server"),
    "client detect": ("--model", "--out", "--min-score", "--max-detections", "--mask-threshold", "--server"),
    "client models": ("--server",),
}

# Defaults the README states (the dissertation's values for the methods, IRN's thresholds, the benchmark's size).
DOCUMENTED_DEFAULTS: dict[str, dict[str, str | float | re.Pattern]] = {
    "synth": {"--seed": 0, "--body-strength": 0.3, "--context-prob": 0.8, "--train": 600, "--val": 150,
              "--ood": 200, "--size": 128},
    # --arch: resnet18 unless --init names a classifier, whose architecture then applies (the help says so)
    "train classifier": {"--epochs": 12, "--arch": re.compile(r"default:? resnet18\b"), "--device": "auto"},
    # IRN: the authors' 3 epochs, lr 0.1, x10 displacement branch, weight decay 1e-4, training radius 10, SGD
    "train irn": {"--epochs": 3, "--lr": 0.1, "--head-lr-mult": 10, "--weight-decay": 1e-4, "--radius": 10,
                  "--optimizer": "sgd", "--fg-thresh": 0.30, "--bg-thresh": 0.05},
    "pseudo": {"--split": "train", "--method": "cam", "--fg-thresh": 0.30, "--bg-thresh": 0.05,
               "--scales": "[1.0, 0.5, 1.5, 2.0]", "--gradcam-target-layer": "layer3", "--advcam-steps": 27,
               "--advcam-xi": 0.008, "--advcam-lam": 7, "--advcam-tau": 0.5, "--rib-steps": 10, "--rib-lr": 8e-6,
               "--rib-batch": 20, "--rib-margin": 600, "--rib-tau": 0.4, "--fickle-samples": 200,
               # BBAM (the authors' 300 Adam steps, 1000 proposals, lambda 0.007, the IoU cascade) and its masks
               "--bbam-iterations": 300, "--bbam-proposals": 1000, "--bbam-lam": 0.007,
               "--bbam-iou-cascade": "(0.9, 0.85, 0.8)", "--mask-th-fg": 0.85, "--mask-th-loose": 0.2,
               "--difficult": "ignore"},
    # the refiners: IRN's walk (beta 10, 2^8 steps, radius 5, background 0.25) and PAR (AFA/ToCo), in-process default
    "refine irn": {"--irn-beta": 10, "--irn-exp-times": 8, "--irn-radius": 5, "--irn-bg-thresh": 0.25, "--workers": 0},
    "refine par": {"--par-dilations": "[1, 2, 4, 8, 12, 24]", "--par-num-iter": 10, "--par-w1": 0.3, "--par-w2": 0.01,
                   "--par-bg-score": 0.25, "--par-normalize": "True", "--workers": 0},
    # the detector: MobileNetV3-FPN from scratch at torchvision's low-resolution CPU input size (320 / 640)
    "train detector": {"--arch": "mobilenet_v3", "--epochs": 12, "--min-size": 320, "--max-size": 640,
                       "--device": "auto"},
    "eval detector": {"--split": "val"},
    # Mask R-CNN: the detector's defaults; eval's mask threshold and ABO score cut
    "train instance": {"--arch": "mobilenet_v3", "--epochs": 12, "--min-size": 320, "--max-size": 640,
                       "--mask-head-dim": 256, "--device": "auto"},
    "eval instance": {"--mask-threshold": 0.5, "--abo-score": 0.5},
    "ood mine": {"--threshold": 0.5},
    "serve": {"--backend": "embedded", "--port": 8001},
    "demo": {"--out": "demo_out"},
}


def leaf_commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> dict[str, argparse.ArgumentParser]:
    """'train classifier' -> its parser, for every command without further subcommands."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]  # noqa: SLF001
    if not subs:
        return {" ".join(path): parser}
    found: dict[str, argparse.ArgumentParser] = {}
    for action in subs:
        for name, sub in action.choices.items():
            found.update(leaf_commands(sub, (*path, name)))
    return found


def help_entries(text: str) -> dict[str, str]:
    """Option string -> its help entry (whitespace collapsed), parsed from the printed help."""
    entries: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("  -"):
            invocation = line.strip().split("  ")[0]  # "-h, --help" / "--method {cam,gradcam}" / "--out OUT"
            current = [line.strip()]
            for option in re.findall(r"(?:^|, )(--?[A-Za-z0-9][\w-]*)", invocation):
                entries[option] = current
        elif current is not None and line.startswith("    "):
            current.append(line.strip())
        else:
            current = None
    return {option: " ".join(lines) for option, lines in entries.items()}


def printed_help(capsys, command: str) -> str:
    """What `weakseg <command> --help` prints, run through main() (lazy parser import) with exit status 0."""
    with pytest.raises(SystemExit) as e:
        main([*command.split(), "--help"])
    assert e.value.code == 0, command
    out = capsys.readouterr().out
    assert out.startswith(f"usage: weakseg {command} "), out[:80]
    return out


def test_the_command_tree_is_the_documented_one() -> None:
    assert sorted(leaf_commands(build_parser())) == sorted(EXPECTED_OPTIONS)


def test_top_level_help_of_the_console_entry_lists_every_command() -> None:
    proc = subprocess.run([sys.executable, "-m", "cli.main", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    listed = set(re.findall(r"^    (\w+)\s", proc.stdout, re.M))
    assert listed == {c.split()[0] for c in EXPECTED_OPTIONS}


@pytest.mark.parametrize("command", sorted(EXPECTED_OPTIONS))
def test_each_subcommand_help_names_its_real_options(command: str, capsys) -> None:
    text = printed_help(capsys, command)
    entries = help_entries(text)
    for option in EXPECTED_OPTIONS[command]:
        assert option in entries, (command, option)
        assert re.search(rf"[\[ ]{re.escape(option)}[\]\s=]", text.split("\n\n")[0] + " "), (command, option)  # usage
    parser = leaf_commands(build_parser())[command]
    accepted = {s for a in parser._actions for s in a.option_strings}  # noqa: SLF001
    assert set(entries) == accepted, (command, sorted(set(entries) ^ accepted))  # none hidden, none invented
    for option, value in DOCUMENTED_DEFAULTS.get(command, {}).items():
        if isinstance(value, re.Pattern):  # a default stated in the help's own words
            assert value.search(entries[option]), (command, option, entries[option])
            continue
        shown = re.search(r"\(default: (.*?)\)$", entries[option])
        assert shown, (command, option, entries[option])
        if isinstance(value, str):
            assert shown.group(1) == value, (command, option, shown.group(1))
        else:
            assert float(shown.group(1)) == pytest.approx(value), (command, option, shown.group(1))


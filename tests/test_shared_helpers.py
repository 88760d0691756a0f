"""Helpers that had copies (issue 16, item 7): one definition each, with the values the copies gave."""

from __future__ import annotations

import hashlib
import re
import socket
from pathlib import Path

import numpy as np

from batch.pseudo_job import image_seed
from serving.ports import free_port
from weakseg.attribution.keys import stable_hash
from weakseg.data.fetch import sha256_file as fetch_sha256_file
from weakseg.io import json_float, sha256_file
from weakseg.models.checkpoint import file_sha256

ROOT = Path(__file__).resolve().parents[1]
TREES = ("weakseg", "serving", "batch", "training", "cli", "tests", "benchmarks")


def _definitions(name: str) -> list[str]:
    pattern = re.compile(rf"^\s*def {re.escape(name)}\(", re.MULTILINE)
    return [str(p.relative_to(ROOT)) for tree in TREES for p in sorted((ROOT / tree).rglob("*.py"))
            if pattern.search(p.read_text(encoding="utf-8"))]


def test_each_helper_is_defined_once() -> None:
    assert _definitions("free_port") == ["serving/ports.py"]
    assert _definitions("json_float") == ["weakseg/io.py"] and _definitions("_json_float") == []
    assert _definitions("sha256_file") == ["weakseg/io.py"]
    assert _definitions("stable_hash") == ["weakseg/attribution/keys.py"]
    sha_seeds = [str(p.relative_to(ROOT)) for tree in TREES[:5] for p in sorted((ROOT / tree).rglob("*.py"))
                 if "int.from_bytes(hashlib.sha256" in p.read_text(encoding="utf-8")]
    assert sha_seeds == ["weakseg/attribution/keys.py"]


def test_image_seeds_are_the_ones_runs_were_made_with() -> None:
    """The batch seed is the former formula, written out: sha256 of the id, 8 bytes little-endian, 63 bits."""
    for image_id in ("2007_000032", "synth_000017", "ünïcode"):
        expected = int.from_bytes(hashlib.sha256(image_id.encode()).digest()[:8], "little") & (2**63 - 1)
        assert image_seed(image_id) == expected
        assert stable_hash(image_id) & (2**63 - 1) == expected


def test_file_digests_agree(tmp_path: Path) -> None:
    data = bytes(range(256)) * 9000  # over two 1 MiB chunks
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert sha256_file(path) == fetch_sha256_file(path) == file_sha256(path) == expected
    assert file_sha256(tmp_path) == expected  # a run folder names its model.safetensors


def test_json_float() -> None:
    assert json_float(float("nan")) is None and json_float(None) is None
    value = json_float(np.float32(0.25))
    assert value == 0.25 and type(value) is float


def test_free_port_can_be_bound() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        assert s.getsockname()[1] == port

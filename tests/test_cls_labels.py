"""cls_labels.npy: the real IRN file, and pickles carrying code that must be refused without running."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest

from weakseg.data.classes import VOC_CLASSES
from weakseg.data.cls_labels import (
    key_to_split_id,
    load_cls_labels,
    lookup_cls_labels,
    restricted_loads,
    save_cls_labels,
    split_id_to_key,
)
from weakseg.errors import DataError
from tests.shared_data import IRN_LISTS

REAL = IRN_LISTS / "cls_labels.npy"
IRN = REAL.parent


def npy_of(obj: object) -> bytes:
    """What np.save writes for a pickled object (the cls_labels.npy layout)."""
    buf = io.BytesIO()
    np.save(buf, obj, allow_pickle=True)
    return buf.getvalue()


class TestRealFile:
    def test_keys_and_values(self) -> None:
        table = load_cls_labels(REAL)
        assert len(table) == 12031
        assert all(type(k) is int for k in table)
        for vec in table.values():
            assert vec.dtype == np.float32 and vec.shape == (20,)
            assert set(np.unique(vec).tolist()) <= {0.0, 1.0} and vec.sum() >= 1
        first = table[2007000032]
        assert [VOC_CLASSES[i] for i in np.flatnonzero(first)] == ["aeroplane", "person"]

    def test_covers_the_irn_split_lists(self) -> None:
        table = load_cls_labels(REAL)
        for name in ("train.txt", "val.txt", "train_aug.txt"):
            ids = [l.strip() for l in (IRN / name).read_text().splitlines() if l.strip()]
            missing = [i for i in ids if lookup_cls_labels(table, i) is None]
            assert not missing, (name, missing[:3])
        assert {key_to_split_id(k) for k in table} >= set((IRN / "train_aug.txt").read_text().split())

    def test_starts_as_a_protocol_2_py2_style_pickle(self) -> None:
        data = REAL.read_bytes()
        assert data[:6] == b"\x93NUMPY"
        assert b"numpy.core.multiarray" in data[:400] and b"_codecs" in data[:400]


def test_key_mapping() -> None:
    assert split_id_to_key("2007_000032") == 2007000032
    assert key_to_split_id(2007000032) == "2007_000032"
    assert key_to_split_id(split_id_to_key("2011_003276")) == "2011_003276"
    assert split_id_to_key("synth_0001") == "synth_0001" and key_to_split_id("synth_0001") == "synth_0001"
    table = {2007000032: np.ones(2, np.float32), "synth_0001": np.zeros(2, np.float32)}
    assert lookup_cls_labels(table, "2007_000032") is table[2007000032]
    assert lookup_cls_labels(table, "synth_0001") is table["synth_0001"]
    assert lookup_cls_labels(table, "2007_000033") is None


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    table = {2007000032: np.array([1, 0, 1], np.float32), "img_a": np.array([0, 1, 0], np.float64)}
    save_cls_labels(tmp_path / "c.npy", table)
    loaded = load_cls_labels(tmp_path / "c.npy")
    assert set(loaded) == {2007000032, "img_a"}
    assert loaded["img_a"].dtype == np.float32
    np.testing.assert_array_equal(loaded[2007000032], [1, 0, 1])


def test_numpy_integer_keys_from_numpy2(tmp_path: Path) -> None:
    path = tmp_path / "c.npy"
    path.write_bytes(npy_of({np.int32(2007000032): np.ones(4, np.float32), np.int64(5): np.zeros(4, np.float32)}))
    assert set(load_cls_labels(path)) == {2007000032, 5}


class System:
    """Pickles as os.system(cmd)."""

    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


class Eval:
    """Pickles as builtins.eval(code)."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self):
        return (eval, (self.code,))


class Popen:
    """Pickles as subprocess.Popen(args)."""

    def __init__(self, args: list[str]) -> None:
        self.args = args

    def __reduce__(self):
        return (subprocess.Popen, (self.args,))


@pytest.mark.parametrize("make,refused", [
    (lambda p: System(f"touch {p}"), "posix.system"),
    (lambda p: Eval(f"open({str(p)!r}, 'w').close()"), "builtins.eval"),
    (lambda p: Popen(["touch", str(p)]), "subprocess.Popen"),
])
def test_code_carrying_pickle_is_refused_and_not_run(tmp_path: Path, make, refused: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "cls_labels.npy"
    # The malicious object sits inside an otherwise valid table, saved exactly like cls_labels.npy.
    path.write_bytes(npy_of({2007000032: np.ones(20, np.float32), 2007000033: make(marker)}))
    with pytest.raises(DataError, match=f"unsafe or corrupt pickle \\(refused global {refused}\\)") as e:
        load_cls_labels(path)
    assert str(e.value).startswith(str(path))
    assert not marker.exists()


def test_hand_written_pickles_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for payload in (
        b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.",  # protocol 0 GLOBAL + REDUCE
        b"cbuiltins\ngetattr\n(cbuiltins\ndict\nS'get'\ntR.",
        b"c_codecs\nencode\n(S'abc'\nS'rot13'\ntR.",  # _codecs.encode only for text codecs
        b"cnumpy\nload\n.",
    ):
        with pytest.raises(DataError, match="unsafe or corrupt pickle"):
            restricted_loads(payload, source="p")
    assert not marker.exists()


def test_persistent_ids_are_refused() -> None:
    with pytest.raises(DataError, match="refused persistent id"):
        restricted_loads(b"P1\n.", source="p")


@pytest.mark.parametrize("content,message", [
    (b"not numpy at all", "not a .npy file"),
    (None, "cls_labels file not found"),
])
def test_not_a_npy(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "c.npy"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        load_cls_labels(path)


def test_wrong_payloads(tmp_path: Path) -> None:
    path = tmp_path / "c.npy"
    np.save(path, np.ones(3, np.float32))
    with pytest.raises(DataError, match="expected a pickled dict"):
        load_cls_labels(path)
    path.write_bytes(npy_of(np.array([{1: 2}, {3: 4}], dtype=object)))
    with pytest.raises(DataError, match="expected a 0-d object array holding a dict"):
        load_cls_labels(path)
    path.write_bytes(npy_of({1: np.ones(3)})[:-20])
    with pytest.raises(DataError, match="corrupt pickle"):
        load_cls_labels(path)
    path.write_bytes(npy_of({1: np.ones(3), 2: np.ones(4)}))
    with pytest.raises(DataError, match="value for 2 has 4 entries, others have 3"):
        load_cls_labels(path)
    path.write_bytes(npy_of({1: "aeroplane"}))
    with pytest.raises(DataError, match="value for 1 must be a 1-D numeric vector"):
        load_cls_labels(path)
    path.write_bytes(npy_of({(1, 2): np.ones(3)}))
    with pytest.raises(DataError, match="neither an integer nor a string"):
        load_cls_labels(path)


def test_plain_pickle_of_dict_loads() -> None:
    obj = {"a": [1, 2.5, (3, "x")], 4: {5}}
    assert restricted_loads(pickle.dumps(obj, protocol=2)) == obj
    assert restricted_loads(pickle.dumps(obj, protocol=5)) == obj

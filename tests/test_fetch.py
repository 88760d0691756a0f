"""`weakseg data fetch` offline: tiny archives built in tmp_path, served through file:// URLs."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

from cli.main import main
from weakseg.data.coco import CocoDataset
from weakseg.data.fetch import (
    DATASETS,
    ArchiveSpec,
    download,
    fetch_archive,
    fetch_dataset,
    make_train_aug_ids,
    safe_extract,
    select_parts,
    sha256_file,
)
from weakseg.data.voc import VOCDataset
from weakseg.errors import DataError
from tests.shared_data import VOC_SAMPLE

VOC = VOC_SAMPLE
IDS = ["2007_000032", "2007_000039"]
ZERO_SHA = "0" * 64


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """Add a regular file member."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def tiny_voc_tar(path: Path, mode: str = "w") -> Path:
    """A VOCtrainval-like tar (VOCdevkit/VOC2012/...) holding two real sample images."""
    with tarfile.open(path, mode) as tar:
        base = "VOCdevkit/VOC2012"
        for i in IDS:
            tar.add(VOC / "JPEGImages" / f"{i}.jpg", f"{base}/JPEGImages/{i}.jpg")
            tar.add(VOC / "Annotations" / f"{i}.xml", f"{base}/Annotations/{i}.xml")
            tar.add(VOC / "SegmentationClass" / f"{i}.png", f"{base}/SegmentationClass/{i}.png")
        add_bytes(tar, f"{base}/ImageSets/Segmentation/train.txt", f"{IDS[0]}\n".encode())
        add_bytes(tar, f"{base}/ImageSets/Segmentation/val.txt", f"{IDS[1]}\n".encode())
    return path


def files_under(root: Path) -> list[str]:
    """Every path below root, relative (to check nothing was left behind)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


@pytest.fixture
def voc_tar(tmp_path: Path) -> tuple[Path, str]:
    """(archive, sha256) of a tiny VOC tar outside the destination root."""
    src = tmp_path / "src"
    src.mkdir()
    archive = tiny_voc_tar(src / "VOCtrainval_tiny.tar")
    return archive, sha256_file(archive)


def test_known_archives_have_real_checksums() -> None:
    for name, specs in DATASETS.items():
        for spec in specs:
            assert spec.sha256 is None or len(spec.sha256) == 64, (name, spec.part)
            assert spec.url.startswith(("http://", "https://"))
    assert DATASETS["voc"][0].filename == "VOCtrainval_11-May-2012.tar"
    assert [s.part for s in select_parts("coco", ["val", "annotations"])] == ["annotations", "val"]
    with pytest.raises(DataError, match="unknown part"):
        select_parts("coco", ["test"])
    with pytest.raises(DataError, match="unknown dataset"):
        select_parts("imagenet")


def test_fetch_voc_with_correct_checksum(tmp_path: Path, voc_tar: tuple[Path, str]) -> None:
    archive, sha = voc_tar
    root = tmp_path / "data"
    where = fetch_dataset("voc", root, urls=[archive.as_uri()], sha256s=[sha.upper()], progress=False)
    assert where == root / "VOCdevkit" / "VOC2012"
    ds = VOCDataset(where, "train")
    assert ds.ids == [IDS[0]] and ds.validate() == [IDS[0]]
    assert ds.mask(IDS[0]).shape == ds.image(IDS[0]).shape[:2]
    assert not (root / archive.name).exists()  # archive removed by default
    assert not [p for p in files_under(root) if ".extract-" in p or p.endswith(".part")]


def test_keep_archive_then_skip_when_present(tmp_path: Path, voc_tar: tuple[Path, str], capsys) -> None:
    archive, sha = voc_tar
    root = tmp_path / "data"
    fetch_dataset("voc", root, urls=[archive.as_uri()], sha256s=[sha], keep_archive=True, progress=False)
    assert sha256_file(root / archive.name) == sha
    archive.unlink()  # a second run neither needs nor touches the source
    fetch_dataset("voc", root, urls=[archive.as_uri()], sha256s=[sha], progress=False)
    assert "already present; skipping trainval" in capsys.readouterr().err
    shutil.rmtree(root / "VOCdevkit")
    fetch_dataset("voc", root, urls=[archive.as_uri()], sha256s=[sha], keep_archive=True, progress=False)
    assert "reusing verified" in capsys.readouterr().err
    assert (root / "VOCdevkit/VOC2012/JPEGImages" / f"{IDS[1]}.jpg").is_file()


def test_wrong_checksum_leaves_nothing_behind(tmp_path: Path, voc_tar: tuple[Path, str]) -> None:
    archive, sha = voc_tar
    root = tmp_path / "data"
    with pytest.raises(DataError, match=f"SHA-256 mismatch: got {sha}, expected {ZERO_SHA}"):
        fetch_dataset("voc", root, urls=[archive.as_uri()], sha256s=[ZERO_SHA], progress=False)
    assert not root.exists()
    root.mkdir()
    (root / "other.txt").write_text("kept")
    with pytest.raises(DataError, match="SHA-256 mismatch"):
        fetch_dataset("voc", root, urls=[archive.as_uri()], sha256s=[ZERO_SHA], keep_archive=True, progress=False)
    assert files_under(root) == ["other.txt"]


def test_mirror_url_without_sha_is_checked_against_the_official_checksum(tmp_path: Path, voc_tar) -> None:
    archive, _ = voc_tar
    with pytest.raises(DataError, match=f"expected {DATASETS['voc'][0].sha256}"):
        fetch_dataset("voc", tmp_path / "data", urls=[archive.as_uri()], progress=False)
    assert not (tmp_path / "data").exists()


def test_unverified_download_warns_with_the_digest(tmp_path: Path, capsys) -> None:
    src = tmp_path / "blob.bin"
    src.write_bytes(b"hello" * 1000)
    digest = download(src.as_uri(), tmp_path / "out" / "blob.bin", sha256=None, progress=False)
    assert digest == hashlib.sha256(b"hello" * 1000).hexdigest()
    err = capsys.readouterr().err
    assert "UNVERIFIED" in err and digest in err
    assert (tmp_path / "out" / "blob.bin").read_bytes() == src.read_bytes()


def test_download_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="download failed"):
        download((tmp_path / "missing.tar").as_uri(), tmp_path / "o" / "x.tar", sha256=None, progress=False)
    assert files_under(tmp_path / "o") == []
    with pytest.raises(DataError, match="only http, https and file URLs"):
        download("ftp://example.org/x.tar", tmp_path / "x.tar", sha256=None, progress=False)
    with pytest.raises(DataError, match="not a SHA-256 hex digest"):
        download((tmp_path / "x").as_uri(), tmp_path / "x.tar", sha256="abc", progress=False)


def test_progress_bar_runs(tmp_path: Path, capsys) -> None:
    src = tmp_path / "blob.bin"
    src.write_bytes(b"x" * 3_000_000)
    download(src.as_uri(), tmp_path / "copy.bin", sha256=sha256_file(src), progress=True)
    assert "copy.bin" in capsys.readouterr().err


# -- malicious archives ---------------------------------------------------------------------------------

def evil_tar(path: Path, kind: str) -> Path:
    """A tar with one bad member of the given kind after a good one."""
    with tarfile.open(path, "w:gz") as tar:
        add_bytes(tar, "VOCdevkit/VOC2012/JPEGImages/ok.txt", b"ok")
        if kind == "dotdot":
            add_bytes(tar, "VOCdevkit/../../evil.txt", b"pwned")
        elif kind == "absolute":
            add_bytes(tar, str(path.parent / "abs_evil.txt"), b"pwned")
        elif kind == "symlink":
            info = tarfile.TarInfo("VOCdevkit/link")
            info.type, info.linkname = tarfile.SYMTYPE, "../../.."
            tar.addfile(info)
        elif kind == "hardlink":
            info = tarfile.TarInfo("VOCdevkit/hard")
            info.type, info.linkname = tarfile.LNKTYPE, "/etc/passwd"
            tar.addfile(info)
        elif kind == "device":
            info = tarfile.TarInfo("VOCdevkit/dev")
            info.type = tarfile.CHRTYPE
            tar.addfile(info)
    return path


@pytest.mark.parametrize("kind,message", [
    ("dotdot", "refusing unsafe archive member 'VOCdevkit/../../evil.txt'"),
    ("absolute", "refusing unsafe archive member '/"),
    ("symlink", "refusing link 'VOCdevkit/link'"),
    ("hardlink", "refusing link 'VOCdevkit/hard'"),
    ("device", "refusing special archive member"),
])
def test_malicious_tar_is_refused(tmp_path: Path, kind: str, message: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    archive = evil_tar(src / "evil.tgz", kind)
    root = tmp_path / "deep" / "data"
    with pytest.raises(DataError, match=message):
        fetch_dataset("voc", root, urls=[archive.as_uri()], sha256s=[sha256_file(archive)], progress=False)
    assert not list(tmp_path.rglob("evil.txt")) and not list(tmp_path.rglob("abs_evil.txt"))
    assert not root.exists()


def test_malicious_zip_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("annotations/ok.json", "{}")
        zf.writestr("../evil.txt", "pwned")
    dest = tmp_path / "out" / "x"
    with pytest.raises(DataError, match="refusing unsafe archive member '../evil.txt'"):
        safe_extract(archive, dest)
    assert not (tmp_path / "out" / "evil.txt").exists() and files_under(dest) == []
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("/abs.txt", "pwned")
    with pytest.raises(DataError, match="refusing unsafe archive member '/abs.txt'"):
        safe_extract(archive, dest)
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a\\..\\..\\evil.txt", "pwned")
    with pytest.raises(DataError, match="refusing unsafe archive member"):
        safe_extract(archive, dest)


def test_not_an_archive_and_wrong_layout(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"this is not a tar" * 100)
    with pytest.raises(DataError, match="junk.tar: not a readable tar or zip archive"):
        safe_extract(junk, tmp_path / "x")
    truncated = tmp_path / "truncated.tgz"
    with tarfile.open(truncated, "w:gz") as tar:
        add_bytes(tar, "x/blob.bin", bytes(range(256)) * 2000)
    truncated.write_bytes(truncated.read_bytes()[:300])
    with pytest.raises(DataError, match="truncated.tgz: extraction failed"):
        safe_extract(truncated, tmp_path / "x")
    wrong = tmp_path / "wrong.tar"
    with tarfile.open(wrong, "w") as tar:
        add_bytes(tar, "something/else.txt", b"x")
    root = tmp_path / "data"
    with pytest.raises(DataError, match="archive lacks the expected VOCdevkit/VOC2012/JPEGImages/"):
        fetch_dataset("voc", root, urls=[wrong.as_uri()], sha256s=[sha256_file(wrong)], progress=False)
    assert files_under(root) == []


# -- COCO and SBD layouts -------------------------------------------------------------------------------

def test_fetch_coco_parts(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    ann = src / "annotations_tiny.zip"
    instances = {"images": [{"id": 1, "file_name": "000000000001.jpg", "width": 4, "height": 3}],
                 "categories": [{"id": 1, "name": "person"}],
                 "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 2, 2], "area": 4}]}
    with zipfile.ZipFile(ann, "w") as zf:
        zf.writestr("annotations/instances_val2017.json", json.dumps(instances))
    val = src / "val_tiny.zip"
    with zipfile.ZipFile(val, "w") as zf:
        zf.writestr("val2017/000000000001.jpg", (VOC / "JPEGImages/2007_000032.jpg").read_bytes())
    root = tmp_path / "data"
    where = fetch_dataset("coco", root, urls=[ann.as_uri(), val.as_uri()],
                          sha256s=[sha256_file(ann), sha256_file(val)], parts=["annotations", "val"], progress=False)
    assert where == root / "coco"
    assert sorted(p.name for p in where.iterdir()) == ["annotations", "val2017"]
    ds = CocoDataset(where / "annotations/instances_val2017.json", image_root=where / "val2017")
    assert ds.annotations(1)[0].xyxy == (0.0, 0.0, 2.0, 2.0)
    with pytest.raises(DataError, match="--url: got 1 value"):
        fetch_dataset("coco", root, urls=[ann.as_uri()], progress=False)


def test_fetch_sbd_arranges_folders_and_train_aug(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    archive = src / "benchmark_tiny.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        base = "benchmark_RELEASE/dataset"
        for i in ("2008_000002", "2008_000003", "2008_000007"):
            add_bytes(tar, f"{base}/cls/{i}.mat", b"MATLAB 5.0")
            add_bytes(tar, f"{base}/img/{i}.jpg", b"jpg")
        add_bytes(tar, f"{base}/train.txt", b"2008_000002\n2008_000003\n")
        add_bytes(tar, f"{base}/val.txt", b"2008_000007\n")
    root = tmp_path / "data"
    seg = root / "VOCdevkit/VOC2012/ImageSets/Segmentation"
    seg.mkdir(parents=True)
    (seg / "train.txt").write_text("2007_000032\n")
    (seg / "val.txt").write_text("2008_000003\n")  # VOC val ids are removed from train_aug
    where = fetch_dataset("sbd", root, urls=[archive.as_uri()], sha256s=[sha256_file(archive)], progress=False)
    assert where == root / "SBD"
    assert sorted(p.name for p in where.iterdir()) == ["cls", "img", "train.txt", "val.txt"]
    assert not (root / "benchmark_RELEASE").exists()
    assert (seg / "train_aug.txt").read_text().split() == ["2007_000032", "2008_000002", "2008_000007"]
    assert make_train_aug_ids(where, root / "VOCdevkit/VOC2012") == ["2007_000032", "2008_000002", "2008_000007"]


def test_fetch_archive_skips_installed_part(tmp_path: Path) -> None:
    spec = ArchiveSpec("x", "http://example.invalid/x.zip", None, None, "coco", "val2017", "coco/val2017")
    (tmp_path / "coco/val2017").mkdir(parents=True)
    assert fetch_archive(spec, tmp_path, progress=False) == tmp_path / "coco/val2017"


# -- CLI ------------------------------------------------------------------------------------------------

def test_cli_fetch(tmp_path: Path, voc_tar: tuple[Path, str], capsys) -> None:
    archive, sha = voc_tar
    root = tmp_path / "data"
    rc = main(["data", "fetch", "voc", "--root", str(root), "--url", archive.as_uri(), "--sha256", ZERO_SHA, "--quiet"])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 2  # a "downloading ..." status line, then the one-line error
    assert lines[1].startswith(f"weakseg: error: {archive.as_uri()}: SHA-256 mismatch")
    assert not root.exists()
    rc = main(["data", "fetch", "voc", "--root", str(root), "--url", archive.as_uri(), "--sha256", sha,
               "--keep-archive", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0 and out.strip() == str(root / "VOCdevkit" / "VOC2012")
    assert (root / archive.name).is_file()


def test_cli_check(tmp_path: Path, capsys) -> None:
    rc = main(["data", "check", "--data", str(VOC), "--split", "val", "--no-decode"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0 and report["images"] == 12 and report["good"] == 12 and report["bad"] == []
    assert main(["data", "check", "--data", str(tmp_path / "none")]) == 2

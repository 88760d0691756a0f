"""Download, verify and safely extract the public dataset archives (VOC 2012, SBD, COCO 2017).

Each archive is streamed to a temporary file in the destination root, its SHA-256 is checked, and it is
extracted into a temporary folder (members with absolute paths, `..`, links leaving the folder or device
files are refused) before being moved into the final layout:

    voc:  <root>/VOCdevkit/VOC2012/{JPEGImages,Annotations,SegmentationClass,...}
    sbd:  <root>/SBD/{cls,img,inst,train.txt,val.txt} (+ ImageSets/Segmentation/train_aug.txt in VOC2012
          when <root>/VOCdevkit/VOC2012 is present)
    coco: <root>/coco/{train2017,val2017,annotations}

Checksum provenance (SHA-256 of the official files): VOC from TensorFlow Datasets'
url_checksums/voc.txt and torchvision's prototype voc.py; SBD from torchvision's prototype sbd.py;
COCO from TensorFlow Datasets' url_checksums/coco2017.txt and coco.txt. None are invented.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from weakseg.errors import DataError
from weakseg.io import atomic_write_text, sha256_file

CHUNK = 1 << 20


@dataclass(frozen=True)
class ArchiveSpec:
    """One downloadable archive: where it comes from, its checksum and what it must contain."""

    part: str
    url: str
    sha256: str | None
    size: int | None
    subdir: str  # folder under root the archive is extracted into
    expect: str  # path (relative to subdir) that must exist after extraction
    installed: str  # path (relative to root) whose presence means this part is already installed

    @property
    def filename(self) -> str:
        """The archive's file name (last URL path component)."""
        return PurePosixPath(urllib.parse.urlparse(self.url).path).name


DATASETS: dict[str, tuple[ArchiveSpec, ...]] = {
    "voc": (
        ArchiveSpec(
            "trainval",
            "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
            "e14f763270cf193d0b5f74b169f44157a4b0c6efa708f4dd0ff78ee691763bcb",
            1999639040,
            ".",
            "VOCdevkit/VOC2012/JPEGImages",
            "VOCdevkit/VOC2012/JPEGImages",
        ),
    ),
    "sbd": (
        ArchiveSpec(
            "benchmark",
            "https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz",
            "6a5a2918d5c73ce032fdeba876574d150d9d04113ab87540a1304cbcc715be53",
            None,
            ".",
            "benchmark_RELEASE/dataset/cls",
            "SBD/cls",
        ),
    ),
    "coco": (
        ArchiveSpec(
            "annotations",
            "http://images.cocodataset.org/annotations/annotations_trainval2017.zip",
            "113a836d90195ee1f884e704da6304dfaaecff1f023f49b6ca93c4aaae470268",
            252907541,
            "coco",
            "annotations",
            "coco/annotations",
        ),
        ArchiveSpec(
            "val",
            "http://images.cocodataset.org/zips/val2017.zip",
            "4f7e2ccb2866ec5041993c9cf2a952bbed69647b115d0f74da7ce8f4bef82f05",
            815585330,
            "coco",
            "val2017",
            "coco/val2017",
        ),
        ArchiveSpec(
            "train",
            "http://images.cocodataset.org/zips/train2017.zip",
            "69a8bb58ea5f8f99d24875f21416de2e9ded3178e903f1f7603e283b9e06d929",
            19336861798,
            "coco",
            "train2017",
            "coco/train2017",
        ),
    ),
}


def _say(message: str) -> None:
    """Progress/status line on stderr."""
    print(message, file=sys.stderr, flush=True)


def _normalise_sha(sha256: str | None) -> str | None:
    """Lower-case a hex digest and check its shape."""
    if sha256 is None:
        return None
    sha = sha256.strip().lower()
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise DataError(f"{sha256}: not a SHA-256 hex digest (64 hex characters)")
    return sha


def _copy_stream(src: IO[bytes], dst: IO[bytes], total: int | None, label: str, progress: bool) -> str:
    """Copy src to dst, hashing and (optionally) showing a tqdm bar; return the hex SHA-256."""
    h = hashlib.sha256()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label, file=sys.stderr)
    try:
        for chunk in iter(lambda: src.read(CHUNK), b""):
            dst.write(chunk)
            h.update(chunk)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    return h.hexdigest()


def download(
    url: str, dest: str | os.PathLike, sha256: str | None, progress: bool = True, timeout: float = 60.0
) -> str:
    """Stream url to dest (via a temp file), verify sha256 (None: warn, unverified); return the digest."""
    dest = Path(dest)
    expected = _normalise_sha(sha256)
    scheme = urllib.parse.urlparse(url).scheme
    if scheme not in ("http", "https", "file"):
        raise DataError(f"{url}: only http, https and file URLs are supported")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp:
                    length = resp.headers.get("Content-Length")
                    total = int(length) if length and length.isdigit() else None
                    digest = _copy_stream(resp, out, total, dest.name, progress)
            except (urllib.error.URLError, OSError, ValueError) as e:
                reason = getattr(e, "reason", None) or e
                raise DataError(f"{url}: download failed ({reason})") from e
        if expected is not None and digest != expected:
            raise DataError(f"{url}: SHA-256 mismatch: got {digest}, expected {expected}; the download was removed")
        if expected is None:
            _say(f"warning: {dest.name}: no known checksum, UNVERIFIED download; sha256={digest}")
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return digest


# -- safe extraction ---------------------------------------------------------------------------------


def _check_member_name(name: str, archive: Path) -> PurePosixPath:
    """Refuse absolute names, drive letters and `..` components; return the normalised relative path."""
    posix = name.replace("\\", "/")
    path = PurePosixPath(posix)
    if posix.startswith("/") or (len(posix) > 1 and posix[1] == ":") or ".." in path.parts:
        raise DataError(f"{archive}: refusing unsafe archive member {name!r}")
    return path


def _check_tar(tar: tarfile.TarFile, archive: Path) -> None:
    """Validate every member of a tar before anything is written."""
    for m in tar.getmembers():
        path = _check_member_name(m.name, archive)
        if m.issym() or m.islnk():
            target = PurePosixPath(m.linkname.replace("\\", "/"))
            resolved = target if m.islnk() else path.parent / target
            if m.linkname.startswith("/") or ".." in PurePosixPath(os.path.normpath(str(resolved))).parts:
                raise DataError(f"{archive}: refusing link {m.name!r} -> {m.linkname!r} leaving the archive")
        elif not (m.isfile() or m.isdir()):
            raise DataError(f"{archive}: refusing special archive member {m.name!r}")


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Extract a tar (any compression) or zip into dest, refusing members that would escape it."""
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    _check_member_name(info.filename, archive)
                    if (info.external_attr >> 16) & 0o170000 == 0o120000:
                        raise DataError(f"{archive}: refusing symlink member {info.filename!r}")
                zf.extractall(dest)
            return
        with tarfile.open(archive, "r:*") as tar:
            _check_tar(tar, archive)
            tar.extractall(dest, filter="data")
    except tarfile.FilterError as e:
        raise DataError(f"{archive}: refusing unsafe archive member ({e})") from e
    except tarfile.ReadError as e:
        raise DataError(f"{archive}: not a readable tar or zip archive ({e})") from e
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as e:
        raise DataError(f"{archive}: extraction failed ({type(e).__name__}: {e})") from e


def _merge_move(src: Path, dst: Path) -> None:
    """Move src to dst, merging into an existing folder (files in src replace those in dst)."""
    if dst.is_dir() and src.is_dir() and not src.is_symlink():
        for child in src.iterdir():
            _merge_move(child, dst / child.name)
        src.rmdir()
        return
    if dst.exists() and dst.is_dir() and not dst.is_symlink():
        shutil.rmtree(dst)
    os.replace(src, dst)


def install_archive(archive: Path, spec: ArchiveSpec, root: Path) -> Path:
    """Extract an archive into root/spec.subdir via a temp folder; check spec.expect is present."""
    target = (root / spec.subdir).resolve()
    target.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=target))
    try:
        safe_extract(archive, staging)
        if not (staging / spec.expect).exists():
            raise DataError(f"{archive}: archive lacks the expected {spec.expect}/ (wrong file for {spec.part}?)")
        for child in list(staging.iterdir()):
            _merge_move(child, target / child.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target / spec.expect


# -- dataset-level steps -----------------------------------------------------------------------------


def _read_ids(path: Path) -> list[str]:
    """Non-empty stripped lines of a list file."""
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def make_train_aug_ids(sbd_dir: str | os.PathLike, voc_root: str | os.PathLike) -> list[str]:
    """The 'train_aug' ids: (SBD train ∪ SBD val ∪ VOC train) minus VOC val, sorted (10582 on the full data)."""
    sbd_dir, voc_root = Path(sbd_dir), Path(voc_root)
    seg = voc_root / "ImageSets" / "Segmentation"
    for path in (sbd_dir / "train.txt", sbd_dir / "val.txt", seg / "train.txt", seg / "val.txt"):
        if not path.is_file():
            raise DataError(f"{path}: list needed for train_aug not found")
    ids = (
        set(_read_ids(sbd_dir / "train.txt")) | set(_read_ids(sbd_dir / "val.txt")) | set(_read_ids(seg / "train.txt"))
    )
    return sorted(ids - set(_read_ids(seg / "val.txt")))


def _arrange_sbd(root: Path) -> None:
    """Move benchmark_RELEASE/dataset to <root>/SBD and write train_aug.txt next to VOC's lists if VOC is there."""
    src = root / "benchmark_RELEASE" / "dataset"
    sbd = root / "SBD"
    if src.is_dir():
        _merge_move(src, sbd)
        shutil.rmtree(root / "benchmark_RELEASE", ignore_errors=True)
    voc = root / "VOCdevkit" / "VOC2012"
    if (voc / "ImageSets" / "Segmentation" / "val.txt").is_file():
        ids = make_train_aug_ids(sbd, voc)
        atomic_write_text(voc / "ImageSets" / "Segmentation" / "train_aug.txt", "\n".join(ids) + "\n")
        _say(f"wrote {voc / 'ImageSets' / 'Segmentation' / 'train_aug.txt'} ({len(ids)} ids)")
    else:
        _say(f"note: {voc} not found; fetch voc first to get ImageSets/Segmentation/train_aug.txt")


def select_parts(name: str, parts: list[str] | None = None) -> tuple[ArchiveSpec, ...]:
    """The archive specs of a dataset, optionally restricted to the named parts."""
    if name not in DATASETS:
        raise DataError(f"{name}: unknown dataset (choose from {', '.join(DATASETS)})")
    specs = DATASETS[name]
    if not parts:
        return specs
    known = {s.part: s for s in specs}
    unknown = [p for p in parts if p not in known]
    if unknown:
        raise DataError(f"{','.join(unknown)}: unknown part(s) of {name} (choose from {', '.join(known)})")
    return tuple(s for s in specs if s.part in parts)


def fetch_archive(
    spec: ArchiveSpec,
    root: Path,
    url: str | None = None,
    sha256: str | None = None,
    keep_archive: bool = False,
    progress: bool = True,
    force: bool = False,
) -> Path:
    """Download (or reuse a kept copy of) one archive, verify it and install it under root."""
    if not force and (root / spec.installed).exists():
        _say(f"{root / spec.installed} already present; skipping {spec.part} (use --force to fetch again)")
        return root / spec.installed
    expected = _normalise_sha(sha256) if sha256 else spec.sha256
    source = url or spec.url
    name = PurePosixPath(urllib.parse.urlparse(source).path).name or spec.filename
    archive = root / name
    if archive.is_file() and expected is not None and sha256_file(archive) == expected:
        _say(f"reusing verified {archive}")
    else:
        if url is None and spec.size:
            free = shutil.disk_usage(root).free
            if free < 2 * spec.size:
                _say(
                    f"warning: {root} has {free / 2**30:.1f} GiB free; {spec.filename} needs about "
                    f"{2 * spec.size / 2**30:.1f} GiB to download and extract"
                )
        _say(f"downloading {source}")
        download(source, archive, expected, progress=progress)
    try:
        where = install_archive(archive, spec, root)
    finally:
        if not keep_archive:
            archive.unlink(missing_ok=True)
    _say(f"installed {where}")
    return where


def fetch_dataset(
    name: str,
    root: str | os.PathLike,
    urls: list[str] | None = None,
    sha256s: list[str] | None = None,
    parts: list[str] | None = None,
    keep_archive: bool = False,
    progress: bool = True,
    force: bool = False,
) -> Path:
    """Fetch a dataset's archives into root (urls/sha256s override the known ones, one per part)."""
    root = Path(root)
    specs = select_parts(name, parts)
    for label, given in (("--url", urls), ("--sha256", sha256s)):
        if given and len(given) != len(specs):
            raise DataError(
                f"{label}: got {len(given)} value(s) for {len(specs)} archive(s) of {name} "
                f"({', '.join(s.part for s in specs)}); use --parts to pick one"
            )
    created = not root.exists()
    try:
        root.mkdir(parents=True, exist_ok=True)
        for i, spec in enumerate(specs):
            fetch_archive(
                spec,
                root,
                url=urls[i] if urls else None,
                sha256=sha256s[i] if sha256s else None,
                keep_archive=keep_archive,
                progress=progress,
                force=force,
            )
        if name == "sbd":
            _arrange_sbd(root)
    except BaseException:
        if created and root.is_dir() and not any(root.iterdir()):
            root.rmdir()
        raise
    layout = {"voc": root / "VOCdevkit" / "VOC2012", "sbd": root / "SBD", "coco": root / "coco"}[name]
    return layout

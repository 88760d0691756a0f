"""Where a pseudo-label job writes: a local/shared folder or an object store, behind one small interface.

Both stores guarantee that a file under its final name is complete: the local store writes a temporary
file and renames it (`weakseg.io`); the object store uploads the whole buffer to a temporary key, checks
the uploaded size, then moves it (a server-side copy on S3/GCS) to the final key, so no partial object is
ever visible under a final name. Temporary names start with "." and end with ".tmp"; a job sweeps them
away at start (one job per output location at a time).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from weakseg.errors import WeaksegError
from weakseg.io import atomic_write_bytes

OBJECT_STORE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "abfs", "abfss")


def is_partial_name(name: str) -> bool:
    """Whether a file name is a temporary (in-flight or abandoned) write."""
    return name.startswith(".") and name.endswith(".tmp")


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


@dataclass(frozen=True)
class LocalStore:
    """A folder on a local or shared (NFS, Lustre, mounted bucket) filesystem."""

    root: Path

    @property
    def uri(self) -> str:
        """The location as the user would type it."""
        return str(self.root)

    @property
    def is_local_path(self) -> bool:
        """True: paths under this store are plain filesystem paths."""
        return True

    def makedirs(self, folder: str = "") -> None:
        """Create a folder (and parents) under the store."""
        (self.root / folder).mkdir(parents=True, exist_ok=True)

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write a file completely or not at all (temporary name + rename)."""
        atomic_write_bytes(self.root / rel, data)

    def read_bytes(self, rel: str) -> bytes | None:
        """A file's bytes, or None when it does not exist."""
        try:
            return (self.root / rel).read_bytes()
        except FileNotFoundError:
            return None

    def exists(self, rel: str) -> bool:
        """Whether a (complete) file exists."""
        return (self.root / rel).is_file()

    def list_names(self, folder: str) -> set[str]:
        """Names of the complete files directly in a folder (empty if it does not exist)."""
        try:
            with os.scandir(self.root / folder) as it:
                return {e.name for e in it if e.is_file() and not is_partial_name(e.name)}
        except FileNotFoundError:
            return set()

    def sweep_partials(self, folder: str) -> int:
        """Delete abandoned temporary files in a folder; returns how many."""
        n = 0
        try:
            with os.scandir(self.root / folder) as it:
                for e in it:
                    if e.is_file() and is_partial_name(e.name):
                        Path(e.path).unlink(missing_ok=True)
                        n += 1
        except FileNotFoundError:
            pass
        return n


@dataclass(frozen=True)
class ArrowStore:
    """A prefix on a pyarrow filesystem (S3, GCS, HDFS, ...; LocalFileSystem in tests)."""

    fs: Any  # pyarrow.fs.FileSystem (pyarrow has no type stubs) (picklable; on S3/GCS credentials come from each node's environment)
    base: str
    location: str = ""

    @property
    def uri(self) -> str:
        """The location as the user typed it (or the base path)."""
        return self.location or self.base

    @property
    def is_local_path(self) -> bool:
        """False: paths are keys on a pyarrow filesystem."""
        return False

    def _path(self, rel: str) -> str:
        return _join(self.base, rel) if not self.base.startswith("/") else "/" + _join(self.base, rel)

    def makedirs(self, folder: str = "") -> None:
        """Create a folder (a no-op on object stores that have no folders)."""
        self.fs.create_dir(self._path(folder), recursive=True)

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Upload to a temporary key, verify its size, then move it to the final key (never partial there)."""
        import pyarrow.fs as pafs

        final = self._path(rel)
        parent, _, name = final.rpartition("/")
        tmp = f"{parent}/.{name}.{uuid.uuid4().hex[:12]}.tmp" if parent else f".{name}.{uuid.uuid4().hex[:12]}.tmp"
        try:
            stream = self.fs.open_output_stream(tmp)
            try:
                stream.write(data)
            finally:
                stream.close()
            size = self.fs.get_file_info(tmp).size
            if size != len(data):
                raise OSError(f"{tmp}: uploaded {size} bytes, expected {len(data)}")
            self.fs.move(tmp, final)
        except BaseException:
            try:
                if self.fs.get_file_info(tmp).type != pafs.FileType.NotFound:
                    self.fs.delete_file(tmp)
            except Exception:  # best effort: the start-of-job sweep removes what is left
                pass
            raise

    def read_bytes(self, rel: str) -> bytes | None:
        """An object's bytes, or None when it does not exist."""
        try:
            with self.fs.open_input_stream(self._path(rel)) as f:
                return f.read()
        except FileNotFoundError:
            return None

    def exists(self, rel: str) -> bool:
        """Whether a (complete) object exists."""
        import pyarrow.fs as pafs

        return self.fs.get_file_info(self._path(rel)).type == pafs.FileType.File

    def _infos(self, folder: str) -> list:
        import pyarrow.fs as pafs

        try:
            return self.fs.get_file_info(pafs.FileSelector(self._path(folder), allow_not_found=True))
        except FileNotFoundError:
            return []

    def list_names(self, folder: str) -> set[str]:
        """Names of the complete objects directly under a folder."""
        import pyarrow.fs as pafs

        return {
            i.base_name
            for i in self._infos(folder)
            if i.type == pafs.FileType.File and not is_partial_name(i.base_name)
        }

    def sweep_partials(self, folder: str) -> int:
        """Delete abandoned temporary objects under a folder; returns how many."""
        import pyarrow.fs as pafs

        n = 0
        for i in self._infos(folder):
            if i.type == pafs.FileType.File and is_partial_name(i.base_name):
                self.fs.delete_file(i.path)
                n += 1
        return n


OutputStore = LocalStore | ArrowStore


def is_object_store_uri(location: str) -> bool:
    """Whether a location string names an object store (s3://, gs://, ...) rather than a path."""
    return urlparse(str(location)).scheme.lower() in OBJECT_STORE_SCHEMES


def open_store(location: str | os.PathLike | LocalStore | ArrowStore) -> LocalStore | ArrowStore:
    """The store for an --out location: a path or file:// URI (LocalStore), or s3://, gs://, ... (ArrowStore)."""
    if isinstance(location, (LocalStore, ArrowStore)):
        return location
    text = os.fspath(location)
    parsed = urlparse(text)
    scheme = parsed.scheme.lower()
    if "://" not in text or len(scheme) <= 1:  # plain (possibly Windows drive) path
        return LocalStore(Path(text).expanduser().absolute())
    if scheme == "file":
        return LocalStore(Path(parsed.path).absolute())
    try:
        import pyarrow.fs as pafs

        fs, path = pafs.FileSystem.from_uri(text)
    except Exception as e:  # unknown scheme, missing credentials or region
        raise WeaksegError(f"{text}: cannot open this output location ({type(e).__name__}: {e})") from e
    return ArrowStore(fs=fs, base=path.rstrip("/"), location=text)

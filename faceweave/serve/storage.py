"""Media storage behind a small Protocol, implemented with fsspec (``file://`` by default, ``s3://`` via s3fs).

Keys are relative, slash-separated (``<tenant>/<job>/target.png``); no user-supplied file name ever becomes part of
a key, so a key can be logged and a path can never escape the storage root.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Protocol

import fsspec


class Storage(Protocol):
    """What the API and executors need from media storage."""

    url: str

    def open_write(self, key: str) -> IO[bytes]: ...
    def open_read(self, key: str) -> IO[bytes]: ...
    def size(self, key: str) -> int: ...
    def exists(self, key: str) -> bool: ...
    def delete_prefix(self, prefix: str) -> None: ...
    def local_path(self, key: str) -> Path | None: ...
    def download(self, key: str, dest: Path) -> Path: ...
    def upload(self, src: Path, key: str) -> int: ...


class FsspecStorage:
    """:class:`Storage` over any fsspec URL."""

    def __init__(self, url: str, **options: Any) -> None:
        self.url = url.rstrip("/")
        fs, root = fsspec.core.url_to_fs(self.url, **options)
        self.fs: fsspec.AbstractFileSystem = fs
        self.root = root.rstrip("/")
        self.is_local = "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
        if self.is_local:
            Path(self.root).mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> str:
        parts = [p for p in key.split("/") if p]
        if not parts or any(p in (".", "..") for p in parts):
            raise ValueError(f"invalid storage key {key!r}")
        return self.root + "/" + "/".join(parts)

    def open_write(self, key: str) -> IO[bytes]:
        path = self._path(key)
        if self.is_local:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        return self.fs.open(path, "wb")  # type: ignore[no-any-return]

    def open_read(self, key: str) -> IO[bytes]:
        return self.fs.open(self._path(key), "rb")  # type: ignore[no-any-return]

    def size(self, key: str) -> int:
        return int(self.fs.size(self._path(key)))

    def exists(self, key: str) -> bool:
        return bool(self.fs.exists(self._path(key)))

    def delete_prefix(self, prefix: str) -> None:
        path = self._path(prefix)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    def local_path(self, key: str) -> Path | None:
        """The file's local path when the storage is a local folder (the pipeline then reads it in place)."""
        return Path(self._path(key)) if self.is_local else None

    def download(self, key: str, dest: Path) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        self.fs.get(self._path(key), str(dest))
        return dest

    def upload(self, src: Path, key: str) -> int:
        with src.open("rb") as fin, self.open_write(key) as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
        return src.stat().st_size

    def iter_range(self, key: str, start: int, end: int, chunk: int = 1 << 16) -> Iterator[bytes]:
        """Bytes ``start..end`` (inclusive) of ``key``, in chunks (for HTTP range requests)."""
        with self.open_read(key) as f:
            f.seek(start)
            left = end - start + 1
            while left > 0:
                data = f.read(min(chunk, left))
                if not data:
                    break
                left -= len(data)
                yield data


def tenant_dir(tenant: str) -> str:
    """A storage folder name for a tenant that no tenant name can bend into a path (uploads and results alike)."""
    import hashlib

    return "t" + hashlib.sha256(tenant.encode()).hexdigest()[:24]

"""Where trial files live: Optuna's artifact store (a folder every worker sees, or an S3 bucket), artifact ids
that cannot escape it, and the disk a folder store uses (torch-free: ``hpsearch status`` and the dashboard read
it; checkpoints themselves are written and read by ``hpsearch.storage.checkpoints``)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from optuna.artifacts import Boto3ArtifactStore, FileSystemArtifactStore

from hpsearch.errors import HpsearchError, SpecError

DEFAULT_DIR = "hpsearch-artifacts"
# Optuna names artifacts by uuid4; an id read from a (shared, writable) storage that is not a plain name, such as
# '../x' or '/etc/x', could reach outside the artifact folder or bucket prefix: refused before any file access.
ARTIFACT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


def check_artifact_id(artifact_id: object) -> str:
    if not isinstance(artifact_id, str) or not ARTIFACT_ID_RE.match(artifact_id):
        raise HpsearchError(f"artifact id {str(artifact_id)[:100]!r} is not valid; an id is a plain name of letters, "
                            "digits, _ and - (as Optuna's uuid4 ids are)")
    return artifact_id


def open_artifact_store(location: str | None):
    """``DIR`` → FileSystemArtifactStore (a path every worker can see); ``s3://bucket/prefix`` → Boto3."""
    location = location or os.environ.get("HPSEARCH_ARTIFACTS") or DEFAULT_DIR
    if location.startswith("s3://"):
        bucket, _, prefix = location[5:].partition("/")
        if not bucket:
            raise SpecError(f"artifact location {location!r} names no bucket; use s3://bucket/prefix")
        try:
            import boto3  # noqa: F401
        except ImportError:
            raise HpsearchError("s3:// artifact locations need boto3: pip install boto3") from None
        return Boto3ArtifactStore(bucket) if not prefix else _PrefixedStore(Boto3ArtifactStore(bucket), prefix)
    path = Path(location).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise HpsearchError(f"cannot create the artifact folder {path}: {e.strerror}") from None
    return FileSystemArtifactStore(path)


class _PrefixedStore:
    def __init__(self, inner, prefix: str):
        self.inner, self.prefix = inner, prefix.strip("/") + "/"

    def open_reader(self, artifact_id: str):
        return self.inner.open_reader(self.prefix + artifact_id)

    def write(self, artifact_id: str, content_body) -> None:
        self.inner.write(self.prefix + artifact_id, content_body)

    def remove(self, artifact_id: str) -> None:
        self.inner.remove(self.prefix + artifact_id)


def disk_usage(location: str | None) -> int | None:
    """Bytes used by a filesystem artifact store (None for object stores)."""
    location = location or os.environ.get("HPSEARCH_ARTIFACTS") or DEFAULT_DIR
    if location.startswith("s3://"):
        return None
    path = Path(location).expanduser()
    if not path.is_dir():
        return 0
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())

"""Named datasets: where their raw files come from and where prepared copies are cached.

A raw file is looked up in this order:

1. the cache, ``$MRIF_CACHE_DIR`` (default ``~/.cache/mrif``) under ``sources/``;
2. the mirror ``$MRIF_DATA_MIRROR``, laid out like the project's shared data folder
   (``amazon-beauty-s3rec/Beauty.txt``; a ``.gz`` copy beside the plain name is accepted);
3. a download from the pinned public URL into the cache.

Every file found is checked against the sha256 of its decompressed content.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from mrif.data.prepare import prepare_dataset
from mrif.data.readers import source_sha256

logger = logging.getLogger(__name__)

# Raw files pinned to the commits recorded in each dataset's PROVENANCE.md.
_S3REC = (
    "https://raw.githubusercontent.com/aHuiWang/CIKM2020-S3Rec/"
    "49a890dcb516c9ed3126564495234ea74d5cd566/data"
)
_RECBOLE = (
    "https://raw.githubusercontent.com/RUCAIBox/RecBole/"
    "7b02be5ec80a88310f2d04a27a82adfcbb5dc211/dataset"
)


@dataclass(frozen=True)
class RegisteredDataset:
    """A raw file with a pinned checksum, and the recipe that prepares it."""

    name: str
    mirror_path: str  # relative to the mirror and to ``<cache>/sources``
    url: str
    sha256: str  # of the decompressed content
    fmt: str
    k_core: int | None = None
    dedupe: bool = False


REGISTRY: dict[str, RegisteredDataset] = {
    d.name: d
    for d in (
        # S3-Rec's Amazon subsets are already 5-core and chronological (see PROVENANCE.md).
        RegisteredDataset(
            name="amazon-beauty",
            mirror_path="amazon-beauty-s3rec/Beauty.txt",
            url=f"{_S3REC}/Beauty.txt",
            sha256="226cce9c3105299ca0db9615d7d3fb32b3175e90da43100ae352599f0f0107b8",
            fmt="sequence",
        ),
        RegisteredDataset(
            name="amazon-sports",
            mirror_path="amazon-sports-s3rec/Sports_and_Outdoors.txt",
            url=f"{_S3REC}/Sports_and_Outdoors.txt",
            sha256="2a095e0648872beb9982408958290f5d655db5be2911c3756b5446de9f0b8de2",
            fmt="sequence",
        ),
        RegisteredDataset(
            name="movielens-100k",
            mirror_path="movielens-100k/ml-100k.inter",
            url=f"{_RECBOLE}/ml-100k/ml-100k.inter",
            sha256="4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
            fmt="recbole",
        ),
    )
}


class SourceUnavailableError(RuntimeError):
    """A registered raw file is in neither the cache nor the mirror and cannot be downloaded."""


class ChecksumMismatchError(ValueError):
    """A raw file's decompressed content does not have the registered sha256."""


def cache_dir() -> Path:
    """``$MRIF_CACHE_DIR``, or ``~/.cache/mrif`` when unset."""
    configured = os.environ.get("MRIF_CACHE_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "mrif"


def fetch_url(url: str, timeout: float = 60.0) -> bytes:
    """Download ``url`` (the only network access of the package; tests replace it)."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def resolve_source(name: str) -> Path:
    """Local path of the raw file of registered dataset ``name`` (cache, mirror, download)."""
    entry = _entry(name)
    cached = cache_dir() / "sources" / entry.mirror_path
    if cached.is_file():
        _verify(cached, entry)
        return cached

    mirror = os.environ.get("MRIF_DATA_MIRROR")
    if mirror:
        plain = Path(mirror).expanduser() / entry.mirror_path
        for candidate in (plain, plain.with_name(plain.name + ".gz")):
            if candidate.is_file():
                _verify(candidate, entry)
                return candidate

    try:
        data = fetch_url(entry.url)
    except (urllib.error.URLError, OSError) as err:  # URLError covers HTTP errors
        searched = f"the cache ({cached})"
        searched += f" or the mirror ({mirror})" if mirror else " (MRIF_DATA_MIRROR is unset)"
        raise SourceUnavailableError(
            f"dataset {name!r} needs the file {entry.mirror_path} (sha256 {entry.sha256}), "
            f"which is not in {searched}, and downloading {entry.url} failed: {err}. "
            f"Supply it by setting MRIF_DATA_MIRROR to a folder holding {entry.mirror_path} "
            f"(or {entry.mirror_path}.gz), or by putting the file at {cached}."
        ) from err
    got = hashlib.sha256(data).hexdigest()
    if got != entry.sha256:
        raise ChecksumMismatchError(
            f"{entry.url}: sha256 mismatch for dataset {name!r}: expected {entry.sha256}, got {got}"
        )
    _write_atomically(cached, data)
    logger.info("downloaded %s to %s", entry.url, cached)
    return cached


def resolve_dataset(name_or_dir: str | Path, *, seed: int = 0) -> Path:
    """Directory of a prepared dataset, preparing it into the cache on first use.

    Accepts a prepared directory (returned as is), a registered name (prepared once into
    ``<cache>/prepared/<name>-seed<seed>``) or a raw file (prepared into
    ``<cache>/prepared/<file stem>-<sha256[:16]>-seed<seed>``, detecting the format).
    """
    path = Path(name_or_dir)
    if (path / "meta.json").is_file():
        return path
    if isinstance(name_or_dir, str) and name_or_dir in REGISTRY:
        entry = REGISTRY[name_or_dir]
        out_dir = cache_dir() / "prepared" / f"{entry.name}-seed{seed}"
        if (out_dir / "meta.json").is_file():
            return out_dir
        source = resolve_source(entry.name)
        return _prepare_once(
            source, out_dir, fmt=entry.fmt, k_core=entry.k_core, dedupe=entry.dedupe,
            seed=seed, name=entry.name,
        )  # fmt: skip
    if path.is_file():
        stem = Path(path.name.removesuffix(".gz")).stem
        out_dir = cache_dir() / "prepared" / f"{stem}-{source_sha256(path)[:16]}-seed{seed}"
        if (out_dir / "meta.json").is_file():
            return out_dir
        return _prepare_once(path, out_dir, seed=seed, name=stem)
    if path.is_dir():
        raise FileNotFoundError(f"{path}: directory has no meta.json; it is not a prepared dataset")
    raise ValueError(
        f"name_or_dir must be a registered dataset ({', '.join(sorted(REGISTRY))}), "
        f"a prepared dataset directory or a raw interactions file; got {str(name_or_dir)!r}"
    )


def _entry(name: str) -> RegisteredDataset:
    if name not in REGISTRY:
        raise ValueError(f"dataset must be one of {', '.join(sorted(REGISTRY))}; got {name!r}")
    return REGISTRY[name]


def _verify(path: Path, entry: RegisteredDataset) -> None:
    got = source_sha256(path)
    if got != entry.sha256:
        raise ChecksumMismatchError(
            f"{path}: sha256 mismatch for dataset {entry.name!r} (of the decompressed content): "
            f"expected {entry.sha256}, got {got}"
        )


def _prepare_once(
    source: Path,
    out_dir: Path,
    *,
    seed: int,
    name: str,
    fmt: str | None = None,
    k_core: int | None = None,
    dedupe: bool = False,
) -> Path:
    try:
        return prepare_dataset(
            source, out_dir, fmt=fmt, k_core=k_core, dedupe=dedupe, seed=seed, name=name
        )
    except FileExistsError:
        # A concurrent run finished first; a directory with meta.json is complete.
        if (out_dir / "meta.json").is_file():
            return out_dir
        raise


def _write_atomically(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is meant to be shared
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise

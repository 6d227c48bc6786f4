"""Named datasets: where their raw files come from and where prepared copies are cached.

A raw file is looked up in this order:

1. the cache, ``$MRIF_CACHE_DIR`` (default ``~/.cache/mrif``) under ``sources/``;
2. the mirror ``$MRIF_DATA_MIRROR``, laid out like the project's shared data folder
   (``amazon-beauty-s3rec/Beauty.txt``; a ``.gz`` copy beside the plain name is accepted);
3. a download from the pinned public URL into the cache.

Every file found is checked against the sha256 of its decompressed content. A dataset whose
checksum is not known yet (``sha256=None``: its file could not be fetched when it was
registered) is trusted on first use: the checksum of the first copy found is recorded in
``<cache>/checksums/<name>.json``, with a warning, and every later copy must match it. Delete
that file to accept a different copy; pin the value in this registry once it is checked
against a trusted copy.

The MRIF paper's datasets (Li, Yang and Zhang, SIGIR 2020, section 3.1 and Table 1) are
"Electronics" and "Movies" from the Amazon data of He and McAuley (WWW 2016), the 2014
release, "reduced to extract the 10-cores, such that each of the users in the dataset has at
least 10 reviews": Electronics 11,589 users, 20,247 items, 347,393 actions; Movies 33,326,
21,901 and 958,986. ``amazon-electronics`` and ``amazon-movies`` rebuild them from the 2014
5-core review files (``reviews_Electronics_5.json.gz``, ``reviews_Movies_and_TV_5.json.gz``)
with a 10-core on users and items iterated to the fixed point (PROTOCOL.md rule 4). Where the
paper is silent, our choices:

* Start from the 5-core review file. The 10-core of a table lies inside its 5-core, so this
  gives the 10-core of the full review file too, as long as the published 5-core is the true
  5-core of the full file. The ratings-only files hold more events (ratings without text) and
  would give other counts.
* Bound items as well as users: the paper's sentence names users only, but "10-core"
  conventionally means both, and users alone would keep items seen once.
* Keep repeated (user, item) reviews (rule 3); the paper does not mention them.
* "Movies" is the ``Movies_and_TV`` category.

The paper's counts are stored with each recipe (``published``) and printed beside ours by
``mrif data stats``; they have not been checked against the real files, which cannot be
downloaded where this was written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mrif.data.dataset import FORMAT_VERSION
from mrif.data.prepare import prepare_dataset
from mrif.data.readers import content_sha256, source_sha256

try:
    import fcntl
except ImportError:  # Windows has no fcntl: concurrent first uses are not serialised there
    fcntl = None  # type: ignore[assignment]

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
# The McAuley 2014 Amazon page's per-category files (http://jmcauley.ucsd.edu/data/amazon/).
_AMAZON_2014 = "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles"
_MRIF_TABLE_1 = "MRIF paper (Li et al., SIGIR 2020), Table 1"


@dataclass(frozen=True)
class PublishedCounts:
    """Counts a paper reports for its version of a dataset: compared, never enforced."""

    n_users: int
    n_items: int
    n_actions: int
    reference: str


@dataclass(frozen=True)
class RegisteredDataset:
    """A raw file with its checksum, and the recipe that prepares it.

    ``sha256`` is of the decompressed content; None means not known yet, and the first copy
    found is trusted and recorded (see the module docstring). ``published`` holds the counts
    a paper reports for the prepared dataset, for ``mrif data stats`` to print beside ours.
    """

    name: str
    mirror_path: str  # relative to the mirror and to ``<cache>/sources``
    url: str
    sha256: str | None
    fmt: str
    k_core: int | None = None
    dedupe: bool = False
    published: PublishedCounts | None = None


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
        RegisteredDataset(
            name="amazon-electronics",
            mirror_path="amazon-electronics-2014/reviews_Electronics_5.json",
            url=f"{_AMAZON_2014}/reviews_Electronics_5.json.gz",
            sha256=None,  # TODO(#4): pin once the file is fetched from the McAuley page
            fmt="amazon-reviews",
            k_core=10,
            published=PublishedCounts(11_589, 20_247, 347_393, _MRIF_TABLE_1),
        ),
        RegisteredDataset(
            name="amazon-movies",
            mirror_path="amazon-movies-2014/reviews_Movies_and_TV_5.json",
            url=f"{_AMAZON_2014}/reviews_Movies_and_TV_5.json.gz",
            sha256=None,  # TODO(#4): pin once the file is fetched from the McAuley page
            fmt="amazon-reviews",
            k_core=10,
            published=PublishedCounts(33_326, 21_901, 958_986, _MRIF_TABLE_1),
        ),
    )
}


class SourceUnavailableError(RuntimeError):
    """A registered raw file is in neither the cache nor the mirror and cannot be downloaded."""


class ChecksumMismatchError(ValueError):
    """A raw file's decompressed content does not have the registered (or recorded) sha256."""


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
        checksum = f"sha256 {entry.sha256}" if entry.sha256 else "sha256 not pinned"
        raise SourceUnavailableError(
            f"dataset {name!r} needs the file {entry.mirror_path} ({checksum}), "
            f"which is not in {searched}, and downloading {entry.url} failed: {err}. "
            f"Supply it by setting MRIF_DATA_MIRROR to a folder holding {entry.mirror_path} "
            f"(or {entry.mirror_path}.gz), or by putting the file at {cached}."
        ) from err
    _check_digest(entry, content_sha256(data, entry.url), entry.url)
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
        if _is_current(out_dir):
            return out_dir
        source = resolve_source(entry.name)
        return _prepare_once(
            source, out_dir, fmt=entry.fmt, k_core=entry.k_core, dedupe=entry.dedupe,
            seed=seed, name=entry.name,
        )  # fmt: skip
    if path.is_file():
        stem = Path(path.name.removesuffix(".gz")).stem
        out_dir = cache_dir() / "prepared" / f"{stem}-{source_sha256(path)[:16]}-seed{seed}"
        if _is_current(out_dir):
            return out_dir
        return _prepare_once(path, out_dir, seed=seed, name=stem)
    if path.is_dir():
        raise FileNotFoundError(f"{path}: directory has no meta.json; it is not a prepared dataset")
    raise ValueError(
        f"name_or_dir must be a registered dataset ({', '.join(sorted(REGISTRY))}), "
        f"a prepared dataset directory or a raw interactions file; got {str(name_or_dir)!r}"
    )


def prepare_registered(
    name: str,
    out_dir: str | Path,
    *,
    seed: int = 0,
    n_eval_negatives: int = 100,
    overwrite: bool = False,
    skip_bad_lines: bool = False,
) -> Path:
    """Prepare registered dataset ``name`` into ``out_dir`` with its recipe (format, k-core,
    dedupe); the raw file is found as ``resolve_source`` finds it."""
    entry = _entry(name)
    return prepare_dataset(
        resolve_source(name), out_dir, fmt=entry.fmt, k_core=entry.k_core, dedupe=entry.dedupe,
        seed=seed, n_eval_negatives=n_eval_negatives, name=entry.name, overwrite=overwrite,
        skip_bad_lines=skip_bad_lines,
    )  # fmt: skip


def recorded_checksum_path(name: str) -> Path:
    """Where the checksum of an unpinned dataset's first copy is recorded."""
    return cache_dir() / "checksums" / f"{name}.json"


def _entry(name: str) -> RegisteredDataset:
    if name not in REGISTRY:
        raise ValueError(f"dataset must be one of {', '.join(sorted(REGISTRY))}; got {name!r}")
    return REGISTRY[name]


def _verify(path: Path, entry: RegisteredDataset) -> None:
    _check_digest(entry, source_sha256(path), path)


def _check_digest(entry: RegisteredDataset, got: str, where: str | Path) -> None:
    """Compare with the pinned checksum, or the recorded one; record it on first use."""
    expected, origin = entry.sha256, "pinned in the registry"
    if expected is None:
        record = recorded_checksum_path(entry.name)
        if not record.is_file():
            _record_checksum(entry, got, where, record)
            return
        expected = json.loads(record.read_text())["sha256"]
        origin = f"recorded on first use in {record}; delete that file to accept this copy"
    if got != expected:
        raise ChecksumMismatchError(
            f"{where}: sha256 mismatch for dataset {entry.name!r} (of the decompressed content): "
            f"expected {expected}, got {got} ({origin})"
        )


def _record_checksum(entry: RegisteredDataset, got: str, where: str | Path, record: Path) -> None:
    content = {"name": entry.name, "sha256": got, "of": "decompressed content", "first": str(where)}
    _write_atomically(record, (json.dumps(content, indent=2) + "\n").encode())
    warnings.warn(
        f"dataset {entry.name!r} has no pinned sha256; trusting the first copy found ({where}, "
        f"sha256 {got}) and recording it in {record}: later copies must match it",
        stacklevel=4,
    )


def _is_current(prepared_dir: Path) -> bool:
    """A cached prepared directory that is complete and of this version of the format.

    Raises:
        RuntimeError: the directory was prepared by a newer mrif, which this one cannot read.
    """
    meta_path = prepared_dir / "meta.json"
    if not meta_path.is_file():
        return False
    try:
        version = json.loads(meta_path.read_text()).get("format_version")
    except (OSError, ValueError):
        return False
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise RuntimeError(
            f"{prepared_dir} has format_version {version}, newer than this mrif reads "
            f"({FORMAT_VERSION}); upgrade mrif or point MRIF_CACHE_DIR elsewhere"
        )
    if version != FORMAT_VERSION:
        logger.info("%s has format_version %r; preparing it again", prepared_dir, version)
        return False
    return True


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
    """Prepare into the cache, one process at a time: a process that waited for the lock
    finds the directory another has just written and uses it."""
    with _cache_lock(out_dir):
        if _is_current(out_dir):
            return out_dir
        stale = (out_dir / "meta.json").is_file()  # an older format_version
        try:
            return prepare_dataset(
                source, out_dir, fmt=fmt, k_core=k_core, dedupe=dedupe, seed=seed, name=name,
                overwrite=stale,
            )  # fmt: skip
        except FileExistsError:
            # A writer outside this lock finished first; a directory with meta.json is complete.
            if (out_dir / "meta.json").is_file():
                return out_dir
            raise


@contextlib.contextmanager
def _cache_lock(out_dir: Path) -> Iterator[None]:
    """An exclusive lock on ``.<name>.lock`` beside ``out_dir`` (where ``fcntl`` exists)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(out_dir.parent / f".{out_dir.name}.lock", "a") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


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

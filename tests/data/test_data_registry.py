"""Registry: cache, then mirror (plain or .gz), then download; checksums; offline message.

No test touches the network: the downloader is replaced in every test.
"""

import concurrent.futures
import gzip
import hashlib
import json
import time
import urllib.error

import pytest

from mrif.data import registry
from mrif.data.dataset import FORMAT_VERSION, PreparedDataset
from mrif.data.registry import (
    REGISTRY,
    ChecksumMismatchError,
    RegisteredDataset,
    SourceUnavailableError,
    resolve_dataset,
    resolve_source,
)

CONTENT = b"u1 a b c\nu2 b c d\nu3 a c d e\n"
TINY = RegisteredDataset(
    name="tiny",
    mirror_path="tiny-src/tiny.txt",
    url="https://example.invalid/tiny.txt",
    sha256=hashlib.sha256(CONTENT).hexdigest(),
    fmt="sequence",
)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Private cache, no mirror, a registered tiny dataset, and a downloader that must not run."""
    monkeypatch.setenv("MRIF_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MRIF_DATA_MIRROR", raising=False)
    monkeypatch.setitem(REGISTRY, "tiny", TINY)

    def no_network(url, timeout=60.0):
        raise AssertionError(f"test tried to download {url}")

    monkeypatch.setattr(registry, "fetch_url", no_network)


def put(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def use_mirror(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    monkeypatch.setenv("MRIF_DATA_MIRROR", str(mirror))
    return mirror


def test_registered_datasets_pin_provenance_facts():
    beauty, sports, ml = (
        REGISTRY["amazon-beauty"],
        REGISTRY["amazon-sports"],
        REGISTRY["movielens-100k"],
    )
    assert beauty.mirror_path == "amazon-beauty-s3rec/Beauty.txt"
    assert beauty.sha256 == "226cce9c3105299ca0db9615d7d3fb32b3175e90da43100ae352599f0f0107b8"
    assert beauty.url.endswith(
        "CIKM2020-S3Rec/49a890dcb516c9ed3126564495234ea74d5cd566/data/Beauty.txt"
    )
    assert sports.mirror_path == "amazon-sports-s3rec/Sports_and_Outdoors.txt"
    assert sports.sha256 == "2a095e0648872beb9982408958290f5d655db5be2911c3756b5446de9f0b8de2"
    assert ml.url.endswith(
        "RecBole/7b02be5ec80a88310f2d04a27a82adfcbb5dc211/dataset/ml-100k/ml-100k.inter"
    )
    assert ml.sha256 == "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff"
    assert (beauty.fmt, sports.fmt, ml.fmt) == ("sequence", "sequence", "recbole")


def test_cache_comes_before_mirror(tmp_path, monkeypatch):
    cached = put(tmp_path / "cache" / "sources" / TINY.mirror_path, CONTENT)
    put(use_mirror(tmp_path, monkeypatch) / TINY.mirror_path, CONTENT)
    assert resolve_source("tiny") == cached


def test_mirror_plain_then_gz(tmp_path, monkeypatch):
    mirror = use_mirror(tmp_path, monkeypatch)
    packed = put(mirror / (TINY.mirror_path + ".gz"), gzip.compress(CONTENT))
    assert resolve_source("tiny") == packed  # checksum is of the decompressed content
    plain = put(mirror / TINY.mirror_path, CONTENT)
    assert resolve_source("tiny") == plain


def test_checksum_mismatch_names_expected_and_got(tmp_path, monkeypatch):
    bad = put(use_mirror(tmp_path, monkeypatch) / TINY.mirror_path, b"u9 z z z\n")
    got = hashlib.sha256(b"u9 z z z\n").hexdigest()
    with pytest.raises(ChecksumMismatchError, match=f"{bad}.*expected {TINY.sha256}, got {got}"):
        resolve_source("tiny")


def test_download_goes_to_cache_after_checksum(tmp_path, monkeypatch):
    urls = []
    monkeypatch.setattr(
        registry, "fetch_url", lambda url, timeout=60.0: urls.append(url) or CONTENT
    )
    path = resolve_source("tiny")
    assert path == tmp_path / "cache" / "sources" / TINY.mirror_path
    assert path.read_bytes() == CONTENT
    assert urls == [TINY.url]
    assert resolve_source("tiny") == path and len(urls) == 1  # served from the cache now


def test_download_with_wrong_checksum_is_not_cached(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "fetch_url", lambda url, timeout=60.0: b"tampered\n")
    with pytest.raises(ChecksumMismatchError, match=f"expected {TINY.sha256}, got"):
        resolve_source("tiny")
    assert not (tmp_path / "cache" / "sources" / TINY.mirror_path).exists()


def test_offline_error_says_what_to_supply(tmp_path, monkeypatch):
    def offline(url, timeout=60.0):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(registry, "fetch_url", offline)
    with pytest.raises(SourceUnavailableError) as info:
        resolve_source("tiny")
    message = str(info.value)
    for needed in (TINY.mirror_path, TINY.url, "MRIF_DATA_MIRROR", "no route to host"):
        assert needed in message
    assert str(tmp_path / "cache" / "sources" / TINY.mirror_path) in message


def test_unknown_source_name():
    with pytest.raises(ValueError, match="dataset must be one of amazon-beauty, .*; got 'nope'"):
        resolve_source("nope")


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_resolve_dataset_prepares_a_name_once(tmp_path, monkeypatch):
    put(use_mirror(tmp_path, monkeypatch) / TINY.mirror_path, CONTENT)
    calls = []
    real_prepare = registry.prepare_dataset
    monkeypatch.setattr(
        registry, "prepare_dataset", lambda *a, **kw: calls.append(kw) or real_prepare(*a, **kw)
    )

    out = resolve_dataset("tiny", seed=3)
    assert out == tmp_path / "cache" / "prepared" / "tiny-seed3"
    assert (out / "meta.json").is_file()
    assert resolve_dataset("tiny", seed=3) == out
    assert len(calls) == 1 and calls[0]["seed"] == 3 and calls[0]["name"] == "tiny"
    assert resolve_dataset(out) == out  # a prepared directory is returned as is


def cached_tiny_with_format(tmp_path, monkeypatch, version: int):
    """The tiny dataset prepared into the cache, its meta.json then set to ``version``."""
    put(use_mirror(tmp_path, monkeypatch) / TINY.mirror_path, CONTENT)
    out = resolve_dataset("tiny")
    meta_path = out / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "format_version": version}))
    return out


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_cached_dataset_of_an_older_format_is_prepared_again(tmp_path, monkeypatch):
    out = cached_tiny_with_format(tmp_path, monkeypatch, FORMAT_VERSION - 1)
    meta_path = out / "meta.json"
    (out / "left-by-the-old-version").touch()

    assert resolve_dataset("tiny") == out
    assert json.loads(meta_path.read_text())["format_version"] == FORMAT_VERSION
    assert not (out / "left-by-the-old-version").exists()  # replaced, not patched
    PreparedDataset.load(out)
    assert [p.name for p in out.parent.iterdir() if ".old-" in p.name or ".tmp-" in p.name] == []


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_cached_dataset_of_a_newer_format_is_an_error(tmp_path, monkeypatch):
    out = cached_tiny_with_format(tmp_path, monkeypatch, FORMAT_VERSION + 1)
    meta_path = out / "meta.json"
    with pytest.raises(RuntimeError, match=r"newer than this mrif reads.*MRIF_CACHE_DIR"):
        resolve_dataset("tiny")
    assert json.loads(meta_path.read_text())["format_version"] == FORMAT_VERSION + 1


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_concurrent_first_uses_prepare_once(tmp_path, monkeypatch):
    """Threads stand in for processes: the cache lock lets one prepare, the others wait and
    reuse its directory."""
    put(use_mirror(tmp_path, monkeypatch) / TINY.mirror_path, CONTENT)
    calls = []
    real_prepare = registry.prepare_dataset

    def slow_prepare(*args, **kwargs):
        calls.append(kwargs)
        time.sleep(0.2)
        return real_prepare(*args, **kwargs)

    monkeypatch.setattr(registry, "prepare_dataset", slow_prepare)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda _: resolve_dataset("tiny"), range(4)))
    assert len(set(outs)) == 1 and len(calls) == 1


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_resolve_dataset_raw_file_keyed_by_checksum(tmp_path):
    source = put(tmp_path / "mine.txt.gz", gzip.compress(CONTENT))
    out = resolve_dataset(source)
    assert out == tmp_path / "cache" / "prepared" / f"mine-{TINY.sha256[:16]}-seed0"
    assert (out / "meta.json").is_file()


def test_resolve_dataset_rejects_unknown(tmp_path):
    with pytest.raises(ValueError, match=r"registered dataset \(amazon-beauty, .*\).*'nope'"):
        resolve_dataset("nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no meta.json"):
        resolve_dataset(tmp_path / "empty")

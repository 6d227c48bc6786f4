"""Describe a prepared dataset: its size, its sequence lengths and the filtering behind it.

The counts come from the dataset's files (``histories.parquet``, ``items.parquet``), the
filtering from ``meta.json``; a registered recipe that carries a paper's counts (the MRIF
Amazon sets) has them printed beside ours.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from mrif.data.registry import REGISTRY

# Sequence-length quantiles, numpy's default (linear) interpolation between order statistics.
QUANTILES = {"25%": 0.25, "50%": 0.5, "75%": 0.75, "90%": 0.9, "99%": 0.99}


def dataset_stats(path: str | Path) -> dict[str, Any]:
    """Counts, sequence-length quantiles and filtering of the prepared dataset at ``path``.

    Sequence length is the whole history of a user (training items plus the validation and
    test targets). Keys: ``name``, ``path``, ``n_users``, ``n_items``, ``n_actions``,
    ``n_eval_users``, ``sequence_length`` (min, quantiles, max, mean), ``source``,
    ``filtering`` (as in meta.json) and ``published`` (a paper's counts, or None).
    """
    path = Path(path)
    for name in ("meta.json", "histories.parquet", "items.parquet"):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path / name}: missing; {path} is not a prepared dataset")
    meta = json.loads((path / "meta.json").read_text())
    lengths = (
        pl.read_parquet(path / "histories.parquet", columns=["items"])["items"]
        .list.len()
        .to_numpy()
    )
    if lengths.size == 0:
        raise ValueError(f"{path / 'histories.parquet'}: no users")
    n_items = pl.read_parquet(path / "items.parquet", columns=["item_id"]).height

    sequence_length: dict[str, float] = {"min": int(lengths.min())}
    for label, q in QUANTILES.items():
        sequence_length[label] = float(np.quantile(lengths, q))
    sequence_length["max"] = int(lengths.max())
    sequence_length["mean"] = float(lengths.mean())

    entry = REGISTRY.get(meta.get("name", ""))
    published = None
    if entry is not None and entry.published is not None:
        published = {
            "n_users": entry.published.n_users,
            "n_items": entry.published.n_items,
            "n_actions": entry.published.n_actions,
            "reference": entry.published.reference,
        }
    return {
        "name": meta.get("name"),
        "path": str(path),
        "n_users": int(lengths.size),
        "n_items": n_items,
        "n_actions": int(lengths.sum()),
        "n_eval_users": meta.get("n_eval_users"),
        "sequence_length": sequence_length,
        "source": meta.get("source", {}),
        "filtering": meta.get("recipe", {}),
        "published": published,
    }


def format_stats(stats: dict[str, Any]) -> str:
    """The text ``mrif data stats`` prints."""
    source, filtering, published = stats["source"], stats["filtering"], stats["published"]
    lines = [f"{stats['name']} ({stats['path']})"]

    n_rows, skipped = source.get("n_rows"), source.get("n_bad_lines_skipped")
    read = f"{n_rows:,} rows read" if n_rows is not None else "rows read not recorded"
    if skipped is not None:
        read += f", {skipped:,} bad lines skipped"
    lines.append(
        f"source:    {source.get('path', '?')} (format {source.get('format', '?')}, "
        f"sha256 {str(source.get('sha256', '?'))[:16]}...; {read})"
    )
    k_core = filtering.get("k_core")
    parts = [
        f"{k_core}-core (iterated to a fixed point)" if k_core else "no k-core",
        "repeated (user, item) events dropped" if filtering.get("dedupe") else "repeats kept",
    ]
    if filtering.get("skip_bad_lines"):
        parts.append("bad lines skipped")
    if "sort" in filtering:
        parts.append(f"sorted {filtering['sort']}")
    lines.append(f"filtering: {', '.join(parts)}")
    lines.append("")

    header = f"{'':<9}{'this dataset':>14}"
    if published:
        header += f"  {'published':>12}  ({published['reference']})"
    lines.append(header)
    for key, label in (("n_users", "users"), ("n_items", "items"), ("n_actions", "actions")):
        row = f"{label:<9}{stats[key]:>14,}"
        if published:
            row += f"  {published[key]:>12,}"
        lines.append(row)
    if stats.get("n_eval_users") is not None:
        lines.append(f"evaluated users: {stats['n_eval_users']:,} of {stats['n_users']:,}")
    lines.append("")

    lengths = stats["sequence_length"]
    cells = [f"{label} {_number(value)}" for label, value in lengths.items()]
    lines.append(f"sequence length: {'  '.join(cells)}")
    return "\n".join(lines)


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"

"""Top-k recommendations from a trained run, in the dataset's raw item and user ids.

A run directory keeps ``items.parquet`` and ``users.parquet``, the raw id behind every item and
user id the model was trained with (case B18). Recommendations are translated through them,
and a dataset whose ids no longer match is refused rather than read with shifted ids: item ids
always, user ids for the models that learn a vector per user (BPR, NCF, Caser).

A known user's recommendations follow the whole history (training, validation and test
items): the next item after everything the dataset holds. Items already in that history are
left out unless ``exclude_seen`` is False, so a user who has seen nearly every item gets a
list shorter than ``k``. Sequence models (no per-user vector) can also recommend after a
history given as raw item ids, for a user the dataset does not know.

Users are scored in batches; the batch a user falls in can change the last float digits of a
score, as with any batched evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from mrif.batches import left_pad, trim_padding
from mrif.config import TrainConfig
from mrif.data.dataset import PAD_TOKEN, PreparedDataset
from mrif.metrics import topk_chunked
from mrif.models.base import SequentialRecommender
from mrif.run_dir import RunError, write_aside

HISTORY_USER = "<history>"
"""The user name given to recommendations for a history passed as item ids."""
OUTPUT_SUFFIXES = (".parquet", ".csv")


class RecommendError(ValueError):
    """A recommendation request that names an unknown user or item, or a bad ``k``."""


@dataclass(frozen=True)
class Recommendations:
    """Top items per user, best first. A row is shorter than ``k`` when fewer unseen items
    exist.

    Attributes:
        users: raw user ids (``HISTORY_USER`` for a given history).
        items: raw item ids per user.
        scores: the model's score of each of those items.
    """

    users: list[str]
    items: list[list[str]]
    scores: list[list[float]]

    def to_frame(self) -> pl.DataFrame:
        """One row per (user, rank): ``user``, ``rank`` (1 = best), ``item``, ``score``."""
        lists = pl.DataFrame(
            {"user": self.users, "item": self.items, "score": self.scores},
            schema={"user": pl.Utf8, "item": pl.List(pl.Utf8), "score": pl.List(pl.Float64)},
        )
        return (
            lists.with_columns(rank=pl.int_ranges(1, pl.col("item").list.len() + 1, dtype=pl.Int32))
            .explode(["item", "score", "rank"])
            .drop_nulls("item")  # users with an empty list
            .select("user", "rank", "item", "score")
        )


class Recommender:
    """A trained model with its dataset, answering in raw ids.

    Args:
        model: the trained model.
        dataset: the prepared dataset it was trained on.
        raw_items: raw item id of every item id the model knows (index 0 is padding), as
            saved with the run.
        raw_users: raw user id of every user id, as saved with the run; None for runs saved
            before the file existed (then ``model.uses_users`` models are refused).
        train: evaluation sizes and device (``eval_batch_size``, ``item_chunk``, ``device``).

    Raises:
        RunError: the dataset's item ids, or for per-user models its user ids, differ from
            the run's.
    """

    def __init__(
        self,
        model: SequentialRecommender,
        dataset: PreparedDataset,
        raw_items: Sequence[str],
        raw_users: Sequence[str] | None,
        train: TrainConfig,
    ) -> None:
        if list(raw_items) != list(dataset.raw_items):
            raise RunError(
                f"the run's items.parquet and the dataset at {dataset.path} disagree on the "
                "item ids: the dataset was prepared again from other data; train a new run"
            )
        if model.uses_users and list(raw_users or []) != list(dataset.raw_users):
            saved = "disagree on" if raw_users is not None else "cannot be checked for"
            raise RunError(
                f"the run's users.parquet and the dataset at {dataset.path} {saved} the user "
                f"ids, which {model.name} learns one vector each for; train a new run"
            )
        self.model = model.eval()
        self.dataset = dataset
        self.raw_items = list(raw_items)
        self.train = train
        self._user_index = {raw: user for user, raw in enumerate(dataset.raw_users)}

    def for_users(
        self, raw_users: Sequence[str] | None = None, k: int = 10, exclude_seen: bool = True
    ) -> Recommendations:
        """Top ``k`` items for each named user (repeats dropped), or for every user when
        ``raw_users`` is None.

        Raises:
            RecommendError: no users, unknown users (all named), or ``k`` outside 1..n_items.
        """
        _check_k(k, self.dataset.n_items)
        if raw_users is None:
            users = np.arange(self.dataset.n_users, dtype=np.int64)
        else:
            users = np.array(self._users(raw_users), dtype=np.int64)
        histories = [self.dataset.history(int(user)) for user in users]
        top_items, top_scores = self._top(histories, users, k, exclude_seen)
        names = [self.dataset.raw_users[int(user)] for user in users]
        return self._translate(names, top_items, top_scores)

    def for_history(
        self, raw_history: Sequence[str], k: int = 10, exclude_seen: bool = True
    ) -> Recommendations:
        """Top ``k`` items after a history of raw item ids, oldest first.

        Raises:
            RecommendError: the model learns one vector per user and so needs a known user, an
                empty history, unknown items (all named), or ``k`` outside 1..n_items.
        """
        _check_k(k, self.dataset.n_items)
        if self.model.uses_users:
            raise RecommendError(
                f"{self.model.name} learns a vector per user, so it recommends only for users "
                "of its dataset; name one with --user"
            )
        _check_id_list(raw_history, "history")
        if not raw_history:
            raise RecommendError("the history is empty; give at least one item")
        ids, unknown = [], []
        for raw in raw_history:
            try:
                ids.append(self.dataset.raw_item_to_id(raw))
            except KeyError:
                unknown.append(raw)
        if unknown:
            raise RecommendError(
                f"item(s) {', '.join(map(repr, unknown))} not in the run's dataset "
                f"({self.dataset.n_items} items)"
            )
        history = np.array(ids, dtype=np.int32)
        top_items, top_scores = self._top([history], None, k, exclude_seen)
        return self._translate([HISTORY_USER], top_items, top_scores)

    def _users(self, raw_users: Sequence[str]) -> list[int]:
        _check_id_list(raw_users, "raw_users")
        named = list(dict.fromkeys(raw_users))  # repeats dropped, order kept
        if not named:
            raise RecommendError("no users given")
        unknown = [raw for raw in named if raw not in self._user_index]
        if unknown:
            raise RecommendError(
                f"user(s) {', '.join(map(repr, unknown))} not in the run's dataset "
                f"({self.dataset.n_users} users at {self.dataset.path})"
            )
        return [self._user_index[raw] for raw in named]

    def _top(
        self,
        histories: list[np.ndarray],
        users: np.ndarray | None,
        k: int,
        exclude_seen: bool,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(U, k) item ids and scores, best first; left-out items score -inf."""
        device = torch.device(self.train.device)
        # Users of similar length share a batch, so a batch holds little padding.
        order = np.argsort([len(h) for h in histories], kind="stable")
        inputs = left_pad([histories[i] for i in order], self.model.config.max_len)
        sorted_users = None if users is None else users[order]
        seen = [np.unique(histories[i]) for i in order]

        @torch.no_grad()
        def score(rows: np.ndarray, items: np.ndarray) -> np.ndarray:
            seq = torch.from_numpy(trim_padding(inputs[rows])).to(device)
            row_users = None
            if sorted_users is not None:
                row_users = torch.from_numpy(sorted_users[rows]).to(device)
            candidates = torch.from_numpy(items).to(device)
            scores = self.model.candidate_scores(seq, candidates, row_users).double().cpu().numpy()
            if exclude_seen:
                first, width = int(items[0]), len(items)
                for out_row, row in enumerate(rows):
                    inside = seen[row][(seen[row] >= first) & (seen[row] < first + width)]
                    scores[out_row, inside - first] = -np.inf
            return scores

        top_items, top_scores = topk_chunked(
            score,
            n_users=len(histories),
            n_items=self.dataset.n_items,
            k=k,
            user_batch=max(1, self.train.eval_batch_size // 2),
            item_chunk=self.train.item_chunk,
        )
        unsorted = np.empty_like(order)
        unsorted[order] = np.arange(len(order))
        return top_items[unsorted], top_scores[unsorted]

    def _translate(
        self, names: list[str], top_items: np.ndarray, top_scores: np.ndarray
    ) -> Recommendations:
        items, scores = [], []
        for row_items, row_scores in zip(top_items, top_scores, strict=True):
            kept = np.isfinite(row_scores)  # -inf: left out, returned only to fill k
            items.append([self.raw_items[int(item)] for item in row_items[kept]])
            scores.append([float(value) for value in row_scores[kept]])
        return Recommendations(users=names, items=items, scores=scores)


def _check_k(k: Any, n_items: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= n_items:
        raise RecommendError(f"k must be an integer in 1..{n_items} (the items); got {k!r}")


def _check_id_list(ids: Any, name: str) -> None:
    """A list of raw ids, not one id: a string would be split into its characters."""
    if isinstance(ids, str | bytes) or not isinstance(ids, Sequence):
        raise RecommendError(f"{name} must be a list of raw ids; got {ids!r}")


def load_recommender(run_dir: Path | str, device: str | None = None) -> Recommender:
    """The trained model of a finished run, with its dataset and saved ids."""
    from mrif.runs import load_run

    run_dir = Path(run_dir)
    model, dataset, config, _ = load_run(run_dir, device)
    items = _read_ids(run_dir / "items.parquet", "item")
    if items is None:
        raise RunError(f"{run_dir} has no items.parquet, so its item ids cannot be translated")
    users = _read_ids(run_dir / "users.parquet", "user")
    return Recommender(model, dataset, [PAD_TOKEN, *items], users, config.train)


def _read_ids(path: Path, kind: str) -> list[str] | None:
    """Raw ids ordered by id from a run's ``items.parquet`` or ``users.parquet``; None if the
    file is absent."""
    if not path.exists():
        return None
    try:
        table = pl.read_parquet(path).sort(f"{kind}_id")
        return table[f"raw_{kind}"].cast(pl.Utf8).to_list()
    except Exception as error:  # polars raises its own error types
        raise RunError(f"{path}: not a readable {kind} id table ({error})") from None


def check_output_path(path: Path | str, overwrite: bool, protected: Sequence[Path] = ()) -> Path:
    """Refuse, before any scoring, an output path that cannot or should not be written.

    Args:
        path: where the recommendations go; ``.parquet`` or ``.csv``.
        overwrite: allow replacing an existing file.
        protected: directories never written into (the run's and the dataset's).

    Raises:
        RecommendError: another suffix, a missing parent directory, an existing file without
            ``overwrite``, or a path inside a protected directory.
    """
    path = Path(path)
    if path.suffix not in OUTPUT_SUFFIXES:
        raise RecommendError(f"--out must end in .parquet or .csv; got {path}")
    parent = path.resolve().parent
    if not parent.is_dir():
        raise RecommendError(f"--out {path}: directory {path.parent} does not exist")
    for directory in protected:
        if parent == Path(directory).resolve():
            raise RecommendError(f"--out {path} is inside {directory}, whose files mrif keeps")
    if path.is_dir():
        raise RecommendError(f"--out {path} is a directory")
    if path.exists() and not overwrite:
        raise RecommendError(f"--out {path} exists; pass --overwrite to replace it")
    return path


def write_recommendations(recommendations: Recommendations, path: Path | str) -> Path:
    """Write ``.parquet`` or ``.csv`` by the suffix, through a temporary file, so that a
    failure never leaves a half-written file at ``path``."""
    path = Path(path)
    if path.suffix not in OUTPUT_SUFFIXES:
        raise RecommendError(f"--out must end in .parquet or .csv; got {path}")
    frame = recommendations.to_frame()
    if path.suffix == ".parquet":
        return write_aside(path, frame.write_parquet)
    return write_aside(path, frame.write_csv)

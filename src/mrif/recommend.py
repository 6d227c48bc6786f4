"""Top-k recommendations from a trained run, in the dataset's raw item and user ids.

A run directory keeps ``items.parquet``, the raw id of every item id the model was trained
with (case B18): recommendations are translated through that file, and a dataset whose items
no longer match it is refused rather than read with shifted ids.

A known user's recommendations follow the whole history (training, validation and test
items): the next item after everything the dataset holds. Items already in that history are
left out unless ``exclude_seen`` is False. Sequence models (no per-user vector) can also
recommend after a history given as raw item ids, for a user the dataset does not know.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch

from mrif.batches import left_pad, trim_padding
from mrif.config import TrainConfig
from mrif.data.dataset import PAD_TOKEN, PreparedDataset
from mrif.metrics import topk_chunked
from mrif.models.base import SequentialRecommender
from mrif.run_dir import RunError

HISTORY_USER = "<history>"
"""The user name given to recommendations for a history passed as item ids."""


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
        rows = [
            (user, rank, item, score)
            for user, items, scores in zip(self.users, self.items, self.scores, strict=True)
            for rank, (item, score) in enumerate(zip(items, scores, strict=True), start=1)
        ]
        return pl.DataFrame(
            rows,
            schema={"user": pl.Utf8, "rank": pl.Int32, "item": pl.Utf8, "score": pl.Float64},
            orient="row",
        )


class Recommender:
    """A trained model with its dataset, answering in raw ids.

    Args:
        model: the trained model.
        dataset: the prepared dataset it was trained on.
        raw_items: raw item id of every item id the model knows (index 0 is padding), as
            saved with the run.
        train: evaluation sizes and device (``eval_batch_size``, ``item_chunk``, ``device``).

    Raises:
        RunError: the dataset's items differ from ``raw_items``.
    """

    def __init__(
        self,
        model: SequentialRecommender,
        dataset: PreparedDataset,
        raw_items: Sequence[str],
        train: TrainConfig,
    ) -> None:
        if list(raw_items) != list(dataset.raw_items):
            raise RunError(
                f"the dataset at {dataset.path} does not have the item ids this run was "
                "trained with (its items.parquet); prepare the run's dataset again or train "
                "a new run"
            )
        self.model = model.eval()
        self.dataset = dataset
        self.raw_items = list(raw_items)
        self.train = train
        self._user_index = {raw: user for user, raw in enumerate(dataset.raw_users)}

    def for_users(
        self, raw_users: Sequence[str] | None = None, k: int = 10, exclude_seen: bool = True
    ) -> Recommendations:
        """Top ``k`` items for each named user, or for every user when ``raw_users`` is None.

        Raises:
            RecommendError: an unknown user, or ``k`` outside 1..n_items.
        """
        if raw_users is None:
            users = np.arange(self.dataset.n_users, dtype=np.int64)
        else:
            users = np.array([self._user(raw) for raw in raw_users], dtype=np.int64)
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
                empty history, an unknown item, or ``k`` outside 1..n_items.
        """
        if self.model.uses_users:
            raise RecommendError(
                f"{self.model.name} learns a vector per user, so it recommends only for users "
                "of its dataset; name one with --user"
            )
        if not raw_history:
            raise RecommendError("the history is empty; give at least one item")
        history = np.array([self._item(raw) for raw in raw_history], dtype=np.int32)
        top_items, top_scores = self._top([history], None, k, exclude_seen)
        return self._translate([HISTORY_USER], top_items, top_scores)

    def _top(
        self,
        histories: list[np.ndarray],
        users: np.ndarray | None,
        k: int,
        exclude_seen: bool,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(U, k) item ids and scores, best first; left-out items score -inf."""
        n_items = self.dataset.n_items
        if isinstance(k, bool) or not 1 <= k <= n_items:
            raise RecommendError(f"k must be in 1..{n_items} (the number of items); got {k}")
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
            n_items=n_items,
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

    def _user(self, raw: str) -> int:
        try:
            return self._user_index[raw]
        except KeyError:
            raise RecommendError(
                f"user {raw!r} is not in the run's dataset ({self.dataset.n_users} users at "
                f"{self.dataset.path})"
            ) from None

    def _item(self, raw: str) -> int:
        try:
            return self.dataset.raw_item_to_id(raw)
        except KeyError:
            raise RecommendError(
                f"item {raw!r} is not in the run's dataset ({self.dataset.n_items} items)"
            ) from None


def load_recommender(run_dir: Path | str, device: str | None = None) -> Recommender:
    """The trained model of a finished run, with its dataset and saved item ids."""
    from mrif.runs import load_run

    run_dir = Path(run_dir)
    model, dataset, config, _ = load_run(run_dir, device)
    items_path = run_dir / "items.parquet"
    if not items_path.exists():
        raise RunError(f"{run_dir} has no items.parquet, so its item ids cannot be translated")
    items = pl.read_parquet(items_path).sort("item_id")
    raw_items = [PAD_TOKEN, *items["raw_item"].to_list()]
    return Recommender(model, dataset, raw_items, config.train)


def write_recommendations(recommendations: Recommendations, path: Path) -> Path:
    """Write ``.parquet`` or ``.csv`` by the suffix, through a temporary file, so that a
    failure never leaves a half-written file at ``path``."""
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise RecommendError(f"--out must end in .parquet or .csv; got {path}")
    frame = recommendations.to_frame()
    partial = path.with_name(f".{path.name}.partial")
    try:
        if suffix == ".parquet":
            frame.write_parquet(partial)
        else:
            frame.write_csv(partial)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return path

"""Ranking metrics for the sampled and the full-ranking protocols (PROTOCOL.md rules 9-14).

Shape legend: ``U`` users, ``N`` negative slots per user (padded), ``B`` user batch,
``C`` item chunk, ``K`` top-k size.

Written policy (STYLE item 7):

* **Ties never favour the target.** A rank is pessimistic, ``1 + #{candidates scoring >=
  target}`` (rule 11), so a constant scorer gets the worst rank, never the best (case B01).
  AUC and GAUC count a tied (target, negative) pair as one half (rule 13).
* **Single-class users.** A user whose negative mask is all False has one candidate and one
  class. Such a user is skipped by :func:`group_auc` (the count is returned), and
  :func:`sampled_metrics` leaves it out of every metric (``auc`` included, so that all
  seven numbers describe the same users) and reports how many there were (case B05). Its
  rank would be 1 for free.
* **Padding.** Negative slots whose mask is False are ignored wherever they occur; they may
  hold any value, NaN included. A NaN in a real slot is an error.
* **Empty inputs** (no user to evaluate, no negative at all) raise ``ValueError``: a mean
  over nothing is not reported as NaN.

Inputs are numpy arrays (anything ``np.asarray`` accepts); a torch tensor is detached and
moved to the CPU. :func:`count_at_least` alone keeps torch tensors on their device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "SAMPLED_KEYS",
    "FULL_KEYS",
    "SampledResult",
    "ranks_sampled",
    "hit_at_k",
    "ndcg_at_k",
    "mrr",
    "mean_over_users",
    "global_auc",
    "group_auc",
    "sampled_metrics",
    "full_metrics_from_ranks",
    "count_at_least",
    "topk_chunked",
]

SAMPLED_KEYS: tuple[str, ...] = ("auc", "gauc", "hit@5", "hit@10", "ndcg@5", "ndcg@10", "mrr")
"""Metric keys of the sampled protocol, in reporting order (rule 14)."""

FULL_KEYS: tuple[str, ...] = ("hit@5", "hit@10", "ndcg@5", "ndcg@10", "mrr")
"""Metric keys of the full-ranking protocol, reported under a separate ``full`` section."""


# ---------------------------------------------------------------------------- validation


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, possibly on an accelerator
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _score_array(x: Any, name: str, ndim: int) -> np.ndarray:
    arr = _to_numpy(x)
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"{name} must hold real numbers; got dtype {arr.dtype}")
    if arr.ndim != ndim:
        want = "(U,)" if ndim == 1 else "(U, N)"
        raise ValueError(f"{name} must have shape {want}; got shape {arr.shape}")
    return arr


def _check_no_nan(arr: np.ndarray, name: str, valid: np.ndarray | None = None) -> None:
    if arr.dtype.kind != "f":
        return
    is_nan = np.isnan(arr)
    if valid is not None:
        is_nan &= valid
    if is_nan.any():
        first = tuple(int(i) for i in np.argwhere(is_nan)[0])
        where = "valid slot(s)" if valid is not None else "entries"
        raise ValueError(
            f"{name} contains NaN in {int(is_nan.sum())} {where}, first at index {first}; "
            "scores must be numbers"
        )


def _validate_sampled(
    target_scores: Any, negative_scores: Any, negative_mask: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check shapes and NaN; return ``(target (U,), negatives (U, N), is_real (U, N))``."""
    target = _score_array(target_scores, "target_scores", 1)
    negatives = _score_array(negative_scores, "negative_scores", 2)
    if negatives.shape[0] != target.shape[0]:
        raise ValueError(
            "negative_scores must have one row per entry of target_scores; got "
            f"target_scores shape {target.shape} and negative_scores shape {negatives.shape}"
        )
    if negative_mask is None:
        is_real = np.ones(negatives.shape, dtype=bool)
    else:
        is_real = _to_numpy(negative_mask)
        if is_real.dtype != np.bool_:
            raise ValueError(
                "negative_mask must be a boolean array (True = real negative); "
                f"got dtype {is_real.dtype}"
            )
        if is_real.shape != negatives.shape:
            raise ValueError(
                "negative_mask must have the shape of negative_scores; got negative_mask "
                f"shape {is_real.shape} and negative_scores shape {negatives.shape}"
            )

    _check_no_nan(target, "target_scores")
    _check_no_nan(negatives, "negative_scores", valid=is_real)
    return target, negatives, is_real


def _validate_ranks(ranks: Any) -> np.ndarray:
    arr = _to_numpy(ranks)
    if arr.ndim != 1:
        raise ValueError(f"ranks must have shape (U,); got shape {arr.shape}")
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"ranks must hold numbers; got dtype {arr.dtype}")
    if arr.size and not (arr >= 1).all():  # also catches NaN
        bad = arr[~(arr >= 1)][0]
        raise ValueError(f"ranks are 1-based and must all be >= 1; got {bad}")
    return arr


def _validate_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be an integer >= 1; got {k!r}")
    return int(k)


# ---------------------------------------------------------------------------- ranks


def ranks_sampled(
    target_scores: Any, negative_scores: Any, negative_mask: Any = None
) -> np.ndarray:
    """Pessimistic 1-based rank of each user's target among its sampled negatives.

    ``rank = 1 + #{real negatives scoring >= target}`` (rule 11): a tie counts against the
    target.

    Args:
        target_scores: ``(U,)`` score of each user's held-out target.
        negative_scores: ``(U, N)`` scores of the sampled negatives, padded to ``N``.
        negative_mask: ``(U, N)`` bool, True where the slot holds a real negative. None
            means every slot is real.

    Returns:
        ``(U,)`` int64 ranks in ``1..N+1``. A user with no real negative gets rank 1.

    Raises:
        ValueError: on a shape mismatch, a non-bool mask, or NaN in a real score.

    Example:
        >>> ranks_sampled(np.array([0.5, 0.2]), np.array([[0.5, 0.1], [0.9, 0.1]]))
        array([2, 2])
        >>> ranks_sampled(np.array([0.5]), np.array([[0.9, 0.1]]), np.array([[False, True]]))
        array([1])
    """
    target, negatives, is_real = _validate_sampled(target_scores, negative_scores, negative_mask)

    beats_target = (negatives >= target[:, None]) & is_real  # (U, N)
    return 1 + beats_target.sum(axis=1, dtype=np.int64)


# ---------------------------------------------------------------------------- per-user metrics


def hit_at_k(ranks: Any, k: int) -> np.ndarray:
    """Per-user hit rate: ``1.0`` if ``rank <= k`` else ``0.0`` (rule 12).

    Args:
        ranks: ``(U,)`` 1-based ranks.
        k: cut-off, at least 1.

    Returns:
        ``(U,)`` float64 array of 0.0 and 1.0.

    Example:
        >>> hit_at_k(np.array([1, 10, 11]), k=10)
        array([1., 1., 0.])
    """
    k = _validate_k(k)
    arr = _validate_ranks(ranks)
    return (arr <= k).astype(np.float64)


def ndcg_at_k(ranks: Any, k: int) -> np.ndarray:
    """Per-user NDCG with one relevant item: ``1 / log2(rank + 1)`` if ``rank <= k`` else 0.

    The ideal DCG is 1 (the target at rank 1), so no further normalisation is needed.

    Args:
        ranks: ``(U,)`` 1-based ranks.
        k: cut-off, at least 1.

    Returns:
        ``(U,)`` float64 array in ``[0, 1]``.

    Example:
        >>> ndcg_at_k(np.array([1, 3, 11]), k=10)
        array([1. , 0.5, 0. ])
    """
    k = _validate_k(k)
    arr = _validate_ranks(ranks).astype(np.float64)
    return np.where(arr <= k, 1.0 / np.log2(arr + 1.0), 0.0)


def mrr(ranks: Any) -> np.ndarray:
    """Per-user reciprocal rank ``1 / rank``, with no cut-off (rule 12).

    Args:
        ranks: ``(U,)`` 1-based ranks.

    Returns:
        ``(U,)`` float64 array in ``(0, 1]``.

    Example:
        >>> mrr(np.array([1, 4]))
        array([1.  , 0.25])
    """
    arr = _validate_ranks(ranks).astype(np.float64)
    return 1.0 / arr


def mean_over_users(per_user: Any) -> float:
    """Mean of a per-user metric array, refusing an empty array instead of returning NaN.

    Args:
        per_user: ``(U,)`` per-user values, e.g. from :func:`hit_at_k`.

    Returns:
        The mean as a Python float.

    Raises:
        ValueError: if the array is empty or not 1-D.

    Example:
        >>> mean_over_users(ndcg_at_k(np.array([1, 3]), k=10))
        0.75
    """
    arr = _to_numpy(per_user)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"per_user must be a non-empty array of shape (U,); got shape {arr.shape}")
    return float(arr.mean())


# ---------------------------------------------------------------------------- AUC


def global_auc(target_scores: Any, negative_scores: Any, negative_mask: Any = None) -> float:
    """One ROC AUC over all (target, negative) pairs pooled across users (rule 13).

    The positives are all ``U`` targets and the negatives are all real negatives of all
    users; every target is compared with every negative, other users' included. A tie
    counts one half. Computed with the Mann-Whitney statistic on sorted negatives in
    ``O((U + M) log M)`` for ``M`` real negatives; no pair matrix is built.

    Args:
        target_scores: ``(U,)`` target scores.
        negative_scores: ``(U, N)`` negative scores.
        negative_mask: ``(U, N)`` bool, True where the slot holds a real negative.

    Returns:
        AUC in ``[0, 1]``.

    Raises:
        ValueError: on bad shapes or NaN, or when there is no target or no real negative.

    Example:
        >>> global_auc(np.array([0.8, 0.4]), np.array([[0.5, 0.1], [0.4, 0.9]]))
        0.5625
    """
    target, negatives, is_real = _validate_sampled(target_scores, negative_scores, negative_mask)
    pooled_negatives = np.sort(negatives[is_real])  # (M,)
    if target.size == 0 or pooled_negatives.size == 0:
        raise ValueError(
            "global AUC needs at least one target and one real negative; got "
            f"{target.size} target(s) and {pooled_negatives.size} real negative(s)"
        )

    n_below = np.searchsorted(pooled_negatives, target, side="left")  # (U,)
    n_below_or_tied = np.searchsorted(pooled_negatives, target, side="right")
    wins = n_below.sum(dtype=np.float64) + 0.5 * (n_below_or_tied - n_below).sum(dtype=np.float64)
    return float(wins / (target.size * pooled_negatives.size))


def _per_user_auc(
    target: np.ndarray, negatives: np.ndarray, is_real: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(auc (U,), n_negatives (U,))``; auc is NaN where a user has no negative."""
    below = ((negatives < target[:, None]) & is_real).sum(axis=1)  # (U,)
    tied = ((negatives == target[:, None]) & is_real).sum(axis=1)
    n_negatives = is_real.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (below + 0.5 * tied) / n_negatives
    return auc, n_negatives


def group_auc(
    target_scores: Any, negative_scores: Any, negative_mask: Any = None
) -> tuple[float, int]:
    """Per-user AUC averaged with weights = the user's number of candidates (rule 13).

    A user's candidates are its target and its real negatives, so the weight is
    ``n_negatives + 1``. A tie counts one half. Users without a real negative have a single
    class and no AUC: they are skipped and counted (case B05).

    Args:
        target_scores: ``(U,)`` target scores.
        negative_scores: ``(U, N)`` negative scores.
        negative_mask: ``(U, N)`` bool, True where the slot holds a real negative.

    Returns:
        ``(gauc, n_skipped)``: the weighted mean AUC and the number of skipped users.

    Raises:
        ValueError: on bad shapes or NaN, or when every user is skipped.

    Example:
        >>> group_auc(
        ...     np.array([0.3, 0.9]),
        ...     np.array([[0.5, 0.1], [0.0, 0.0]]),
        ...     np.array([[True, True], [False, False]]),
        ... )
        (0.5, 1)
    """
    target, negatives, is_real = _validate_sampled(target_scores, negative_scores, negative_mask)
    auc, n_negatives = _per_user_auc(target, negatives, is_real)

    has_two_classes = n_negatives > 0
    n_skipped = int((~has_two_classes).sum())
    if not has_two_classes.any():
        raise ValueError(
            f"group AUC needs a user with at least one real negative; all {target.size} "
            "user(s) have none"
        )
    weights = (n_negatives + 1)[has_two_classes].astype(np.float64)
    gauc = float((auc[has_two_classes] * weights).sum() / weights.sum())
    return gauc, n_skipped


# ---------------------------------------------------------------------------- protocols


@dataclass(frozen=True)
class SampledResult:
    """Metrics of the sampled protocol (rule 9) for one set of users.

    Attributes:
        metrics: exactly the keys of :data:`SAMPLED_KEYS`, each a mean over evaluated users.
        ranks: ``(U,)`` pessimistic ranks of all input users, in input order; users that
            were not evaluated hold rank 1, which no mean uses.
        is_evaluated: ``(U,)`` bool, True where the user had at least one real negative and
            so entered every metric (use it to pair users across models).
        n_users: number of input users ``U``.
        n_evaluated: number of users that entered the metrics.
        n_gauc_skipped: users skipped by GAUC because they have a single class.
        n_single_candidate: users with no real negative, left out of all metrics. With one
            target per user this equals ``n_gauc_skipped``.
    """

    metrics: dict[str, float]
    ranks: np.ndarray
    is_evaluated: np.ndarray
    n_users: int
    n_evaluated: int
    n_gauc_skipped: int
    n_single_candidate: int


def _ranking_means(ranks: np.ndarray) -> dict[str, float]:
    return {
        "hit@5": mean_over_users(hit_at_k(ranks, 5)),
        "hit@10": mean_over_users(hit_at_k(ranks, 10)),
        "ndcg@5": mean_over_users(ndcg_at_k(ranks, 5)),
        "ndcg@10": mean_over_users(ndcg_at_k(ranks, 10)),
        "mrr": mean_over_users(mrr(ranks)),
    }


def sampled_metrics(
    target_scores: Any, negative_scores: Any, negative_mask: Any = None
) -> SampledResult:
    """All sampled-protocol metrics: ``auc, gauc, hit@5, hit@10, ndcg@5, ndcg@10, mrr``.

    Users without a real negative are left out of every metric and counted (module policy,
    case B05); ``auc`` pools the evaluated users only.

    Args:
        target_scores: ``(U,)`` target scores.
        negative_scores: ``(U, N)`` negative scores.
        negative_mask: ``(U, N)`` bool, True where the slot holds a real negative.

    Returns:
        A :class:`SampledResult`.

    Raises:
        ValueError: on bad shapes or NaN, or when no user has a real negative.

    Example:
        >>> result = sampled_metrics(
        ...     np.array([0.95, 0.5, 0.9]),
        ...     np.array([[0.9, 0.7, 0.3, 0.1], [0.9, 0.7, 0.3, 0.1], [0.0, 0.0, 0.0, 0.0]]),
        ...     np.array([[True] * 4, [True] * 4, [False] * 4]),
        ... )
        >>> result.metrics["ndcg@10"], result.metrics["gauc"], result.n_single_candidate
        (0.75, 0.75, 1)
        >>> list(result.metrics)
        ['auc', 'gauc', 'hit@5', 'hit@10', 'ndcg@5', 'ndcg@10', 'mrr']
    """
    target, negatives, is_real = _validate_sampled(target_scores, negative_scores, negative_mask)
    n_users = int(target.size)
    is_evaluated = is_real.sum(axis=1) > 0  # (U,)
    n_evaluated = int(is_evaluated.sum())
    if n_evaluated == 0:
        raise ValueError(
            f"sampled metrics need a user with at least one real negative; all {n_users} "
            "user(s) have none"
        )

    ranks = ranks_sampled(target, negatives, is_real)
    gauc, n_gauc_skipped = group_auc(target, negatives, is_real)
    auc = global_auc(target[is_evaluated], negatives[is_evaluated], is_real[is_evaluated])

    metrics = {"auc": auc, "gauc": gauc, **_ranking_means(ranks[is_evaluated])}
    assert tuple(metrics) == SAMPLED_KEYS, tuple(metrics)
    return SampledResult(
        metrics=metrics,
        ranks=ranks,
        is_evaluated=is_evaluated,
        n_users=n_users,
        n_evaluated=n_evaluated,
        n_gauc_skipped=n_gauc_skipped,
        n_single_candidate=n_users - n_evaluated,
    )


def full_metrics_from_ranks(ranks: Any) -> dict[str, float]:
    """Full-ranking metrics (rule 10) from ranks computed elsewhere, e.g. chunked.

    Args:
        ranks: ``(U,)`` 1-based pessimistic ranks of each user's target among all items
            except padding and the user's input history.

    Returns:
        Dict with exactly the keys of :data:`FULL_KEYS`, each a mean over users. Report them
        under a ``full`` section, apart from the sampled numbers (rule 14).

    Raises:
        ValueError: if ``ranks`` is empty, not 1-D, or holds a value below 1.

    Example:
        >>> full_metrics_from_ranks(np.array([1, 3]))
        {'hit@5': 1.0, 'hit@10': 1.0, 'ndcg@5': 0.75, 'ndcg@10': 0.75, 'mrr': 0.6666666666666666}
    """
    arr = _validate_ranks(ranks)
    if arr.size == 0:
        raise ValueError("ranks must hold at least one user; got an empty array")
    metrics = _ranking_means(arr)
    assert tuple(metrics) == FULL_KEYS, tuple(metrics)
    return metrics


# ---------------------------------------------------------------------------- full ranking


def count_at_least(scores: Any, target_scores: Any) -> Any:
    """Count, per row of a score chunk, the entries scoring ``>=`` the row's target.

    Building block of chunked full ranking (rules 10-11). Set excluded items (padding, the
    user's input history) to ``-inf`` in ``scores`` before calling; they then never count,
    since a target score of ``-inf`` is refused. Sum the counts over all item chunks; the
    pessimistic rank is that sum if the target's own column lies in one of the chunks (it
    counts itself once, as ``score >= score``), and the sum plus 1 if the target lies in
    none of them.

    Args:
        scores: ``(B, C)`` numpy array or torch tensor of scores for one item chunk.
        target_scores: ``(B,)`` target scores, of the same kind (numpy or torch) as
            ``scores``.

    Returns:
        ``(B,)`` int64 counts, a torch tensor on the same device if ``scores`` is one, else
        a numpy array.

    Raises:
        ValueError: on a shape mismatch, NaN in either input, or a target scoring ``-inf``.
        TypeError: if one argument is a torch tensor and the other is not.

    Example:
        >>> chunk = np.array([[0.9, 0.5, -np.inf], [0.1, 0.2, 0.3]])
        >>> count_at_least(chunk, np.array([0.5, 0.9]))
        array([2, 0])
    """
    scores_is_torch = hasattr(scores, "detach")
    if scores_is_torch != hasattr(target_scores, "detach"):
        raise TypeError(
            "scores and target_scores must both be torch tensors or both numpy arrays; got "
            f"{type(scores).__name__} and {type(target_scores).__name__}"
        )
    if not scores_is_torch:
        scores = np.asarray(scores)
        target_scores = np.asarray(target_scores)
    if scores.ndim != 2 or target_scores.ndim != 1 or scores.shape[0] != target_scores.shape[0]:
        raise ValueError(
            "scores must have shape (B, C) and target_scores shape (B,); got scores shape "
            f"{tuple(scores.shape)} and target_scores shape {tuple(target_scores.shape)}"
        )
    # x != x is True exactly for NaN, in numpy and torch alike.
    if bool((scores != scores).any()):
        raise ValueError("scores contains NaN; mark excluded items with -inf, not NaN")
    if bool((target_scores != target_scores).any()):
        raise ValueError("target_scores contains NaN; scores must be numbers")
    if bool((target_scores == -float("inf")).any()):
        raise ValueError(
            "target_scores must be greater than -inf (-inf marks excluded items, and a "
            "target at -inf would tie with all of them); got a -inf target"
        )

    return (scores >= target_scores[:, None]).sum(1)


def _best_of_pool(
    pool_scores: np.ndarray, pool_items: np.ndarray, k: int, sentinel: int
) -> tuple[np.ndarray, np.ndarray]:
    """The k best (score, item) pairs of each row, higher score first, then lower item id.

    Sorting the whole (B, K + C) pool cost most of a Beauty-sized top-k. Only the pairs
    scoring at least the row's k-th best score can be among its k best: a linear-time
    partition finds that score, and the lexicographic sort runs on those pairs alone (all of
    them, ties at the k-th score included, so the tie rule still decides).
    """
    kth_best = -np.partition(-pool_scores, k - 1, axis=1)[:, k - 1]  # (B,)
    contender = pool_scores >= kth_best[:, None]  # (B, K + C), at least k per row
    rows, columns = np.nonzero(contender)  # row-major: each row's contenders together
    per_row = contender.sum(axis=1)
    slot = np.arange(rows.size) - np.repeat(np.cumsum(per_row) - per_row, per_row)
    width = int(per_row.max())
    scores = np.full((len(pool_scores), width), -np.inf)  # (B, M); padding loses every tie
    items = np.full((len(pool_scores), width), sentinel, dtype=np.int64)
    scores[rows, slot] = pool_scores[rows, columns]
    items[rows, slot] = pool_items[rows, columns]
    # lexsort: last key is primary, so higher score first, then lower item id.
    order = np.lexsort((items, -scores), axis=1)[:, :k]  # (B, K)
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(items, order, axis=1)


def topk_chunked(
    score_fn: Callable[[np.ndarray, np.ndarray], Any],
    n_users: int,
    n_items: int,
    k: int,
    user_batch: int,
    item_chunk: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k items of every user, scoring ``user_batch x item_chunk`` blocks at a time.

    Only a running top-k per user is kept, so the largest buffer is
    ``user_batch x (k + item_chunk)``, never ``n_users x n_items`` (case B20). Ties are
    broken by the lower item id, so the result does not depend on the chunk sizes. Items
    that ``score_fn`` scores ``-inf`` (excluded) are returned only if fewer than ``k`` items
    score higher.

    Args:
        score_fn: ``score_fn(user_ids, item_ids)`` returns scores of shape
            ``(len(user_ids), len(item_ids))``; ids are int64 arrays, users ``0..n_users-1``
            and items ``1..n_items`` (0 is padding and never scored).
        n_users: number of users, at least 1.
        n_items: number of real items, at least ``k``.
        k: number of items to return per user, at least 1.
        user_batch: users scored per call, at least 1.
        item_chunk: items scored per call, at least 1.

    Returns:
        ``(top_items, top_scores)``, both ``(n_users, k)``: int64 item ids and float64
        scores, best first.

    Raises:
        ValueError: on a bad size argument, a ``score_fn`` result of the wrong shape, or NaN
            in it.

    Example:
        >>> items, scores = topk_chunked(
        ...     lambda u, i: ((u[:, None] + 1) * i[None, :] * 37 % 101) / 101,
        ...     n_users=2, n_items=50, k=3, user_batch=1, item_chunk=7,
        ... )
        >>> items
        array([[30, 19, 49],
               [15, 30, 45]])
    """
    for name, value in (
        ("n_users", n_users),
        ("n_items", n_items),
        ("k", k),
        ("user_batch", user_batch),
        ("item_chunk", item_chunk),
    ):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    if k > n_items:
        raise ValueError(f"k must be at most n_items={n_items}; got {k}")

    top_items = np.empty((n_users, k), dtype=np.int64)
    top_scores = np.empty((n_users, k), dtype=np.float64)
    for user_start in range(0, n_users, user_batch):
        user_ids = np.arange(user_start, min(user_start + user_batch, n_users), dtype=np.int64)
        n_batch = user_ids.size
        # Sentinel id n_items + 1 loses every tie, so real items always displace it.
        best_scores = np.full((n_batch, k), -np.inf)  # (B, K)
        best_items = np.full((n_batch, k), n_items + 1, dtype=np.int64)  # (B, K)

        for item_start in range(1, n_items + 1, item_chunk):
            item_ids = np.arange(
                item_start, min(item_start + item_chunk, n_items + 1), dtype=np.int64
            )
            chunk = _to_numpy(score_fn(user_ids, item_ids)).astype(np.float64)  # (B, C)
            if chunk.shape != (n_batch, item_ids.size):
                raise ValueError(
                    "score_fn must return shape (len(user_ids), len(item_ids)) = "
                    f"{(n_batch, item_ids.size)}; got {chunk.shape}"
                )
            _check_no_nan(chunk, "score_fn output")

            pool_scores = np.concatenate([best_scores, chunk], axis=1)  # (B, K + C)
            pool_items = np.concatenate(
                [best_items, np.broadcast_to(item_ids, chunk.shape)], axis=1
            )  # (B, K + C)
            best_scores, best_items = _best_of_pool(pool_scores, pool_items, k, n_items + 1)

        top_items[user_ids] = best_items
        top_scores[user_ids] = best_scores
    return top_items, top_scores

"""Tests for mrif.metrics: the CASES.md cases, plain-loop references, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

try:  # scipy is a dev extra; the loop references below do not need it
    from scipy import stats
except ImportError:  # pragma: no cover
    stats = None

from mrif.metrics import (
    FULL_KEYS,
    SAMPLED_KEYS,
    count_at_least,
    full_metrics_from_ranks,
    global_auc,
    group_auc,
    hit_at_k,
    mean_over_users,
    mrr,
    ndcg_at_k,
    ranks_sampled,
    sampled_metrics,
    topk_chunked,
)

# ---------------------------------------------------------------------------- references
# Slow, obvious versions: plain loops over users and negatives, no numpy vectorisation.


def ref_ranks(target, negatives, mask):
    ranks = []
    for u in range(len(target)):
        rank = 1
        for j in range(len(negatives[u])):
            if mask[u][j] and negatives[u][j] >= target[u]:
                rank += 1
        ranks.append(rank)
    return ranks


def ref_user_auc(pos, negs):
    total = 0.0
    for neg in negs:
        if pos > neg:
            total += 1.0
        elif pos == neg:
            total += 0.5
    return total / len(negs)


def ref_group_auc(target, negatives, mask):
    weighted, weight_sum, skipped = 0.0, 0.0, 0
    for u in range(len(target)):
        negs = [negatives[u][j] for j in range(len(negatives[u])) if mask[u][j]]
        if not negs:
            skipped += 1
            continue
        weighted += ref_user_auc(target[u], negs) * (len(negs) + 1)
        weight_sum += len(negs) + 1
    return weighted / weight_sum, skipped


def ref_global_auc(target, negatives, mask):
    pooled = [
        negatives[u][j] for u in range(len(target)) for j in range(len(negatives[u])) if mask[u][j]
    ]
    total = 0.0
    for pos in target:
        for neg in pooled:
            if pos > neg:
                total += 1.0
            elif pos == neg:
                total += 0.5
    return total / (len(target) * len(pooled))


def ref_hit(rank, k):
    return 1.0 if rank <= k else 0.0


def ref_ndcg(rank, k):
    return 1.0 / math.log2(rank + 1) if rank <= k else 0.0


def ref_topk(scores, k):
    """scores: (U, n_items) list rows, column j is item j + 1."""
    out = []
    for row in scores:
        order = sorted(range(len(row)), key=lambda j: (-row[j], j))
        out.append([j + 1 for j in order[:k]])
    return out


def random_case(seed, n_users=12, n_slots=9, ties=False, ragged=True):
    """Seeded scores and masks; padding slots hold NaN so any use of them shows up."""
    rng = np.random.default_rng(seed)
    if ties:
        target = rng.integers(0, 4, n_users).astype(np.float64)
        negatives = rng.integers(0, 4, (n_users, n_slots)).astype(np.float64)
    else:
        target = rng.normal(size=n_users)
        negatives = rng.normal(size=(n_users, n_slots))
    if ragged:
        lengths = rng.integers(0, n_slots + 1, n_users)
        lengths[0] = n_slots  # at least one user is fully populated
        lengths[1] = 1
        mask = np.arange(n_slots)[None, :] < lengths[:, None]
        if seed % 2:  # scattered, not only left-aligned, real slots
            mask = mask[:, rng.permutation(n_slots)]
        negatives = np.where(mask, negatives, np.nan)
    else:
        mask = np.ones((n_users, n_slots), dtype=bool)
    return target, negatives, mask


SEEDS = range(6)


# ---------------------------------------------------------------------------- CASES.md


def test_b01_constant_scorer_gets_pessimistic_rank_not_a_free_hit():
    target = np.array([0.5])
    negatives = np.full((1, 100), 0.5)

    ranks = ranks_sampled(target, negatives)
    assert ranks.tolist() == [101]
    assert hit_at_k(ranks, 10).tolist() == [0.0]
    assert ndcg_at_k(ranks, 10).tolist() == [0.0]
    assert mrr(ranks)[0] == pytest.approx(1 / 101)
    assert mrr(ranks)[0] == pytest.approx(0.0099, abs=1e-4)
    assert group_auc(target, negatives) == (0.5, 0)
    assert global_auc(target, negatives) == 0.5

    result = sampled_metrics(target, negatives)
    assert result.metrics["hit@10"] == 0.0
    assert result.metrics["ndcg@10"] == 0.0
    assert result.metrics["auc"] == 0.5
    assert result.metrics["gauc"] == 0.5


def test_b02_ndcg_uses_log2_of_rank_plus_one():
    negatives = np.array([[0.9, 0.7, 0.3, 0.1], [0.9, 0.7, 0.3, 0.1]])
    ranks = ranks_sampled(np.array([0.95, 0.50]), negatives)

    assert ranks.tolist() == [1, 3]
    assert ndcg_at_k(ranks, 10).tolist() == [1.0, 0.5]
    assert mean_over_users(ndcg_at_k(ranks, 10)) == 0.75
    assert mean_over_users(mrr(ranks)) == pytest.approx(0.6667, abs=1e-4)
    assert mean_over_users(hit_at_k(ranks, 1)) == 0.5
    assert mean_over_users(hit_at_k(ranks, 3)) == 1.0


@pytest.mark.parametrize(
    ("n_above", "rank", "hit10", "ndcg10", "reciprocal"),
    [(9, 10, 1.0, 0.28906, 0.1), (10, 11, 0.0, 0.0, 0.09091)],
)
def test_b03_hit_cutoff_is_inclusive_at_k(n_above, rank, hit10, ndcg10, reciprocal):
    negatives = np.array([[0.9] * n_above + [0.1] * (100 - n_above)])
    ranks = ranks_sampled(np.array([0.5]), negatives)

    assert ranks.tolist() == [rank]
    assert hit_at_k(ranks, 10)[0] == hit10
    assert ndcg_at_k(ranks, 10)[0] == pytest.approx(ndcg10, abs=1e-5)
    assert mrr(ranks)[0] == pytest.approx(reciprocal, abs=1e-5)


def test_b05_single_class_user_is_skipped_and_counted():
    # U1: target 0.3, negatives 0.5, 0.1.  U2: target 0.9, no negative (padding slots).
    target = np.array([0.3, 0.9])
    negatives = np.array([[0.5, 0.1], [np.nan, np.nan]])
    mask = np.array([[True, True], [False, False]])

    assert group_auc(target, negatives, mask) == (0.5, 1)

    result = sampled_metrics(target, negatives, mask)
    assert result.metrics["gauc"] == 0.5
    assert result.n_gauc_skipped == 1
    assert result.n_single_candidate == 1
    assert result.n_users == 2
    assert result.n_evaluated == 1
    assert result.is_evaluated.tolist() == [True, False]
    assert not any(math.isnan(v) for v in result.metrics.values())
    # U2 would get rank 1 for free; only U1 (rank 2) enters the ranking metrics and auc.
    assert result.ranks.tolist() == [2, 1]
    assert result.metrics["hit@5"] == 1.0
    assert result.metrics["mrr"] == 0.5
    assert result.metrics["auc"] == 0.5


@pytest.mark.parametrize("item_chunk", [1, 7, 50])
@pytest.mark.parametrize("user_batch", [1, 2, 3])
def test_b20_chunked_topk_matches_closed_form(item_chunk, user_batch):
    largest_block = []

    def score_fn(user_ids, item_ids):
        largest_block.append(len(user_ids) * len(item_ids))
        return ((user_ids[:, None] + 1) * item_ids[None, :] * 37 % 101) / 101

    items, scores = topk_chunked(score_fn, 2, 50, 3, user_batch, item_chunk)

    assert items.tolist() == [[30, 19, 49], [15, 30, 45]]
    assert np.rint(scores * 101).tolist() == [[100, 97, 96], [100, 99, 98]]
    assert max(largest_block) <= user_batch * item_chunk


# ---------------------------------------------------------------------------- vs references


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", SEEDS)
def test_ranks_and_auc_match_loop_reference(seed, ties):
    target, negatives, mask = random_case(seed, ties=ties)

    assert ranks_sampled(target, negatives, mask).tolist() == ref_ranks(target, negatives, mask)
    gauc, skipped = group_auc(target, negatives, mask)
    ref_gauc, ref_skipped = ref_group_auc(target, negatives, mask)
    assert gauc == pytest.approx(ref_gauc, rel=1e-12)
    assert skipped == ref_skipped
    assert global_auc(target, negatives, mask) == pytest.approx(
        ref_global_auc(target, negatives, mask), rel=1e-12
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_unmasked_inputs_match_reference(seed):
    target, negatives, mask = random_case(seed, ties=True, ragged=False)

    assert ranks_sampled(target, negatives).tolist() == ref_ranks(target, negatives, mask)
    assert group_auc(target, negatives)[0] == pytest.approx(
        ref_group_auc(target, negatives, mask)[0]
    )
    assert global_auc(target, negatives) == pytest.approx(ref_global_auc(target, negatives, mask))


@pytest.mark.skipif(stats is None, reason="scipy not installed")
def test_global_auc_matches_scipy_mann_whitney():
    target, negatives, mask = random_case(3, n_users=30, n_slots=20, ties=True)

    u_stat = stats.mannwhitneyu(target, negatives[mask], alternative="two-sided").statistic
    assert global_auc(target, negatives, mask) == pytest.approx(u_stat / (target.size * mask.sum()))


def test_global_auc_pools_other_users_negatives():
    # Each user ranks its target first within its own negatives, but user 1's target is
    # below user 0's negative: the pooled AUC must see that pair, the per-user one must not.
    target = np.array([0.9, 0.2])
    negatives = np.array([[0.5], [0.1]])

    assert group_auc(target, negatives) == (1.0, 0)
    assert global_auc(target, negatives) == 0.75


@pytest.mark.parametrize("seed", SEEDS)
def test_per_user_metrics_match_loop_reference(seed):
    rng = np.random.default_rng(seed)
    ranks = rng.integers(1, 30, size=40)

    for k in (1, 5, 10, 29):
        assert hit_at_k(ranks, k).tolist() == [ref_hit(r, k) for r in ranks]
        assert ndcg_at_k(ranks, k).tolist() == pytest.approx([ref_ndcg(r, k) for r in ranks])
    assert mrr(ranks).tolist() == pytest.approx([1 / r for r in ranks])

    full = full_metrics_from_ranks(ranks)
    assert tuple(full) == FULL_KEYS
    assert full["hit@10"] == pytest.approx(sum(ref_hit(r, 10) for r in ranks) / len(ranks))
    assert full["ndcg@5"] == pytest.approx(sum(ref_ndcg(r, 5) for r in ranks) / len(ranks))
    assert full["mrr"] == pytest.approx(sum(1 / r for r in ranks) / len(ranks))


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", SEEDS)
def test_sampled_metrics_match_reference_on_evaluated_users(seed, ties):
    target, negatives, mask = random_case(seed, ties=ties)
    mask[2] = False  # force one single-candidate user
    evaluated = [u for u in range(len(target)) if mask[u].any()]
    t, n, m = target[evaluated], negatives[evaluated], mask[evaluated]
    ranks = ref_ranks(t, n, m)

    result = sampled_metrics(target, negatives, mask)

    assert tuple(result.metrics) == SAMPLED_KEYS
    assert result.n_single_candidate == result.n_gauc_skipped == len(target) - len(evaluated)
    assert result.ranks.tolist() == ref_ranks(target, negatives, mask)
    assert result.metrics["auc"] == pytest.approx(ref_global_auc(t, n, m))
    assert result.metrics["gauc"] == pytest.approx(ref_group_auc(target, negatives, mask)[0])
    for k in (5, 10):
        assert result.metrics[f"hit@{k}"] == pytest.approx(np.mean([ref_hit(r, k) for r in ranks]))
        assert result.metrics[f"ndcg@{k}"] == pytest.approx(
            np.mean([ref_ndcg(r, k) for r in ranks])
        )
    assert result.metrics["mrr"] == pytest.approx(np.mean([1 / r for r in ranks]))


def test_padding_values_do_not_change_results():
    target, negatives, mask = random_case(5, ties=True)
    refilled = np.where(mask, negatives, 1e9)

    a = sampled_metrics(target, negatives, mask)
    b = sampled_metrics(target, refilled, mask)
    assert a.metrics == b.metrics
    assert a.ranks.tolist() == b.ranks.tolist()


def chunked_full_ranks(scores, target_items, history, item_chunk, as_torch=False):
    """Ranks from count_at_least over item chunks; scores (U, n_items + 1), column 0 = pad."""
    scores = scores.copy()
    for u, seen in enumerate(history):
        scores[u, list(seen) + [0]] = -np.inf
    target = scores[np.arange(len(scores)), target_items]
    totals = np.zeros(len(scores), dtype=np.int64)
    for start in range(0, scores.shape[1], item_chunk):
        chunk = scores[:, start : start + item_chunk]
        if as_torch:
            totals += count_at_least(torch.from_numpy(chunk), torch.from_numpy(target)).numpy()
        else:
            totals += count_at_least(chunk, target)
    return totals  # the target lies in one chunk and counts itself once


@pytest.mark.parametrize("as_torch", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_count_at_least_gives_loop_reference_full_ranks(seed, as_torch):
    rng = np.random.default_rng(seed)
    n_users, n_items = 7, 23
    scores = rng.integers(0, 5, (n_users, n_items + 1)).astype(np.float64)
    target_items = rng.integers(1, n_items + 1, n_users)
    history = [
        {int(i) for i in rng.choice(np.arange(1, n_items + 1), 4) if i != target_items[u]}
        for u in range(n_users)
    ]

    expected = []
    for u in range(n_users):
        rank = 1
        for item in range(1, n_items + 1):
            if item in history[u] or item == target_items[u]:
                continue
            if scores[u, item] >= scores[u, target_items[u]]:
                rank += 1
        expected.append(rank)

    for item_chunk in (1, 5, 24):
        got = chunked_full_ranks(scores, target_items, history, item_chunk, as_torch)
        assert got.tolist() == expected


def test_count_at_least_keeps_torch_on_its_device_type():
    counts = count_at_least(torch.tensor([[1.0, 2.0, -math.inf]]), torch.tensor([1.0]))
    assert isinstance(counts, torch.Tensor)
    assert counts.dtype == torch.int64
    assert counts.tolist() == [2]


@pytest.mark.parametrize("seed", range(4))
def test_topk_chunked_matches_full_sort_with_ties(seed):
    rng = np.random.default_rng(seed)
    n_users, n_items = 9, 31
    table = rng.integers(0, 6, (n_users, n_items + 1)).astype(np.float64)
    table[:, 3] = -np.inf  # an excluded item

    def score_fn(user_ids, item_ids):
        return table[np.ix_(user_ids, item_ids)]

    expected = ref_topk(table[:, 1:].tolist(), 5)
    for user_batch, item_chunk in ((1, 1), (4, 6), (9, 31), (2, 100)):
        items, scores = topk_chunked(score_fn, n_users, n_items, 5, user_batch, item_chunk)
        assert items.tolist() == expected
        assert scores.tolist() == np.take_along_axis(table, items, axis=1).tolist()


def test_topk_chunked_reaches_excluded_items_only_last():
    def score_fn(user_ids, item_ids):
        scores = np.full((len(user_ids), len(item_ids)), -np.inf)
        scores[:, item_ids == 2] = 0.0
        return scores

    items, _ = topk_chunked(score_fn, 1, 4, 3, 1, 2)
    assert items.tolist() == [[2, 1, 3]]


# ---------------------------------------------------------------------------- bad input


def test_nan_target_is_named():
    with pytest.raises(ValueError, match="target_scores contains NaN"):
        ranks_sampled(np.array([np.nan, 0.1]), np.zeros((2, 3)))


@pytest.mark.parametrize("fn", [ranks_sampled, global_auc, group_auc, sampled_metrics])
def test_nan_in_a_real_negative_is_named(fn):
    negatives = np.array([[0.1, np.nan], [0.2, 0.3]])
    with pytest.raises(ValueError, match=r"negative_scores contains NaN .*\(0, 1\)"):
        fn(np.array([0.5, 0.5]), negatives)
    # The same NaN in a padding slot is ignored.
    fn(np.array([0.5, 0.5]), negatives, np.array([[True, False], [True, True]]))


def test_shape_mismatch_names_both_arrays_and_shapes():
    with pytest.raises(
        ValueError, match=r"target_scores shape \(3,\).*negative_scores shape \(2, 4\)"
    ):
        ranks_sampled(np.zeros(3), np.zeros((2, 4)))
    with pytest.raises(
        ValueError, match=r"negative_scores must have shape \(U, N\); got shape \(4,\)"
    ):
        sampled_metrics(np.zeros(4), np.zeros(4))
    with pytest.raises(
        ValueError, match=r"negative_mask shape \(2, 3\).*negative_scores shape \(2, 4\)"
    ):
        group_auc(np.zeros(2), np.zeros((2, 4)), np.ones((2, 3), dtype=bool))
    with pytest.raises(ValueError, match=r"scores shape \(2, 4\).*target_scores shape \(3,\)"):
        count_at_least(np.zeros((2, 4)), np.zeros(3))


def test_non_bool_mask_is_refused():
    with pytest.raises(ValueError, match="negative_mask must be a boolean array.*int64"):
        ranks_sampled(np.zeros(2), np.zeros((2, 2)), np.ones((2, 2), dtype=np.int64))


@pytest.mark.parametrize("k", [0, -1, 1.5, True, None])
def test_bad_k_is_refused(k):
    with pytest.raises(ValueError, match=r"k must be an integer >= 1; got"):
        hit_at_k(np.array([1, 2]), k)
    with pytest.raises(ValueError, match=r"k must be an integer >= 1; got"):
        ndcg_at_k(np.array([1, 2]), k)
    with pytest.raises(ValueError, match=r"k must be an integer >= 1; got"):
        topk_chunked(lambda u, i: np.zeros((len(u), len(i))), 1, 5, k, 1, 1)


def test_bad_ranks_are_refused():
    with pytest.raises(ValueError, match="ranks are 1-based and must all be >= 1; got 0"):
        mrr(np.array([1, 0]))
    with pytest.raises(ValueError, match=r"ranks must have shape \(U,\); got shape \(1, 2\)"):
        hit_at_k(np.array([[1, 2]]), 1)
    with pytest.raises(ValueError, match="at least one user"):
        full_metrics_from_ranks(np.array([], dtype=np.int64))
    with pytest.raises(ValueError, match="non-empty"):
        mean_over_users(np.array([]))


def test_nothing_to_evaluate_is_an_error_not_nan():
    mask = np.zeros((2, 3), dtype=bool)
    with pytest.raises(ValueError, match="all 2 user"):
        group_auc(np.zeros(2), np.zeros((2, 3)), mask)
    with pytest.raises(ValueError, match="all 2 user"):
        sampled_metrics(np.zeros(2), np.zeros((2, 3)), mask)
    with pytest.raises(ValueError, match="0 real negative"):
        global_auc(np.zeros(2), np.zeros((2, 3)), mask)


def test_count_at_least_bad_input():
    with pytest.raises(TypeError, match="must both be torch tensors or both numpy arrays"):
        count_at_least(torch.zeros((1, 2)), np.zeros(1))
    with pytest.raises(ValueError, match="-inf"):
        count_at_least(np.zeros((1, 2)), np.array([-np.inf]))
    with pytest.raises(ValueError, match="scores contains NaN"):
        count_at_least(np.array([[np.nan, 0.0]]), np.array([0.0]))


def test_topk_chunked_bad_input():
    with pytest.raises(ValueError, match="k must be at most n_items=4; got 5"):
        topk_chunked(lambda u, i: np.zeros((len(u), len(i))), 1, 4, 5, 1, 1)
    with pytest.raises(ValueError, match="item_chunk must be an integer >= 1; got 0"):
        topk_chunked(lambda u, i: np.zeros((len(u), len(i))), 1, 4, 2, 1, 0)
    with pytest.raises(ValueError, match=r"score_fn must return shape .*\(1, 2\); got \(2, 1\)"):
        topk_chunked(lambda u, i: np.zeros((len(i), len(u))), 1, 4, 2, 1, 2)
    with pytest.raises(ValueError, match="score_fn output contains NaN"):
        topk_chunked(lambda u, i: np.full((len(u), len(i)), np.nan), 1, 4, 2, 1, 2)

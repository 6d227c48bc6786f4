"""Layers shared by the sequential models.

Shape legend used throughout ``mrif.models``:
    B batch, L history length, D width, H heads, C candidates per user,
    K aggregation levels, W window size (2w + 1), R truncation variants.

Histories are **left-padded** with ``PAD_ID`` so that the newest item sits at index ``L - 1``
for every user (CASES.md B10): the user state is always read at the last index.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mrif import PAD_ID
from mrif.config import ModelConfig

MASK_FILL = -1e9
"""Finite fill for masked attention logits: an all-masked row gives uniform weights, not NaN
(CASES.md B16)."""


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout: zero each element with probability ``p``, scale the rest by
    ``1 / (1 - p)``; the identity when not training.

    On the CPU the keep mask comes from one float32 ``torch.rand`` draw per element:
    ``F.dropout`` draws it there with ``bernoulli_``, which made up a quarter of a SASRec
    training step and costs about 2.5 times as much (``benchmarks/bench_kernels.py``,
    ``benchmarks/RESULTS.md``). Elsewhere ``F.dropout`` is a fused kernel and is used as is.

    Raises:
        ValueError: ``p`` is outside [0, 1).
    """
    _check_drop_probability(p)
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    keep = torch.rand(x.shape, dtype=torch.float32, device=x.device) >= p
    return x * keep.to(x.dtype).mul_(1.0 / (1.0 - p))


def _check_drop_probability(p: float) -> None:
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1); got {p!r}")


class Dropout(nn.Module):
    """``nn.Dropout`` drawn through :func:`dropout`; every model here uses it."""

    def __init__(self, p: float) -> None:
        super().__init__()
        _check_drop_probability(p)
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, dropout_p: float
) -> torch.Tensor:
    """Scaled dot-product attention with :func:`dropout` on the attention weights.

    ``mask`` is boolean (True where a query may attend) or a float added to the logits, as in
    ``F.scaled_dot_product_attention``; that fused kernel does the work without dropout, and
    with dropout off the CPU.

    Args:
        q, k, v: (B, H, L, D/H).
        mask: broadcastable to (B, H, L, L); no query row may be all False.
        dropout_p: probability of dropping an attention weight (0 when not training).

    Returns:
        (B, H, L, D/H).
    """
    if dropout_p == 0.0 or q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    logits = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    if mask.dtype == torch.bool:
        logits = logits.masked_fill(~mask, max(MASK_FILL, torch.finfo(logits.dtype).min))
    else:
        logits = logits + mask.to(logits.dtype)
    return dropout(torch.softmax(logits, dim=-1), dropout_p, True) @ v


def forward_positions(item_seq: torch.Tensor) -> torch.Tensor:
    """Position ids counted from the oldest item in the window: 1, 2, ... and 0 on padding.

    Counting from the oldest item (not from a fixed slot of the padded array) makes the
    representation of a prefix independent of what follows it, so training on all steps of a
    sequence in one pass gives exactly the numbers of scoring each prefix alone (rule 22), and
    trimming shared left padding changes nothing.

    Args:
        item_seq: (B, L) left-padded item ids.

    Returns:
        (B, L) position ids.
    """
    is_item = item_seq != PAD_ID
    return torch.cumsum(is_item, dim=1) * is_item


def backward_positions(item_seq: torch.Tensor) -> torch.Tensor:
    """Position ids counted from the newest item of each row: ..., 2, 1, and 0 on padding.

    These are the array slots of a left-padded row read from the right. A training step then
    knows how many items of the row follow it, which scoring its prefix alone cannot know, so
    this breaks rule 22; see ``ModelConfig.positions``.

    Args:
        item_seq: (B, L) left-padded item ids.

    Returns:
        (B, L) position ids.
    """
    is_item = item_seq != PAD_ID
    return is_item.flip(1).cumsum(dim=1).flip(1) * is_item


def causal_attention_mask(item_seq: torch.Tensor) -> torch.Tensor:
    """Boolean mask, True where query step t may attend to key step s.

    A real query attends to real keys at steps s <= t only (no look-ahead, no padding). A
    padding query attends to itself so that its softmax row is never empty; its output is
    discarded.

    Args:
        item_seq: (B, L) left-padded item ids.

    Returns:
        (B, 1, L, L) mask broadcastable over heads.
    """
    seq_len = item_seq.shape[1]
    is_item = item_seq != PAD_ID
    causal = torch.ones(seq_len, seq_len, dtype=torch.bool, device=item_seq.device).tril()
    can_attend = causal & is_item[:, None, :]  # (B, L, L)
    can_attend = can_attend | torch.eye(seq_len, dtype=torch.bool, device=item_seq.device)
    return can_attend[:, None]


class TransformerBlock(nn.Module):
    """One transformer layer: post-norm as in MRIF paper eq. (5)-(6), or pre-norm.

    Post-norm: ``SA(X) = LN(Dropout(MultiHead(X)) + X)`` then ``LN(Dropout(FFN(SA)) + SA)``.
    Pre-norm (SASRec paper, section III-B): ``X + Dropout(MultiHead(LN(X)))`` then the same
    for the FFN. The feed-forward network has two layers of inner width ``ffn_mult * D``
    (ReLU or GELU).

    Note:
        Attention scores are scaled by sqrt(D / H) per head, as in Vaswani et al.; the paper's
        eq. (3) writes sqrt(d), which is the same for one head.
    """

    def __init__(
        self,
        dim: int,
        n_heads: int,
        dropout: float,
        ffn_mult: int = 1,
        activation: str = "relu",
        pre_norm: bool = False,
        max_distance: int = 0,
    ) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.pre_norm = pre_norm
        # One learned logit bias per head and key-to-query distance 0..max_distance - 1;
        # starts at zero, so a fresh layer attends as one without it.
        self.distance_bias = (
            nn.Parameter(torch.zeros(n_heads, max_distance)) if max_distance else None
        )
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attn_out = nn.Linear(dim, dim)
        self.attn_norm = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_mult * dim),
            nn.GELU() if activation == "gelu" else nn.ReLU(),
            nn.Linear(ffn_mult * dim, dim),
        )
        self.ffn_norm = nn.LayerNorm(dim)
        self.drop = Dropout(dropout)

    def forward(self, x: torch.Tensor, can_attend: torch.Tensor) -> torch.Tensor:
        """x: (B, L, D); can_attend: (B, 1, L, L) bool. Returns (B, L, D)."""
        if self.pre_norm:
            x = x + self.drop(self._attend(self.attn_norm(x), can_attend))
            return x + self.drop(self.ffn(self.ffn_norm(x)))
        x = self.attn_norm(x + self.drop(self._attend(x, can_attend)))
        return self.ffn_norm(x + self.drop(self.ffn(x)))

    def _attend(self, x: torch.Tensor, can_attend: torch.Tensor) -> torch.Tensor:
        """Multi-head causal self-attention with its output projection; (B, L, D)."""
        batch, seq_len, dim = x.shape
        q, k, v = self.qkv(x).split(dim, dim=-1)
        q, k, v = (
            t.view(batch, seq_len, self.n_heads, dim // self.n_heads).transpose(1, 2)
            for t in (q, k, v)
        )  # (B, H, L, D/H)
        attended = attention(
            q, k, v, self._logit_mask(can_attend), self.dropout if self.training else 0.0
        )
        attended = attended.transpose(1, 2).reshape(batch, seq_len, dim)  # (B, L, D)
        return self.attn_out(attended)

    def _logit_mask(self, can_attend: torch.Tensor) -> torch.Tensor:
        """The boolean mask itself, or with a distance bias, a float mask: the bias where
        attending is allowed, ``MASK_FILL`` elsewhere. (B, 1 or H, L, L)."""
        if self.distance_bias is None:
            return can_attend
        seq_len = can_attend.shape[-1]
        steps = torch.arange(seq_len, device=can_attend.device)
        distance = (steps[:, None] - steps[None, :]).clamp(0, self.distance_bias.shape[1] - 1)
        bias = self.distance_bias[:, distance]  # (H, L, L); only key <= query is ever used
        return bias.masked_fill(~can_attend, MASK_FILL)


INIT_STD = 0.02
"""Embeddings and linear weights start from N(0, 0.02^2), biases at zero (the BERT/SASRec
convention); on Beauty this converges faster and higher than PyTorch's defaults."""


def init_weights(module: nn.Module) -> None:
    """N(0, INIT_STD^2) for linear and embedding weights; zero linear biases."""
    if isinstance(module, nn.Linear | nn.Embedding):
        nn.init.normal_(module.weight, std=INIT_STD)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


class SequenceEncoder(nn.Module):
    """Item + position embedding followed by causal transformer layers (paper section 2.1).

    This is SASRec's encoder and MRIF's interest extractor; the two share its weights so that
    MRIF can start from a pre-trained extractor (rule 19).

    Args:
        n_items: number of real items; the embedding table has ``n_items + 1`` rows, row 0 is
            padding and stays zero.
        config: width, heads, layers, dropout, ``max_len``, feed-forward width and activation.
    """

    def __init__(self, n_items: int, config: ModelConfig) -> None:
        super().__init__()
        dim = config.dim
        self.max_len = config.max_len
        self.positions = backward_positions if config.positions == "backward" else forward_positions
        self.item_embedding = nn.Embedding(n_items + 1, dim, padding_idx=PAD_ID)
        self.position_embedding = nn.Embedding(config.max_len + 1, dim, padding_idx=0)
        self.embedding_dropout = Dropout(config.dropout)
        self.embedding_norm = nn.LayerNorm(dim) if config.embedding_norm else nn.Identity()
        self.layers = nn.ModuleList(
            TransformerBlock(
                dim,
                config.n_heads,
                config.dropout,
                config.ffn_mult,
                config.activation,
                pre_norm=config.norm == "pre",
                max_distance=config.max_len if config.distance_bias else 0,
            )  # fmt: skip
            for _ in range(config.n_layers)
        )
        self.output_norm = nn.LayerNorm(dim) if config.norm == "pre" else nn.Identity()
        self.apply(init_weights)
        with torch.no_grad():
            self.item_embedding.weight[PAD_ID].zero_()
            self.position_embedding.weight[0].zero_()

    def forward(self, item_seq: torch.Tensor) -> torch.Tensor:
        """item_seq: (B, L) left-padded ids, L <= max_len. Returns (B, L, D), zero on padding."""
        if item_seq.shape[1] > self.max_len:
            raise ValueError(
                f"history length must be at most max_len={self.max_len}; got {item_seq.shape[1]}"
            )
        is_item = (item_seq != PAD_ID).unsqueeze(-1)  # (B, L, 1)

        x = self.item_embedding(item_seq) + self.position_embedding(self.positions(item_seq))
        x = self.embedding_dropout(self.embedding_norm(x)) * is_item

        can_attend = causal_attention_mask(item_seq)
        for layer in self.layers:
            x = layer(x, can_attend) * is_item
        return self.output_norm(x) * is_item


def score_steps(states: torch.Tensor, target_emb: torch.Tensor) -> torch.Tensor:
    """Dot product of each step's state with its target embeddings.

    Args:
        states: (B, L, D) one state per step.
        target_emb: (B, L, D) one target per step, or (B, L, T, D) several.

    Returns:
        (B, L) or (B, L, T) scores.
    """
    if target_emb.dim() == 4:
        states = states.unsqueeze(2)  # (B, L, 1, D)
    return (states * target_emb).sum(-1)


def score_candidates(user_state: torch.Tensor, cand_emb: torch.Tensor) -> torch.Tensor:
    """Dot product of one state per user with per-user (B, C, D) or shared (C, D) candidates.

    Returns:
        (B, C) scores.
    """
    if cand_emb.dim() == 2:
        return user_state @ cand_emb.T
    return torch.einsum("bd,bcd->bc", user_state, cand_emb)

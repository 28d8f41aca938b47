"""Independent PyTorch CoFInAl / GDLT (models/model.py ``cofinal``, ``GDLTETH2``, GDLT) and its
loss (models/loss.py ``LossFun`` with ``HardTripletLoss(hardest=True)``), a test oracle and the
PyTorch side of benchmarks/cofinal_step.py.

Written from reading ZhouKanglei/CoFInAl_AQA and xuangch/CVPR22_GDLT (no code copied), with
PyTorch's own ``nn.TransformerEncoderLayer``/``DecoderLayer`` (post-norm, ReLU; the repos'
``models/transformer.py`` is a copy of them) and ``nn.MultiheadAttention``. Options:

* ``fgs_batch_first``: False is the release (the FGS attention reads (B, 4, H) as (L, N, E)
  and mixes the batch); True attends over each video's 4 queries (our default).
* the FGS head is ``Linear(4H→H) → Linear(H→100)`` (the release's ``4H→256`` only runs at
  H = 256, where the two agree).

:func:`load_flax` copies an ``aqa_jax.methods.cofinal`` network's variables into the model.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

PRESETS = {
    0: ([0, 1 / 3, 2 / 3, 1], [1, 2 / 3, 1 / 3, 0]),
    1: ([0.25, 0.5, 0.75, 1], [1, 0.75, 0.5, 0.25]),
    2: ([0.1, 0.2, 0.8, 1], [1, 1, -1, -1]),
    3: ([-1, -0.8, 0.8, 1], [1, 0.8, -0.8, -1]),
}


def official_etf(k: int = 100) -> torch.Tensor:
    """``eth(k, k)`` after ``np.random.seed(0)``."""
    np.random.seed(0)
    u = torch.tensor(np.linalg.qr(np.random.random(size=(k, k)))[0]).float()
    return torch.mul(u @ (torch.eye(k) - torch.ones(k, k) / k), math.sqrt(k / (k - 1)))


class TorchCoFInAl(nn.Module):
    def __init__(self, in_dim=1024, hidden_dim=256, n_head=1, n_encoder=1, n_decoder=2,
                 n_query=4, dropout=0.3, preset=2, revert=True, etf=True, fgs_batch_first=True):
        super().__init__()
        self.in_proj = nn.Sequential(
            nn.Conv1d(in_dim, in_dim // 2, 1), nn.BatchNorm1d(in_dim // 2), nn.ReLU(),
            nn.Conv1d(in_dim // 2, hidden_dim, 1), nn.BatchNorm1d(hidden_dim))
        enc = nn.TransformerEncoderLayer(hidden_dim, n_head, 3 * hidden_dim, dropout, batch_first=True)
        dec = nn.TransformerDecoderLayer(hidden_dim, n_head, 3 * hidden_dim, dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(enc, n_encoder, norm=nn.LayerNorm(hidden_dim),
                                             enable_nested_tensor=False)
        self.decoder = nn.TransformerDecoder(dec, n_decoder, norm=nn.LayerNorm(hidden_dim))
        for p in list(self.encoder.parameters()) + list(self.decoder.parameters()):
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        self.prototype = nn.Embedding(n_query, hidden_dim)
        self.regressor = nn.Linear(hidden_dim, n_query)
        w, w_rev = PRESETS[preset] if n_query == 4 else (None, None)
        if preset == 0:
            w = torch.linspace(0, 1, n_query)
            w_rev = w.flip(-1)
        self.register_buffer("weight", torch.as_tensor(w, dtype=torch.float32))
        self.revert = revert
        if revert:
            self.regressor_revert = nn.Linear(hidden_dim, n_query)
            self.register_buffer("weight_revert", torch.as_tensor(w_rev, dtype=torch.float32))
        self.etf = etf
        if etf:
            self.regi = nn.MultiheadAttention(hidden_dim, 4, dropout=dropout, batch_first=fgs_batch_first)
            self.regressori = nn.Sequential(nn.Flatten(), nn.Linear(n_query * hidden_dim, hidden_dim),
                                            nn.Linear(hidden_dim, 100))
            self.register_buffer("etf_vec1", official_etf(100))

    @staticmethod
    def likert(s, weight):
        s = torch.diagonal(s, dim1=-2, dim2=-1)
        p = torch.sigmoid(s)
        p = p / p.sum(1, keepdim=True)
        return (weight[None] * p).sum(1)

    def forward(self, x):
        b = x.shape[0]
        x = self.in_proj(x.transpose(1, 2)).transpose(1, 2)
        q = self.prototype.weight.unsqueeze(0).repeat(b, 1, 1)
        q1 = self.decoder(q, self.encoder(x))
        out = {"int": self.likert(self.regressor(q1), self.weight), "dec": []}
        if self.revert:
            out["int_revert"] = self.likert(self.regressor_revert(q1), self.weight_revert)
        if self.etf:
            d = self.regressori(self.regi(q1, q1, q1)[0])
            out["dec"].append(d / torch.norm(d, p=2, dim=1, keepdim=True))
        return {"output": out, "embed": q1}

    def targets(self, y):
        """``get_proj_class``: [g1, 1 - g1, E[:, g2]ᵀ] (the revert entry only with revert)."""
        n = (y * 10000).long()
        g1 = n // 100 / 100
        g2 = n - n // 100 * 100
        out = [g1] + ([1 - g1] if self.revert else [])
        return out + [self.etf_vec1[:, g2].t()]

    def score(self, out):
        """``get_score`` per video (the release's argmax is over the flattened batch)."""
        o = out["output"]
        coarse = (o["int"] + 1 - o["int_revert"]) / 2 if self.revert else o["int"]
        return coarse + torch.argmax(o["dec"][0] @ self.etf_vec1, dim=1) / 10000


def hardest_triplet(emb, labels, margin=1.0):
    """``HardTripletLoss(margin, hardest=True)`` with the released cosine distance."""
    n = F.normalize(emb, dim=-1)
    d = 1 - n @ n.T
    same = labels[None] == labels[:, None]
    pos = (~torch.eye(len(labels), dtype=torch.bool)) & same
    hp = (d * pos.float()).max(1, keepdim=True)[0]
    far = d.max(1, keepdim=True)[0]
    hn = (d + far * same.float()).min(1, keepdim=True)[0]
    return F.relu(hp - hn + margin).mean()


def align_labels(kind, n, b):
    if kind == 0:
        return torch.arange(n).repeat(b)
    if kind == 1:
        return (torch.arange(-n // 2, n // 2, 1) / (n // 2)).repeat(b)
    n = n * b
    return torch.arange(-n // 2, n // 2, 1) / (n // 2)


def loss(model, out, y, alpha=1.0, margin=1.0, loss_align=1):
    """``LossFun(alpha, margin, etf_head=True, loss_align)`` (GDLT: MSE on y, no ETF)."""
    o = out["output"]
    if not model.etf:
        total = F.mse_loss(o["int"], y)
    else:
        t = model.targets(y)
        total = F.mse_loss(o["int"], t[0])
        if model.revert:
            total = total + F.mse_loss(o["int_revert"], t[1])
        total = total + F.l1_loss(o["dec"][0], t[-1])
    emb = out["embed"]
    b, n, c = emb.shape
    return total + alpha * hardest_triplet(emb.reshape(-1, c), align_labels(loss_align, n, b), margin)


def _t(a, transpose=False):
    a = torch.from_numpy(np.array(a, np.float32))  # a writable copy (jax arrays are read-only)
    return a.T.contiguous() if transpose else a


def _mha(m: nn.MultiheadAttention, p):
    m.in_proj_weight.data = _t(p["in_kernel"], True)
    m.in_proj_bias.data = _t(p["in_bias"])
    m.out_proj.weight.data = _t(p["out"]["kernel"], True)
    m.out_proj.bias.data = _t(p["out"]["bias"])


def _linear(m, p):
    m.weight.data = _t(p["kernel"], True).reshape(m.weight.shape)
    m.bias.data = _t(p["bias"])


def _norm(m, p, stats=None):
    m.weight.data, m.bias.data = _t(p["scale"]), _t(p["bias"])
    if stats is not None:
        m.running_mean.data, m.running_var.data = _t(stats["mean"]), _t(stats["var"])


def _ffn(layer, p):
    _linear(layer.linear1, p["linear1"])
    _linear(layer.linear2, p["linear2"])


def load_flax(model: TorchCoFInAl, variables) -> TorchCoFInAl:
    """Copies the variables of ``aqa_jax.methods.cofinal.CoFInAlNetwork`` into ``model``."""
    p, s = variables["params"]["head"], variables["batch_stats"]["head"]
    _linear(model.in_proj[0], p["conv0"])
    _norm(model.in_proj[1], p["bn0"], s["bn0"])
    _linear(model.in_proj[3], p["conv1"])
    _norm(model.in_proj[4], p["bn1"], s["bn1"])
    for i, layer in enumerate(model.encoder.layers):
        q = p[f"encoder_{i}"]
        _mha(layer.self_attn, q["self_attn"])
        _ffn(layer, q["ffn"])
        _norm(layer.norm1, q["norm1"])
        _norm(layer.norm2, q["norm2"])
    _norm(model.encoder.norm, p["encoder_norm"])
    for i, layer in enumerate(model.decoder.layers):
        q = p[f"decoder_{i}"]
        _mha(layer.self_attn, q["self_attn"])
        _mha(layer.multihead_attn, q["cross_attn"])
        _ffn(layer, q["ffn"])
        for k in (1, 2, 3):
            _norm(getattr(layer, f"norm{k}"), q[f"norm{k}"])
    _norm(model.decoder.norm, p["decoder_norm"])
    model.prototype.weight.data = _t(p["prototypes"])
    _linear(model.regressor, p["regressor"])
    if model.revert:
        _linear(model.regressor_revert, p["regressor_revert"])
    if model.etf:
        _mha(model.regi, p["fgs"]["attn"])
        _linear(model.regressori[1], p["fgs_fc0"])
        _linear(model.regressori[2], p["fgs_fc1"])
    return model

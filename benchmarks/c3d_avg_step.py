"""C3D-AVG-MTL training step: aqa_jax (JAX, jitted) vs the same model in PyTorch, on this CPU.

    python benchmarks/c3d_avg_step.py                 # batch 1, 6 clips of 16x112x112, 3 steps
    python benchmarks/c3d_avg_step.py --batch 3 --steps 5 --size 112

Both sides build the official model (``train_test_C3DAVG.py``): the C3D up to pool5 on six
16-frame clips, the average, fc6 (8192→4096), the score regressor, the five dive classifiers
and the 2-layer GRU S2VT captioner (hidden 512, embedding 512, MTL-AQA's vocabulary of 5781,
captions of 100 tokens) over the clip sequence; loss MSE + L1 + 5 CE + 0.01 x masked NLL; one
Adam step (lr 1e-4) on every parameter. The PyTorch model is written here from the official
code (C3D from its layer table, nn.GRU, nn.Embedding). Timings are medians over ``--steps``
steps after one warm-up step (which includes JAX's compilation), measured side by side in one
process; both use every core of the machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

VOCAB, MAX_LEN, CLIPS = 5781, 100, 6
CLASSES = {"position": 3, "armstand": 2, "rotation_type": 4, "ss_no": 10, "tw_no": 8}


def make_batch(batch: int, size: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    caption = np.zeros((batch, MAX_LEN), np.int32)
    caption[:, 0] = 1
    caption[:, 1:60] = rng.integers(2, VOCAB, (batch, 59))
    mask = np.zeros((batch, MAX_LEN), np.float32)
    mask[:, :61] = 1.0
    out = {"clip": rng.normal(size=(batch, CLIPS, 16, size, size, 3)).astype(np.float32),
           "score": rng.uniform(20, 100, batch).astype(np.float32), "caption": caption, "caption_mask": mask}
    out.update({f: rng.integers(0, n, batch) for f, n in CLASSES.items()})
    return out


def time_steps(step, steps: int) -> tuple[float, float]:
    """(first step seconds, median of the next ``steps``)."""
    t0 = time.perf_counter()
    step()
    first = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times)


def jax_step(batch: dict[str, np.ndarray]):
    import jax
    import optax

    from pathlib import Path

    from aqa_jax.config_args import load_config
    from aqa_jax.methods.c3d_avg import Method

    config = load_config(f"{Path(__file__).resolve().parents[1]}/configs/c3d_avg.py:tasks=all,pretrained=none")
    config.mtl.vocab_size = VOCAB
    method = Method(config)
    net = method.build_model()
    variables = net.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, batch, train=True)
    params = variables["params"]
    tx = optax.adam(1e-4)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, batch, key):
        def loss_fn(p):
            out = net.apply({"params": p}, batch, train=True, rngs={"dropout": key})
            return method.loss(out, batch)[0]

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    state = {"params": params, "opt": opt_state, "i": 0}
    device_batch = jax.device_put(batch)

    def run():
        state["params"], state["opt"], loss = step(state["params"], state["opt"], device_batch,
                                                   jax.random.key(state["i"]))
        state["i"] += 1
        loss.block_until_ready()

    count = sum(x.size for x in jax.tree.leaves(params))
    return run, count


def torch_step(batch: dict[str, np.ndarray]):
    import torch
    from torch import nn

    from aqa_jax.models.c3d import C3D_LAYERS, C3D_POOLS

    class C3DAltered(nn.Module):  # MTL-AQA models/C3DAVG/C3D_altered.py
        def __init__(self):
            super().__init__()
            self.convs = nn.ModuleDict({n: nn.Conv3d(i, o, 3, padding=1) for n, i, o in C3D_LAYERS})
            self.pools = {n: nn.MaxPool3d(w, w, p) for n, (w, p) in C3D_POOLS.items()}

        def forward(self, x):
            for name, conv in self.convs.items():
                x = torch.relu(conv(x))
                if name in self.pools:
                    x = self.pools[name](x)
            return x.flatten(1)

    class S2VT(nn.Module):  # MTL-AQA models/C3DAVG/S2VTModel.py (training branch)
        def __init__(self, dim_vid):
            super().__init__()
            self.rnn1 = nn.GRU(dim_vid, 512, 2, batch_first=True, dropout=0.5)
            self.rnn2 = nn.GRU(512 + 512, 512, 2, batch_first=True, dropout=0.5)
            self.embedding, self.out = nn.Embedding(VOCAB, 512), nn.Linear(512, VOCAB)

        def forward(self, feats, target):
            b, n, _ = feats.shape
            o1, s1 = self.rnn1(feats)
            _, s2 = self.rnn2(torch.cat((o1, feats.new_zeros(b, n, 512)), 2))
            pad = feats.new_zeros(b, 1, feats.shape[2])
            probs = []
            for i in range(MAX_LEN - 1):
                o1, s1 = self.rnn1(pad, s1)
                o2, s2 = self.rnn2(torch.cat((o1, self.embedding(target[:, i]).unsqueeze(1)), 2), s2)
                probs.append(torch.log_softmax(self.out(o2.squeeze(1)), 1).unsqueeze(1))
            return torch.cat(probs, 1)

    c3d = C3DAltered()
    with torch.no_grad():  # pool5 size: 8192 at 112 px
        dim = c3d(torch.zeros(1, 3, 16, batch["clip"].shape[3], batch["clip"].shape[4])).shape[1]
    fc6, score = nn.Linear(dim, 4096), nn.Linear(4096, 1)
    heads = nn.ModuleDict({f: nn.Linear(4096, n) for f, n in CLASSES.items()})
    caption = S2VT(dim)
    modules = nn.ModuleList([c3d, fc6, score, heads, caption]).train()
    opt = torch.optim.Adam(modules.parameters(), lr=1e-4)
    video = torch.from_numpy(batch["clip"]).permute(0, 1, 5, 2, 3, 4).contiguous()  # B, n, C, T, H, W
    target = torch.from_numpy(batch["score"]) / 17.0
    labels = {f: torch.from_numpy(batch[f]).long() for f in CLASSES}
    caps = torch.from_numpy(batch["caption"]).long()
    mask = torch.from_numpy(batch["caption_mask"])

    def run():
        b = video.shape[0]
        feats = torch.stack([c3d(video[:, i]) for i in range(CLIPS)], 1)
        h = torch.relu(fc6(feats.mean(1)))
        pred = score(h)[:, 0]
        loss = nn.functional.mse_loss(pred, target) + nn.functional.l1_loss(pred, target)
        loss = loss + sum(nn.functional.cross_entropy(heads[f](h), labels[f]) for f in CLASSES)
        logp = caption(feats, caps)
        nll = -logp.gather(2, caps[:, 1:, None])[..., 0]
        loss = loss + 0.01 * (nll * mask[:, 1:]).sum() / b
        opt.zero_grad()
        loss.backward()
        opt.step()

    count = sum(p.numel() for p in modules.parameters())
    return run, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    import torch

    batch = make_batch(args.batch, args.size)
    rows = []
    for name, make in (("aqa_jax (jit)", jax_step), (f"PyTorch {torch.__version__} (eager)", torch_step)):
        run, count = make(batch)
        first, median = time_steps(run, args.steps)
        rows.append((name, count, first, median))
    print(f"\nC3D-AVG-MTL train step, batch {args.batch} x {CLIPS} clips of 16x{args.size}x{args.size}, "
          f"captions of {MAX_LEN} tokens, vocabulary {VOCAB}; median of {args.steps} steps")
    print(f"{'implementation':<28}{'params':>12}{'first step (s)':>16}{'step (s)':>10}{'clips/s':>9}")
    for name, count, first, median in rows:
        print(f"{name:<28}{count:>12,}{first:>16.2f}{median:>10.2f}{args.batch * CLIPS / median:>9.2f}")
    print(f"speed-up (PyTorch step / JAX step): {rows[1][3] / rows[0][3]:.2f}x")


if __name__ == "__main__":
    main()

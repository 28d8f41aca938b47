"""benchmarks/pretrain_e2e.py and its official side (benchmarks/pecop_official.py).

The oracle: the official ``PECoP_SSL`` + torchvideotransforms clip, re-implemented from
Plrbear/PECoP and hassony2/torch_videovision, reading the stored JPEG bytes written out as
PECoP's ``img_%05d.jpg`` folders with ``cv2.imread``, equals our :class:`VSPPSampler`'s clip
for the same draws: the same frames read, the same labels, the same pixels after flip, the
455x256 nearest resize, the crop and the normalisation.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

torch = pytest.importorskip("torch")
official = pytest.importorskip("pecop_official")

from aqa_jax.data import transforms  # noqa: E402
from aqa_jax.data.frames import encode_jpeg  # noqa: E402
from aqa_jax.data.pipeline import VSPPSampler  # noqa: E402
from aqa_jax.data.sampling import pecop_vspp_indices  # noqa: E402

NUM_FRAMES = 48


class Script:
    """Replays chosen draws: Python ``random``'s ``randint(a, b)`` / ``random()`` for the official
    side, numpy's ``integers(lo, hi)`` / ``random()`` for ours; each draw is range-checked."""

    def __init__(self, values):
        self.values = list(values)

    def _take(self, lo, hi):
        value = self.values.pop(0)
        assert lo <= value <= hi, (value, lo, hi)
        return value

    def randint(self, a, b):
        return self._take(a, b)

    def integers(self, lo, hi):
        return self._take(lo, hi - 1)

    def random(self):
        return self.values.pop(0)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """One stored video (48 frames, 256x256 JPEG) and its PECoP frame folder and list."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (8, 256, 256, 3), dtype=np.uint8)
    frames = [encode_jpeg(np.roll(base[i % 8], 3 * i, axis=1)) for i in range(NUM_FRAMES)]
    record = {"id": b"subject_007", "num_frames": NUM_FRAMES, "frames": frames}
    root = tmp_path_factory.mktemp("pecop_frames")
    official.write_frame_folders([record], root, "finger_tapping", root / "train.list")
    return record, root


# (speed 1..5 != fr, segment 1..4, start 1..usable-32, flip u, top, left): segment 4 and the
# fastest rate wrap past the end; crops at both extremes of the 455x256 frame.
DRAWS = [
    (2, 1, 1, 0.9, 0, 0),
    (5, 4, 13, 0.1, 231, 32),
    (3, 2, 7, 0.4, 100, 17),
    (4, 3, 12, 0.7, 5, 31),
]


@pytest.mark.parametrize("speed,segment,start,flip_u,top,left", DRAWS)
def test_official_clip_equals_our_sampler(video, speed, segment, start, flip_u, top, left):
    record, root = video
    read = []

    def imread(path):
        read.append(int(Path(path).stem.split("_")[1]))
        return official.cv2.imread(path)

    # official draw order: rate, segment, start (randint), flip (random), x1=left, y1=top
    script = Script([speed, segment, start, flip_u, left, top])
    dataset = official.PECoPSSL(root / "train.list", root, clip_len=32, max_sr=5, fr=1,
                                max_segment=4, transforms_=official.official_transform(script),
                                rand=script, imread=imread, list_repeat=1)
    theirs, label = dataset[0]
    assert not script.values
    assert label.tolist() == [speed - 1, segment - 1]
    usable = NUM_FRAMES - 3
    expected = pecop_vspp_indices(usable, start, speed, segment, 1) + 1
    assert read == expected.tolist()

    # ours: rate, segment, start (integers), flip (random), top, left
    ours = VSPPSampler(fr=1, preset="pecop")(record, Script([speed, segment, start, flip_u, top, left]))
    assert (int(ours["speed"]), int(ours["segment"])) == (speed - 1, segment - 1)
    clip = ours["clip"]
    if clip.dtype == np.uint8:  # pixels on the host, normalised in the jitted step
        clip = transforms.normalize_clip(clip, "pecop")
    assert theirs.shape == (3, 32, 224, 224) and theirs.dtype == torch.float32
    np.testing.assert_allclose(theirs.numpy().transpose(1, 2, 3, 0), clip, rtol=0, atol=1e-6)


def test_official_network_trainable_counts():
    """PECoP's regime trains the adapters and the two heads only; ``full`` everything."""
    net = official.VSPPNet(adapters=True)
    counts = official.make_trainable(net, "adapters")
    adapters = sum(p.numel() for n, p in net.named_parameters() if "tuning_module" in n)
    heads = sum(p.numel() for n, p in net.named_parameters() if n.startswith("logits_"))
    assert counts["trainable"] == adapters + heads and adapters > 0
    assert heads == 1024 * 5 + 5 + 1024 * 4 + 4
    full = official.VSPPNet(adapters=False)
    counts = official.make_trainable(full, "full")
    assert counts["trainable"] == counts["total"] == sum(
        p.numel() for n, p in full.named_parameters() if "conv3d_0c_1x1" not in n)
    x = torch.zeros(2, 3, 16, 224, 224)
    with torch.no_grad():
        speed, segment = full.eval()(x)
    assert speed.shape == (2, 5) and segment.shape == (2, 4)


@pytest.mark.slow
def test_quick_benchmark_runs_both_sides(tmp_path):
    out = tmp_path / "e2e.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "pretrain_e2e.py"), "--quick",
         "--data-dir", str(tmp_path / "data"), "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert {r["side"] for r in rows} == {"torch", "jax"}
    for r in rows:
        assert r["clips_per_s"] > 0 and r["pipeline_clips_per_s"] > 0 and r["rss_main_mb"] > 0
    counts = {r["side"]: r["param_counts"] for r in rows}
    for key in ("trainable", "total"):  # the same network, the same trainable set (adapters, heads)
        assert counts["torch"][key] == counts["jax"][key]
    assert "| official (PyTorch) | adapters |" in proc.stdout

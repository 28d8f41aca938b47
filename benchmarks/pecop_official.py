"""The official PECoP pretraining input and network, in PyTorch, for benchmarks/pretrain_e2e.py.

Written from Plrbear/PECoP (``datasets/ucf101.py``, ``train.py``, ``models/i3d_adapter.py``)
and hassony2/torch_videovision (``torchvideotransforms``, the master branch PECoP installs):

- :class:`PECoPSSL`: ``PECoP_SSL`` — a training list ``<name> <label> <num_frames> <folder>``
  repeated x20, ``random`` (Python's module) draws the playback rate (redrawn while it equals
  ``fr``), the segment and the start frame, and ``loop_load_rgb`` reads each frame with
  ``cv2.imread`` from ``<prefix>/<folder>/<name>/img_%05d.jpg`` (BGR, never converted);
  labels ``[speed - 1, segment - 1]``.
- :func:`official_transform`: ``train.py``'s ``video_transforms.Compose([RandomHorizontalFlip(),
  Resize((455, 256)), RandomCrop(224), ClipToTensor(), Normalize(ImageNet)])`` on the list of
  numpy frames. torchvideotransforms is not on PyPI (PECoP installs it from its git
  repository), so its five transforms are re-implemented here as its numpy path runs them:
  ``np.fliplr`` of every frame when ``random.random() < 0.5``; ``resize_clip`` swaps the size
  tuple, so ``cv2.resize(img, (256, 455), INTER_NEAREST)`` makes frames **455 high x 256
  wide**; ``RandomCrop`` draws ``x1 = randint(0, w - 224)`` then ``y1 = randint(0, h - 224)``;
  ``ClipToTensor`` fills a float64 ``(C, T, H, W)`` array, converts it to float32 and divides
  by 255; ``Normalize`` subtracts the mean and divides by the std per channel *position* (the
  BGR channels get the RGB statistics).
- :class:`VSPPNet`: ``train.py``'s ``VSPP`` module — the hassony2-layout I3D
  (``tests/torch_reference/i3d.py``, with the 3D-Adapters of ``i3d_adapter.py`` in all nine
  Mixed blocks for PECoP) up to its ``AvgPool3d((2, 7, 7), stride 1)`` feature, then one
  ``Dropout(0.5)`` module applied separately before each head, the speed head ``logits_p``
  (1x1x1 conv 1024 -> max_sr) and the segment head ``logits_s`` (1024 -> max_segment), each
  squeezed and averaged over time. The I3D's own 400-class head is built (its parameters
  exist, as in the official model) but not run, as the official ``I3D.forward`` returns the
  AvgPool feature.
- :func:`make_trainable`: the regimes. ``adapters`` is PECoP's: every I3D parameter frozen
  except the adapters (``tuning_module``), the heads trainable; BatchNorm in training mode
  (batch statistics, running statistics updated, scale and bias frozen). ``full`` trains
  everything (the Dom-S ablation, no adapters).
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # tests/torch_reference
from torch_reference.i3d import ENDPOINTS, TorchI3D  # noqa: E402

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


# --- torchvideotransforms' numpy path, as train.py composes it -------------------------------

class Compose:
    def __init__(self, transforms: Sequence[Callable[[Any], Any]]):
        self.transforms = list(transforms)

    def __call__(self, clip: Any) -> Any:
        for t in self.transforms:
            clip = t(clip)
        return clip


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5, rand: Any = random):
        self.p, self.rand = p, rand

    def __call__(self, clip: Sequence[np.ndarray]) -> list[np.ndarray]:
        if self.rand.random() < self.p:
            return [np.fliplr(img) for img in clip]
        return list(clip)


class Resize:
    """``Resize(size)`` with its default ``'nearest'``: ``resize_clip`` swaps the tuple, so
    ``size=(455, 256)`` gives ``cv2.resize(img, (256, 455))``, i.e. 455 rows x 256 columns."""

    def __init__(self, size: tuple[int, int]):
        self.size = size

    def __call__(self, clip: Sequence[np.ndarray]) -> list[np.ndarray]:
        dsize = (self.size[1], self.size[0])
        return [cv2.resize(img, dsize, interpolation=cv2.INTER_NEAREST) for img in clip]


class RandomCrop:
    def __init__(self, size: int, rand: Any = random):
        self.size, self.rand = (size, size), rand

    def __call__(self, clip: Sequence[np.ndarray]) -> list[np.ndarray]:
        h, w = self.size
        im_h, im_w, _ = clip[0].shape
        if w > im_w or h > im_h:
            raise ValueError(f"cannot crop ({w}, {h}) from ({im_w}, {im_h}) frames")
        x1 = self.rand.randint(0, im_w - w)  # left first, then top, as torch_videovision
        y1 = self.rand.randint(0, im_h - h)
        return [img[y1:y1 + h, x1:x1 + w, :] for img in clip]


class ClipToTensor:
    def __call__(self, clip: Sequence[np.ndarray]) -> torch.Tensor:
        h, w, ch = clip[0].shape
        np_clip = np.zeros([ch, len(clip), int(h), int(w)])  # float64, as the library
        for i, img in enumerate(clip):
            np_clip[:, i, :, :] = img.transpose(2, 0, 1)
        return torch.from_numpy(np_clip).float().div(255)


class Normalize:
    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean, self.std = mean, std

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        clip = clip.clone()
        mean = torch.as_tensor(self.mean, dtype=clip.dtype)
        std = torch.as_tensor(self.std, dtype=clip.dtype)
        return clip.sub_(mean[:, None, None, None]).div_(std[:, None, None, None])


def official_transform(rand: Any = random, resize: tuple[int, int] = (455, 256),
                       crop: int = 224) -> Compose:
    """``train.py``'s ``train_trans``; ``rand`` makes the flip and crop draws (Python's
    ``random`` module, as the library; a ``random.Random`` or a scripted stand-in in tests)."""
    return Compose([
        RandomHorizontalFlip(rand=rand),
        Resize(resize),
        RandomCrop(crop, rand=rand),
        ClipToTensor(),
        Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


# --- datasets/ucf101.py: PECoP_SSL ------------------------------------------------------------

class PECoPSSL(Dataset):
    """``PECoP_SSL``: VSPP clips read frame by frame with ``cv2.imread``.

    ``rand`` draws the rate, segment and start (Python's ``random``, as the official code);
    ``imread`` reads one frame path (``cv2.imread``; tests record the paths it is given).
    """

    def __init__(self, data_list: str | os.PathLike[str], rgb_prefix: str | os.PathLike[str],
                 clip_len: int, max_sr: int, fr: int, max_segment: int,
                 transforms_: Callable[[np.ndarray], Any] | None = None, *, rand: Any = random,
                 imread: Callable[[str], np.ndarray | None] = cv2.imread, list_repeat: int = 20):
        with open(data_list) as f:
            self.rgb_lines = list(f) * list_repeat
        self.rgb_prefix = str(rgb_prefix)
        self.clip_len, self.max_sr, self.fr, self.max_segment = clip_len, max_sr, fr, max_segment
        self.transforms_ = transforms_
        self.rand, self.imread = rand, imread

    def __len__(self) -> int:
        return len(self.rgb_lines)

    def __getitem__(self, idx: int) -> tuple[Any, np.ndarray]:
        name, _label, num_frames, folder = self.rgb_lines[idx].strip("\n").split()[:4]
        num_frames = int(num_frames) - 3
        rgb_dir = os.path.join(self.rgb_prefix, folder, name)
        sample_rate = self.rand.randint(1, self.max_sr)
        while sample_rate == self.fr:
            sample_rate = self.rand.randint(1, self.max_sr)
        segment = self.rand.randint(1, self.max_segment)
        start_frame = self.rand.randint(1, num_frames - self.clip_len)
        seg_first = int((segment - 1) * (self.clip_len / self.max_segment))
        seg_last = int(segment * (self.clip_len / self.max_segment))
        clip = self.loop_load_rgb(rgb_dir, start_frame, sample_rate, self.clip_len, num_frames,
                                  seg_first, seg_last)
        label = [sample_rate - 1, segment - 1]
        return self.transforms_(clip), np.array(label)

    def _read(self, video_dir: str, frame: int) -> np.ndarray:
        path = os.path.join(video_dir, "img_" + "{:05}.jpg".format(frame))
        img = self.imread(path)
        if img is None:  # the official code would fail later, on an object array
            raise FileNotFoundError(path)
        return img

    def loop_load_rgb(self, video_dir: str, start_frame: int, sample_rate: int, clip_len: int,
                      num_frames: int, segment_start_frame: int, segment_last_frame: int) -> np.ndarray:
        """The official walk: inside the segment (inclusive bounds) frames advance by
        ``sample_rate`` from the last normal frame, outside by ``fr``; a read that would run
        past ``num_frames`` restarts at frame 1 (tested with ``+ sample_rate`` inside and
        ``+ 4`` outside, as the official code)."""
        video_clip = []
        idx1 = 0
        idx = 0
        normal_f = start_frame
        for i in range(clip_len):
            if segment_start_frame <= i <= segment_last_frame:
                video_clip.append(self._read(video_dir, start_frame + idx1 * sample_rate))
                normal_f = start_frame + idx1 * sample_rate
                idx = 1
                if start_frame + (idx1 + 1) * sample_rate > num_frames:
                    start_frame = normal_f = 1
                    idx = idx1 = 0
                else:
                    idx1 += 1
            else:
                video_clip.append(self._read(video_dir, normal_f + idx))
                start_frame = normal_f + idx
                idx1 = 1
                if normal_f + (idx + 4) > num_frames:
                    normal_f = start_frame = 1
                    idx1 = idx = 0
                else:
                    idx += self.fr
        return np.array(video_clip)


def write_frame_folders(records: Sequence[Any], root: str | os.PathLike[str], folder: str,
                        list_path: str | os.PathLike[str]) -> int:
    """Writes each record's stored JPEG bytes (unchanged, so ``cv2.imread`` decodes the pixels
    our pipeline decodes) as ``<root>/<folder>/<id>/img_00001.jpg`` ... and a PECoP training
    list ``<id> 0 <num_frames> <folder>``; returns the number of frames written."""
    root = Path(root)
    lines, written = [], 0
    for record in records:
        sample = record["id"].decode() if isinstance(record["id"], bytes) else str(record["id"])
        frames = record["frames"]
        video_dir = root / folder / sample
        video_dir.mkdir(parents=True, exist_ok=True)
        for i, data in enumerate(frames, start=1):
            path = video_dir / f"img_{i:05d}.jpg"
            if not (path.exists() and path.stat().st_size == len(data)):
                path.write_bytes(bytes(data))
                written += 1
        lines.append(f"{sample} 0 {len(frames)} {folder}\n")
    Path(list_path).write_text("".join(lines))
    return written


# --- train.py: the VSPP network ---------------------------------------------------------------

class VSPPNet(nn.Module):
    """``VSPP``: I3D to the AvgPool feature, dropout, the speed and segment heads."""

    def __init__(self, adapters: bool = True, max_sr: int = 5, max_segment: int = 4,
                 dropout: float = 0.5):
        super().__init__()
        self.dropout = nn.Dropout(p=dropout)
        self.logits_p = nn.Conv3d(1024, max_sr, 1, bias=True)  # speed (Unit3Dpy, no BN)
        self.logits_s = nn.Conv3d(1024, max_segment, 1, bias=True)  # segment
        self.model = TorchI3D(layout="hassony2", adapters=adapters, num_classes=400,
                              dropout_prob=0.5)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        for ep in ENDPOINTS:
            x = getattr(self.model, self.model._names[ep])(x)
        return F.avg_pool3d(x, (2, 7, 7), stride=(1, 1, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.features(x)
        l_p = self.logits_p(self.dropout(x)).squeeze(3).squeeze(3).mean(2)
        l_s = self.logits_s(self.dropout(x)).squeeze(3).squeeze(3).mean(2)
        return l_p, l_s


UNUSED_HEAD = "conv3d_0c_1x1"  # the I3D's Kinetics-400 logits: built, never run


def make_trainable(net: VSPPNet, regime: str) -> dict[str, int]:
    """Sets ``requires_grad`` for ``regime`` (``adapters`` or ``full``); returns the parameter
    counts of the network that runs (the unused Kinetics-400 head left out, so they compare
    with ``aqa-jax``'s AvgPool-ended I3D)."""
    if regime not in ("adapters", "full"):
        raise ValueError(f"regime {regime!r}: adapters or full")
    for p in net.model.parameters():
        p.requires_grad = regime == "full"
    if regime == "adapters":
        for name, module in net.model.named_modules():
            if name.endswith("tuning_module"):
                for p in module.parameters():
                    p.requires_grad = True
    for head in (net.logits_p, net.logits_s):
        for p in head.parameters():
            p.requires_grad = True
    used = [p for n, p in net.named_parameters() if not n.startswith(f"model.{UNUSED_HEAD}.")]
    return {"total": sum(p.numel() for p in used),
            "trainable": sum(p.numel() for p in used if p.requires_grad)}


def sgd(net: nn.Module) -> torch.optim.Optimizer:
    """``train.py``'s optimizer, over every parameter (frozen ones get no gradient)."""
    return torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, dampening=0,
                           weight_decay=1e-4, nesterov=False)


def train_step(net: nn.Module, optimizer: torch.optim.Optimizer, criterion: nn.Module,
               rgb_clip: torch.Tensor, labels: torch.Tensor, device: torch.device) -> float:
    """One iteration of ``train.py``'s loop (its accuracy bookkeeping included)."""
    rgb_clip = rgb_clip.to(device, dtype=torch.float)
    label_speed = labels[:, 0].to(device)
    label_segment = labels[:, 1].to(device)
    optimizer.zero_grad()
    out1, out2 = net(rgb_clip)
    loss = criterion(out1, label_speed) + criterion(out2, label_segment)
    value = loss.item()
    loss.backward()
    optimizer.step()
    preds_segment = torch.max(nn.Softmax(dim=1)(out2), 1)[1]
    preds_speed = torch.max(nn.Softmax(dim=1)(out1), 1)[1]
    _ = (torch.sum(preds_segment == label_segment.data).detach().cpu().numpy(),
         torch.sum(preds_speed == label_speed.data).detach().cpu().numpy())
    return value

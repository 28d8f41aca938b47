"""Independent PyTorch I3D (Inflated Inception-v1) used as a test oracle.

Written from the facts in shared/reference/pecop_i3d.md (sections 1, 4.1-4.3)
and from reading piergiaj/pytorch-i3d (``pytorch_i3d.py``), the pre-2019
hassony2/kinetics_i3d_pytorch ``src/i3dpt.py`` as vendored by CoRe/PECoP
(``models/i3d_adapter.py``) and PECoP's ``train.py``.  No code was copied.

Input layout is NCDHW ``(B, 3, T, H, W)``.  One option set reproduces each
official implementation:

* piergiaj:  ``TorchI3D(layout='piergiaj')`` -> dynamic TF-SAME padding, zero
  padded max-pools (ceil_mode=False), BN eps 1e-3 / momentum 0.01.
* hassony2 / CoRe / PECoP / TSA: ``TorchI3D(layout='hassony2')`` -> static
  SAME padding from kernel/stride only, zero ``ConstantPad3d`` + ``MaxPool3d(
  ceil_mode=True)``, BN eps 1e-5 / momentum 0.1.  PECoP adds
  ``adapters=True`` (a 3D-Adapter after every one of the 9 Mixed blocks).
* DeepMind (Sonnet) numerics: ``padding='tf_same', pool_pad_value=-inf,
  bn_eps=1e-3`` plus ``set_bn_gamma_to_one_`` (TF has no BN scale).

Deliberate extension: the final AvgPool kernel is ``(min(2,T5), min(7,H5),
min(7,W5))`` so that tiny test clips (8x32x32) run; identical to the official
(2,7,7) VALID pool whenever Mixed_5c is at least 2x7x7.
"""
import math
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

# Endpoints in order.  Conv: (out channels, kernel, stride); MaxPool: (kernel,
# stride); Mixed: [b0, b1a, b1b, b2a, b2b, b3b] output channels.
LAYERS = OrderedDict([
    ('Conv3d_1a_7x7', (64, (7, 7, 7), (2, 2, 2))),
    ('MaxPool3d_2a_3x3', ((1, 3, 3), (1, 2, 2))),
    ('Conv3d_2b_1x1', (64, (1, 1, 1), (1, 1, 1))),
    ('Conv3d_2c_3x3', (192, (3, 3, 3), (1, 1, 1))),
    ('MaxPool3d_3a_3x3', ((1, 3, 3), (1, 2, 2))),
    ('Mixed_3b', [64, 96, 128, 16, 32, 32]),
    ('Mixed_3c', [128, 128, 192, 32, 96, 64]),
    ('MaxPool3d_4a_3x3', ((3, 3, 3), (2, 2, 2))),
    ('Mixed_4b', [192, 96, 208, 16, 48, 64]),
    ('Mixed_4c', [160, 112, 224, 24, 64, 64]),
    ('Mixed_4d', [128, 128, 256, 24, 64, 64]),
    ('Mixed_4e', [112, 144, 288, 32, 64, 64]),
    ('Mixed_4f', [256, 160, 320, 32, 128, 128]),
    ('MaxPool3d_5a_2x2', ((2, 2, 2), (2, 2, 2))),
    ('Mixed_5b', [256, 160, 320, 32, 128, 128]),
    ('Mixed_5c', [384, 192, 384, 48, 128, 128]),
])
ENDPOINTS = tuple(LAYERS)
MIXED_BLOCKS = tuple(n for n in LAYERS if n.startswith('Mixed'))
_LAYOUT_DEFAULTS = {  # padding, bn_eps, bn_momentum (PyTorch convention)
    'piergiaj': ('tf_same', 1e-3, 0.01),
    'hassony2': ('static_same', 1e-5, 0.1),
}


def same_pad(sizes, kernel, stride, mode):
    """F.pad tuple (W_f, W_b, H_f, H_b, T_f, T_b) for SAME padding.

    'tf_same' (piergiaj, = TF SAME): total = max(k - s, 0) if n % s == 0 else
    max(k - n % s, 0), from the actual input size n.  'static_same' (hassony2
    pre-2019 ``get_padding_shape``): total = max(k - s, 0), input-independent.
    Both put floor(total/2) in front and the rest at the back.  (hassony2
    swaps the H and W entries, which is harmless: every kernel is square in HW.)
    """
    out = []
    for n, k, s in zip(sizes, kernel, stride):
        if mode == 'tf_same':
            total = max(k - s, 0) if n % s == 0 else max(k - n % s, 0)
        elif mode == 'static_same':
            total = max(k - s, 0)
        else:
            raise ValueError(f'unknown padding mode {mode!r}')
        out.append((total // 2, total - total // 2))
    (tf, tb), (hf, hb), (wf, wb) = out
    return (wf, wb, hf, hb, tf, tb)


class MaxPool3dSame(nn.Module):
    """Parameter-free SAME max-pool.  tf_same: pad (value=pool_pad_value) then
    MaxPool3d(ceil_mode=False) like piergiaj's MaxPool3dSamePadding;
    static_same: ConstantPad3d then MaxPool3d(ceil_mode=True) like hassony2's
    MaxPool3dTFPadding.  pool_pad_value=-inf gives TF/DeepMind semantics."""

    def __init__(self, kernel, stride, padding, pad_value):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)
        self.padding, self.pad_value = padding, float(pad_value)

    def forward(self, x):
        pads = same_pad(x.shape[2:], self.kernel, self.stride, self.padding)
        x = F.pad(x, pads, mode='constant', value=self.pad_value)
        return F.max_pool3d(x, self.kernel, self.stride,
                            ceil_mode=self.padding == 'static_same')


class Unit3D(nn.Module):
    """Conv3d (explicit SAME zero pad, conv padding 0) -> BN -> ReLU.
    The BN submodule is ``bn`` (piergiaj) or ``batch3d`` (hassony2).  With
    use_bn=False it is the logits layer: conv with bias, no BN, no ReLU."""

    def __init__(self, cin, cout, kernel, stride=(1, 1, 1), *, padding, bn_name='bn',
                 bn_eps=1e-3, bn_momentum=0.01, use_bn=True):
        super().__init__()
        self.kernel, self.stride, self.padding = tuple(kernel), tuple(stride), padding
        self.conv3d = nn.Conv3d(cin, cout, self.kernel, self.stride, padding=0,
                                bias=not use_bn)
        self.bn_name = bn_name if use_bn else None
        if use_bn:
            self.add_module(bn_name, nn.BatchNorm3d(cout, eps=bn_eps, momentum=bn_momentum))

    def forward(self, x):
        x = F.pad(x, same_pad(x.shape[2:], self.kernel, self.stride, self.padding))
        x = self.conv3d(x)
        if self.bn_name is None:
            return x
        return F.relu(getattr(self, self.bn_name)(x))


class ConvAdapter3d(nn.Module):
    """PECoP's 3D-Adapter (``ConvAdapter`` in models/i3d_adapter.py):
    conv1 = Conv3d(C, C//r, 3, padding 1, groups=C//r, bias) -> ReLU ->
    conv2 = Conv3d(C//r, C, 1, bias) -> * se (1,C,1,1,1), se initialised to 1.
    Returns only the residual; the Mixed block adds it to its input."""

    def __init__(self, channels, reduction=4):
        super().__init__()
        width = channels // reduction
        self.conv1 = nn.Conv3d(channels, width, 3, stride=1, padding=1, groups=width, bias=True)
        self.conv2 = nn.Conv3d(width, channels, 1, bias=True)
        self.se = nn.Parameter(torch.ones(1, channels, 1, 1, 1))

    def forward(self, x):
        return self.conv2(F.relu(self.conv1(x))) * self.se


class Mixed(nn.Module):
    """Inception block; branch names follow the chosen layout.  Output =
    cat(b0, b1, b2, b3) [+ se * adapter(cat) when an adapter is attached]."""

    def __init__(self, cin, ch, layout, adapter, reduction, padding, pool_pad_value, **bn):
        super().__init__()
        self.layout = layout
        u = lambda i, o, k: Unit3D(i, o, (k,) * 3, padding=padding, **bn)
        pool = MaxPool3dSame((3, 3, 3), (1, 1, 1), padding, pool_pad_value)
        if layout == 'piergiaj':
            self.b0 = u(cin, ch[0], 1)
            self.b1a, self.b1b = u(cin, ch[1], 1), u(ch[1], ch[2], 3)
            self.b2a, self.b2b = u(cin, ch[3], 1), u(ch[3], ch[4], 3)
            self.b3a, self.b3b = pool, u(cin, ch[5], 1)
        else:
            self.branch_0 = u(cin, ch[0], 1)
            self.branch_1 = nn.Sequential(u(cin, ch[1], 1), u(ch[1], ch[2], 3))
            self.branch_2 = nn.Sequential(u(cin, ch[3], 1), u(ch[3], ch[4], 3))
            self.branch_3 = nn.Sequential(pool, u(cin, ch[5], 1))
        cout = ch[0] + ch[2] + ch[4] + ch[5]
        self.tuning_module = ConvAdapter3d(cout, reduction) if adapter else None

    def forward(self, x):
        if self.layout == 'piergiaj':
            outs = [self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))]
        else:
            outs = [self.branch_0(x), self.branch_1(x), self.branch_2(x), self.branch_3(x)]
        out = torch.cat(outs, dim=1)
        if self.tuning_module is not None:
            out = out + self.tuning_module(out)
        return out


def _canon_block(name):
    return 'Mixed_' + name.split('_', 1)[1] if name.lower().startswith('mixed_') else name


class TorchI3D(nn.Module):
    """Configurable I3D; ``state_dict()`` keys equal the real checkpoints'.

    layout: 'piergiaj' (``Conv3d_1a_7x7.bn.*``, ``Mixed_3b.b1a.*``,
        ``logits.conv3d.*``) or 'hassony2' (``conv3d_1a_7x7.batch3d.*``,
        ``mixed_3b.branch_1.0.*``, ``conv3d_0c_1x1.conv3d.*``).
    padding: 'tf_same' | 'static_same'; None -> layout default.
    pool_pad_value: 0.0 (both PyTorch ports) or float('-inf') (TF SAME).
    bn_eps, bn_momentum: None -> layout default (1e-3/0.01 piergiaj,
        1e-5/0.1 hassony2).  BN is always affine.
    adapters / adapter_blocks / adapter_reduction: PECoP 3D-Adapters as
        ``<block>.tuning_module.*``; adapter_blocks defaults to all 9 Mixed
        blocks when adapters=True, none otherwise (names like 'Mixed_4b' or
        'mixed_4b').
    dropout_prob: drop probability before the logits conv (0.5 in piergiaj,
        whose ``dropout_keep_prob`` is really a drop prob, and in PECoP).
    forward(x) -> dict: every endpoint in ENDPOINTS (NCDHW), 'AvgPool'
        (B,1024,T',h,w), 'features' (B,1024) = AvgPool mean over T',h,w, and
        'logits' (B,num_classes) = logits conv mean over T',h,w (h=w=1 for the
        usual 224 input, so this is the official squeeze + mean over time).
    """

    def __init__(self, layout='piergiaj', padding=None, pool_pad_value=0.0, bn_eps=None,
                 bn_momentum=None, adapters=False, adapter_blocks=None, adapter_reduction=4,
                 num_classes=400, dropout_prob=0.5, in_channels=3):
        super().__init__()
        if layout not in _LAYOUT_DEFAULTS:
            raise ValueError(f'unknown layout {layout!r}')
        d_pad, d_eps, d_mom = _LAYOUT_DEFAULTS[layout]
        self.layout = layout
        self.padding = d_pad if padding is None else padding
        self.pool_pad_value = float(pool_pad_value)
        bn = dict(bn_name='bn' if layout == 'piergiaj' else 'batch3d',
                  bn_eps=d_eps if bn_eps is None else bn_eps,
                  bn_momentum=d_mom if bn_momentum is None else bn_momentum)
        if adapter_blocks is None:
            adapter_blocks = MIXED_BLOCKS if adapters else ()
        self.adapter_blocks = tuple(_canon_block(b) for b in adapter_blocks)
        unknown = set(self.adapter_blocks) - set(MIXED_BLOCKS)
        if unknown:
            raise ValueError(f'unknown adapter blocks {sorted(unknown)}')
        self.num_classes = num_classes
        if layout == 'piergiaj':  # piergiaj registers dropout+logits first: same key order
            self._add_head(dropout_prob, bn)
        self._names = {}  # endpoint -> attribute name (hassony2: lower-case first letter)
        cin = in_channels
        for name, spec in LAYERS.items():
            self._names[name] = name if layout == 'piergiaj' else name[0].lower() + name[1:]
            if name.startswith('Conv'):
                mod = Unit3D(cin, *spec, padding=self.padding, **bn)
                cin = spec[0]
            elif name.startswith('MaxPool'):
                mod = MaxPool3dSame(*spec, self.padding, self.pool_pad_value)
            else:
                mod = Mixed(cin, spec, layout, name in self.adapter_blocks, adapter_reduction,
                            self.padding, self.pool_pad_value, **bn)
                cin = spec[0] + spec[2] + spec[4] + spec[5]
            self.add_module(self._names[name], mod)
        if layout == 'hassony2':
            self._add_head(dropout_prob, bn)

    def _add_head(self, dropout_prob, bn):
        self.dropout = nn.Dropout(dropout_prob)
        self._logits_name = 'logits' if self.layout == 'piergiaj' else 'conv3d_0c_1x1'
        self.add_module(self._logits_name, Unit3D(1024, self.num_classes, (1, 1, 1),
                                                  padding=self.padding, use_bn=False, **bn))

    def forward(self, x):
        out = OrderedDict()
        for ep in ENDPOINTS:
            x = getattr(self, self._names[ep])(x)
            out[ep] = x
        t, h, w = x.shape[2:]
        x = F.avg_pool3d(x, (min(2, t), min(7, h), min(7, w)), stride=1)  # VALID
        out['AvgPool'] = x
        out['features'] = x.mean(dim=(2, 3, 4))
        logits = getattr(self, self._logits_name)(self.dropout(x))
        out['logits'] = logits.mean(dim=(2, 3, 4))
        return out


CONV_GAIN = 1.4  # between LeCun (1) and He (2): offsets the max-pools' growth


@torch.no_grad()
def randomize_(model, seed=0, adapter_scale=0.3):
    """Fill every parameter and BN buffer with seeded, well-conditioned values.

    Conv (followed by BN+ReLU): N(0, CONV_GAIN/fan_in); with N(0,1) input every
    endpoint has rms ~0.35-3 (checked for 8x32x32 up to 32x224x224 clips);
    logits/head convs: N(0, 1/fan_in); conv biases N(0, 0.1^2).  BN: weight
    U(0.5,1.5), bias N(0,0.1^2), running_mean N(0,0.1^2), running_var
    U(0.5,1.5), num_batches_tracked random int.  Adapters: conv1 He, conv2
    N(0, adapter_scale^2/fan_in), se U(0.5,1.5), so the residual is about
    adapter_scale of the block output and drives some outputs negative.
    """
    g = torch.Generator().manual_seed(seed)
    randn = lambda t, std: t.copy_(torch.randn(t.shape, generator=g, dtype=torch.float64) * std)
    unif = lambda t, lo, hi: t.copy_(lo + (hi - lo) * torch.rand(t.shape, generator=g, dtype=torch.float64))
    done = set()
    for m in model.modules():
        if isinstance(m, ConvAdapter3d):
            for conv, std in ((m.conv1, lambda f: math.sqrt(2.0 / f)),
                              (m.conv2, lambda f: adapter_scale / math.sqrt(f))):
                fan_in = conv.weight[0].numel()
                randn(conv.weight, std(fan_in))
                randn(conv.bias, 0.1)
                done.add(id(conv))
            unif(m.se, 0.5, 1.5)
        elif isinstance(m, nn.Conv3d) and id(m) not in done:
            fan_in = m.weight[0].numel()
            randn(m.weight, math.sqrt((1.0 if m.bias is not None else CONV_GAIN) / fan_in))
            if m.bias is not None:
                randn(m.bias, 0.1)
        elif isinstance(m, nn.BatchNorm3d):
            unif(m.weight, 0.5, 1.5)
            randn(m.bias, 0.1)
            randn(m.running_mean, 0.1)
            unif(m.running_var, 0.5, 1.5)
            m.num_batches_tracked.fill_(int(torch.randint(0, 10000, (1,), generator=g)))
    return model


@torch.no_grad()
def set_bn_gamma_to_one_(model):
    """Set every BN weight (gamma) to 1, as DeepMind checkpoints (Sonnet
    BatchNorm scale=False) imply and as hassony2's converter stores it."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.weight.fill_(1.0)
    return model


def pecop_checkpoint_state_dict(model, data_parallel=False, seed=0):
    """The object PECoP's ``train.py`` hands to ``torch.save``.

    Found in github.com/Plrbear/PECoP ``train.py`` (commits ffdf8b8 and
    42998b3, identical here): ``model_saver`` calls
    ``torch.save(net.state_dict(), 'gait_adapterNN.pth.tar')`` -- a BARE
    state_dict (OrderedDict, no 'state_dict'/'epoch'/'optimizer' wrapper).
    ``net`` is ``VSPP`` whose children are registered as dropout, ``logits_p``
    (speed, Unit3Dpy 1024->5, named "segment" in a code comment), ``logits_s``
    (segment, 1024->4) and ``model`` (hassony2 I3D with adapters, 400
    classes).  Keys are therefore ``logits_p.conv3d.{weight,bias}``,
    ``logits_s.conv3d.{weight,bias}``, then ``model.<i3d key>``; with more
    than one GPU the VSPP is wrapped in ``nn.DataParallel`` so every key gets
    a ``module.`` prefix (``module.model.mixed_3b.tuning_module.se``...).

    ``model`` must be a hassony2-layout TorchI3D (normally with adapters);
    its tensors are shared, not copied.  Head weights are drawn from ``seed``.
    """
    if model.layout != 'hassony2':
        raise ValueError('PECoP checkpoints use the hassony2 layout')
    g = torch.Generator().manual_seed(seed)
    vspp = nn.Module()  # registration order of VSPP: dropout, logits_p, logits_s, model
    vspp.dropout = nn.Dropout(0.5)
    for name, n in (('logits_p', 5), ('logits_s', 4)):
        head = nn.Module()  # hassony2 Unit3Dpy(use_bias=True, use_bn=False): conv3d only
        head.conv3d = nn.Conv3d(1024, n, 1, bias=True)
        with torch.no_grad():
            head.conv3d.weight.copy_(torch.randn(n, 1024, 1, 1, 1, generator=g) / 32.0)
            head.conv3d.bias.copy_(torch.randn(n, generator=g) * 0.1)
        vspp.add_module(name, head)
    vspp.model = model
    if data_parallel:  # same keys as nn.DataParallel(vspp).state_dict(), no GPU needed
        wrapper = nn.Module()
        wrapper.module = vspp
        return wrapper.state_dict()
    return vspp.state_dict()

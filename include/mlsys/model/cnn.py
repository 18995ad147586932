"""The model zoo's image CNNs, built from plain torch modules (torch only).

    SmallCNN     3 x [conv3x3-BN-ReLU] with 2 max-pools, global avg pool, linear head
    VGG16        13 x [conv3x3-BN-ReLU] in 5 stages of 2,2,3,3,3, a 2x2 max-pool after each,
                 global avg pool, linear head (VGG-16-BN's feature extractor)
    ResNet18     conv7x7/2-BN-ReLU, max-pool 3x3/2, 4 stages of 2 basic blocks
                 (conv-BN-ReLU-conv-BN + identity or 1x1/2 conv-BN shortcut, ReLU), global avg pool, linear

    image (B, 3, H, W)  ->  feature map (B, C, H/s, W/s)  ->  (B, C)  ->  (B, num_classes) logits

``width`` scales every channel count (1.0 = the published widths: 64..512), so
tests run the same architectures small. ``build_cnn(name, ..., seed=...)`` gives
the same random weights for the same seed, without touching the global RNG.
"""

from __future__ import annotations

import torch
from torch import nn

VGG16_STAGES = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))


def _ch(c: int, width: float) -> int:
    return max(1, int(round(c * width)))


def _conv_bn_relu(cin: int, cout: int, k: int = 3, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=False)]


class SmallCNN(nn.Module):
    """The project's small image CNN: three conv blocks, global pooling, a linear head."""

    def __init__(self, width: float = 1.0, num_classes: int = 10, base: int = 32):
        super().__init__()
        c1, c2, c3 = _ch(base, width), _ch(2 * base, width), _ch(4 * base, width)
        self.features = nn.Sequential(
            *_conv_bn_relu(3, c1), nn.MaxPool2d(2),
            *_conv_bn_relu(c1, c2), nn.MaxPool2d(2),
            *_conv_bn_relu(c2, c3),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(c3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, num_classes)
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


class VGG16(nn.Module):
    """VGG-16 (with batch norm) feature extractor, global average pooling and one linear layer."""

    def __init__(self, width: float = 1.0, num_classes: int = 1000):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for channels, convs in VGG16_STAGES:
            cout = _ch(channels, width)
            for _ in range(convs):
                layers += _conv_bn_relu(cin, cout)
                cin = cout
            layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, num_classes)
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


class BasicBlock(nn.Module):
    """ResNet's basic block: two 3x3 convs with a residual addition."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU()
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18: a 7x7/2 stem, a 3x3/2 max-pool, four stages of two basic blocks, pooling, linear."""

    def __init__(self, width: float = 1.0, num_classes: int = 1000):
        super().__init__()
        c = [_ch(n, width) for n in (64, 128, 256, 512)]
        self.stem = nn.Sequential(*_conv_bn_relu(3, c[0], k=7, stride=2), nn.MaxPool2d(3, 2, 1))
        blocks: list[nn.Module] = []
        cin = c[0]
        for i, cout in enumerate(c):
            blocks += [BasicBlock(cin, cout, 1 if i == 0 else 2), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, num_classes)
        return self.head(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


CNNS = {"small": SmallCNN, "vgg16": VGG16, "resnet18": ResNet18}


def build_cnn(name: str, width: float = 1.0, num_classes: int = 10, seed: int = 0) -> nn.Module:
    """A CNN of the zoo with seeded random weights, in eval mode (batch norm uses its running stats)."""
    if name not in CNNS:
        raise ValueError(f"unknown CNN {name!r}: choose one of {sorted(CNNS)}")
    if not width > 0:
        raise ValueError(f"CNN width={width!r} is invalid: use a positive multiplier such as 0.25 or 1.0")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CNNS[name](width=width, num_classes=num_classes)
        for m in model.modules():
            if isinstance(m, nn.Conv2d):  # He init, as torchvision's VGG and ResNet: activations keep their scale
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        calibrate_batch_norm(model, torch.rand(4, 3, 8, 8).repeat_interleave(8, 2).repeat_interleave(8, 3)
                             * 0.6 + 0.4 * torch.rand(4, 3, 64, 64))
    return model.eval()


@torch.no_grad()
def calibrate_batch_norm(model: nn.Module, images: torch.Tensor) -> nn.Module:
    """Set every batch norm's running statistics from ``images`` (B, 3, H, W), as data-dependent init does.

    Untrained batch norms (mean 0, variance 1) let activations shrink layer by
    layer until the output hardly depends on the input; calibrated ones keep
    each layer's output normalised, so random weights give input-sensitive outputs.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [(m.momentum, m.training) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the calibration batch
    model.train()
    model(images)
    for m, (momentum, _) in zip(norms, saved):
        m.momentum = momentum
    return model.eval()

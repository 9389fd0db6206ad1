"""A torchvision-state-dict-compatible ResNet, because torchvision cannot be installed here.

Parameter names (``conv1``, ``bn1``, ``layer{i}.{j}.conv{k}``, ``downsample.0/1``) match
``torchvision.models.resnet`` (v1.5: the stride sits on the 3x3 conv of a Bottleneck), which
is also what the NPR, Corvi (``resnet_mod``) and TrueFake repos use, so their checkpoints
load unchanged.  The knobs the detectors need are explicit: base ``width`` (64 upstream,
smaller in the tiny profile), the stem (kernel/stride/padding of ``conv1``), the maxpool
stride (``None`` drops it) and how many stages are kept (NPR keeps two).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


BLOCKS: dict[str, type[nn.Module]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(nn.Module):
    """ResNet trunk + global average pool + optional ``fc`` head.

    ``forward_features`` returns the pooled (N, C) vector so detectors can attach heads
    under their upstream attribute names (``fc``, ``fc1``, ``fc.0``...).
    """

    def __init__(
        self,
        block: str = "bottleneck",
        layers: Sequence[int] = (3, 4, 6, 3),
        width: int = 64,
        conv1_kernel: int = 7,
        conv1_stride: int = 2,
        maxpool_stride: int | None = 2,
        fc: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if block not in BLOCKS:
            raise ValueError(f"unknown block {block!r}; accepted: {', '.join(BLOCKS)}")
        if not 1 <= len(layers) <= 4:
            raise ValueError(f"layers must have 1 to 4 stages, got {list(layers)}")
        block_cls = BLOCKS[block]
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, conv1_kernel, conv1_stride, conv1_kernel // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = (
            nn.MaxPool2d(kernel_size=3, stride=maxpool_stride, padding=1) if maxpool_stride is not None else nn.Identity()
        )
        for i, n_blocks in enumerate(layers):
            stage = self._make_layer(block_cls, width * 2**i, n_blocks, stride=1 if i == 0 else 2)
            setattr(self, f"layer{i + 1}", stage)
        self.num_stages = len(layers)
        self.num_features = width * 2 ** (len(layers) - 1) * block_cls.expansion
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = fc
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, block: type[nn.Module], planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        out_ch = planes * block.expansion  # type: ignore[attr-defined]
        if stride != 1 or self.inplanes != out_ch:
            downsample = nn.Sequential(conv1x1(self.inplanes, out_ch, stride), nn.BatchNorm2d(out_ch))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = out_ch
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.forward_features(x)
        return feats if self.fc is None else self.fc(feats)

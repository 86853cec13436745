"""Image and observation encoders (PyTorch, ROS-free).

Per camera: backbone (small CNN, or a ResNet-10-shaped network that can load
frozen pretrained weights from a local safetensors file) -> learned spatial
embeddings -> Dropout -> Linear -> LayerNorm -> tanh. A proprioception branch
(Linear -> LayerNorm -> tanh) joins them. The state vector is
normalised first when ``ObservationSpec.state_normalization`` asks for it
(``StateNormalizer``, buffers saved with the weights). Images arrive as uint8 (batch, H,
W, 3), as they sit in the replay buffer and in ROS messages; the permute to
NCHW is free and yields a channels_last tensor, the fast conv layout on CPU.

The encoder is split into ``backbone_features`` (expensive; frozen or
trainable) and ``head`` (cheap, always trainable) so that callers can compute
frozen backbone features once and reuse them (see hilserl_learner.rlpd).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from hilserl_policy.config import EncoderConfig, ObservationSpec

STATE_KEY = "state"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def feature_key(camera: str) -> str:
    """Observation key under which cached backbone features of ``camera`` travel."""
    return f"{camera}/features"


def random_shift(images: torch.Tensor, pad: int) -> torch.Tensor:
    """Shift each image by an integer offset in [-pad, pad] (edge pixels replicated).

    Same result as replicate-padding by ``pad`` and cropping at a random
    offset, done as one gather on the (batch, H, W, C) tensor in any dtype
    (uint8 here, before the float conversion: 4x less memory traffic).
    """
    batch, height, width, _ = images.shape
    offsets = torch.randint(0, 2 * pad + 1, (batch, 2)) - pad
    rows = (torch.arange(height) + offsets[:, :1]).clamp_(0, height - 1)
    cols = (torch.arange(width) + offsets[:, 1:]).clamp_(0, width - 1)
    index = torch.arange(batch)[:, None, None]
    return images[index, rows[:, :, None], cols[:, None, :]]


class SmallCNN(nn.Module):
    """Stride-2 3x3 conv + ReLU stack (128x128 -> 8x8 with four layers)."""

    def __init__(self, channels: tuple[int, ...]):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for out_ch in channels:
            layers += [nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
            in_ch = out_ch
        self.net = nn.Sequential(*layers)
        self.register_buffer("pixel_scale", torch.full((1, 3, 1, 1), 1.0 / 255.0))
        self.register_buffer("pixel_shift", torch.full((1, 3, 1, 1), -0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BasicBlock(nn.Module):
    """ResNet basic block with GroupNorm (batch-independent, so deterministic per image)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.norm1 = nn.GroupNorm(8, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.norm2 = nn.GroupNorm(8, out_ch)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False),
                                            nn.GroupNorm(8, out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)), inplace=True)
        out = self.norm2(self.conv2(out))
        skip = x if self.downsample is None else self.downsample(x)
        return F.relu(out + skip, inplace=True)


class ResNet10(nn.Module):
    """ResNet-10: 7x7/2 stem, max-pool, one basic block per stage (64-128-256-512).

    128x128 input -> 512 x 4 x 4 feature map, before any pooling (the spatial
    embeddings do the pooling). Inputs are normalised with ImageNet statistics.
    """

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.GroupNorm(8, 64),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        self.stages = nn.Sequential(BasicBlock(64, 64, 1), BasicBlock(64, 128, 2),
                                    BasicBlock(128, 256, 2), BasicBlock(256, 512, 2))
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self.register_buffer("pixel_scale", 1.0 / (255.0 * std))
        self.register_buffer("pixel_shift", -mean / std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Load a backbone's weights from a local safetensors file, strictly.

    Keys must be exactly this module's ``state_dict`` keys (save one with
    ``save_backbone_weights``); errors name the file and the first mismatches.
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights file not found: {path}")
    try:
        loaded = load_file(str(path))
    except Exception as error:  # safetensors raises its own error types
        raise ValueError(f"{path}: not a readable safetensors file ({error})") from error
    expected = backbone.state_dict()
    missing = sorted(set(expected) - set(loaded))
    unexpected = sorted(set(loaded) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{path}: keys do not match the backbone: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    for key, value in expected.items():
        if loaded[key].shape != value.shape:
            raise ValueError(f"{path}: {key} has shape {tuple(loaded[key].shape)}, "
                             f"expected {tuple(value.shape)}")
    backbone.load_state_dict(loaded)


def save_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Write a backbone's ``state_dict`` as safetensors (the format loaded above)."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in backbone.state_dict().items()}, str(path))


def dropout_keep_mask(shape: tuple[int, ...], p: float) -> tuple[torch.Tensor, float]:
    """Bernoulli keep mask (bool) with drop probability ~``p``, and the effective ``p``.

    Draws 64 random bits per four elements (``random_`` over the full int64
    range) and compares each 16-bit lane with a threshold: one comparison and
    4x fewer RNG calls than ``rand_like`` (whose per-element float draws were
    ~15% of an image update). The drop probability is ``round(p * 2**16) / 2**16``
    (0.1 -> 0.100006).
    """
    count = 1
    for size in shape:
        count *= size
    bits = torch.empty((count + 3) // 4, dtype=torch.int64).random_(-2 ** 63, None)
    dropped = round(p * 65536)
    keep = bits.view(torch.int16)[:count].ge(dropped - 32768).view(shape)
    return keep, dropped / 65536


class ImageHead(nn.Module):
    """Learned spatial embeddings -> Dropout -> Linear -> LayerNorm -> tanh.

    ``precision="bfloat16"`` runs the Linear (4096 -> 256 by default, most of
    the head's FLOPs) with bfloat16 inputs and weights and float32
    accumulation; parameters, gradients and everything else stay float32.
    """

    def __init__(self, channels: int, height: int, width: int, num_embeddings: int,
                 latent_dim: int, dropout: float, precision: str = "float32"):
        super().__init__()
        # kernel[c, hw, k]: each channel has its own K learned spatial weightings.
        self.kernel = nn.Parameter(torch.randn(channels, height * width, num_embeddings)
                                   / (height * width) ** 0.5)
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(channels * num_embeddings, latent_dim)
        self.norm = nn.LayerNorm(latent_dim)
        self.matmul_dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32

    def forward(self, feature_map: torch.Tensor, dropout: bool = True) -> torch.Tensor:
        batch, channels = feature_map.shape[:2]
        # (C, HW, B) layout: per channel a (K x HW) @ (HW x B) product, ~3x faster
        # on CPU than (B x HW) @ (HW x K); the permute copy also does float16 -> float32.
        flat = feature_map.permute(1, 2, 3, 0).reshape(channels, -1, batch).to(torch.float32)
        # (C, K, B) viewed as (C * K, B): the Linear below takes it transposed
        # (free for the matmul), no (B, C * K) copy.
        embedded = torch.bmm(self.kernel.transpose(1, 2), flat).view(-1, batch)
        dtype = self.matmul_dtype
        if dtype != torch.float32:
            embedded = embedded.to(dtype)
        scale = 1.0
        p = self.dropout.p
        if dropout and self.training and p > 0:
            # Dropout as a select; its 1 / (1 - p) scale rides on the matmul (alpha).
            keep, p_eff = dropout_keep_mask(tuple(embedded.shape), p)
            embedded = torch.where(keep, embedded, 0.0)
            scale = 1.0 / (1.0 - p_eff)
        weight, bias = self.linear.weight, self.linear.bias
        if dtype != torch.float32:
            weight, bias = weight.to(dtype), bias.to(dtype)
        out = torch.addmm(bias, embedded.t(), weight.t(), alpha=scale)
        if dtype != torch.float32:
            out = out.to(torch.float32)
        return torch.tanh(self.norm(out))


class StateNormalizer(nn.Module):
    """``clip((state - shift) * scale, +/- clip)`` with ``ObservationSpec.state_normalization``.

    Every number lives in module buffers (float64 running sums, float32 shift
    and scale), so it is saved in the encoder's ``state_dict`` (checkpoints,
    policy weights) and the actor applies exactly what the learner used.
    ``"running"`` statistics change only through ``update`` (Chan's parallel
    mean/variance merge); until two states were seen it is the identity.
    """

    MIN_STD = 1e-2  # floor of the running std: a (nearly) constant element is not blown up

    def __init__(self, spec: ObservationSpec):
        super().__init__()
        self.mode = spec.state_normalization
        self.clip = float(spec.normalization_clip)
        dim = spec.state_dim
        shift, scale = torch.zeros(dim), torch.ones(dim)
        if self.mode == "bounds":
            low = torch.tensor(spec.state_low, dtype=torch.float64)
            high = torch.tensor(spec.state_high, dtype=torch.float64)
            shift = ((low + high) / 2).float()
            scale = (2 / (high - low)).float()
        self.register_buffer("shift", shift)
        self.register_buffer("scale", scale)
        if self.mode == "running":
            self.register_buffer("count", torch.zeros((), dtype=torch.float64))
            self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
            self.register_buffer("m2", torch.zeros(dim, dtype=torch.float64))

    @torch.no_grad()
    def update(self, states) -> None:
        """Merge a (N, state_dim) or (state_dim,) batch into the running statistics."""
        if self.mode != "running":
            return
        x = torch.as_tensor(states, dtype=torch.float64).reshape(-1, self.shift.shape[0])
        n = x.shape[0]
        if n == 0:
            return
        batch_mean = x.mean(0)
        batch_m2 = (x - batch_mean).square().sum(0)
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean += delta * (n / total)
        self.m2 += batch_m2 + delta.square() * (self.count * n / total)
        self.count.fill_(total)
        if total >= 2:
            std = (self.m2 / (total - 1)).sqrt().clamp_min(self.MIN_STD)
            self.shift.copy_(self.mean.float())
            self.scale.copy_((1 / std).float())

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        if self.mode == "none":
            return state
        return ((state - self.shift) * self.scale).clamp_(-self.clip, self.clip)


def make_backbone(config: EncoderConfig) -> nn.Module:
    if config.backbone == "resnet10":
        backbone = ResNet10()
        if config.pretrained_path is not None:
            load_backbone_weights(backbone, config.pretrained_path)
    else:
        backbone = SmallCNN(config.small_cnn_channels)
    return backbone.to(memory_format=torch.channels_last)


class ObservationEncoder(nn.Module):
    """Observation dict -> feature vector shared by actor and critic.

    State-only observations pass through unchanged (as in state-based RLPD).
    """

    def __init__(self, spec: ObservationSpec, config: EncoderConfig):
        super().__init__()
        self.spec = spec
        self.config = config
        self.camera_names = spec.camera_names
        self.frozen_backbone = config.freeze_backbone and bool(spec.camera_names)
        self.backbones = nn.ModuleDict({c: make_backbone(config) for c in spec.camera_names})
        self.heads = nn.ModuleDict()
        self.feature_shapes: dict[str, tuple[int, int, int]] = {}
        for camera, backbone in self.backbones.items():
            if self.frozen_backbone:
                backbone.requires_grad_(False)
                backbone.eval()
            with torch.no_grad():
                dummy = torch.zeros(1, 3, spec.image_size, spec.image_size)
                shape = tuple(backbone(dummy).shape[1:])
            self.feature_shapes[camera] = shape
            self.heads[camera] = ImageHead(*shape, config.num_spatial_embeddings,
                                           config.image_latent_dim, config.dropout,
                                           config.head_precision)
        # Normalisation buffers exist only when used: "none" keeps the state_dict unchanged.
        self.state_normalizer = None
        if spec.state_dim > 0 and spec.state_normalization != "none":
            self.state_normalizer = StateNormalizer(spec)
        self.state_head = None
        if spec.camera_names and spec.state_dim > 0:
            self.state_head = nn.Sequential(nn.Linear(spec.state_dim, config.state_latent_dim),
                                            nn.LayerNorm(config.state_latent_dim), nn.Tanh())
        if spec.camera_names:
            self.output_dim = len(spec.camera_names) * config.image_latent_dim + (
                config.state_latent_dim if self.state_head is not None else 0)
        else:
            self.output_dim = spec.state_dim

    def train(self, mode: bool = True) -> "ObservationEncoder":
        super().train(mode)
        if self.frozen_backbone:  # a frozen backbone always runs in inference mode
            for backbone in self.backbones.values():
                backbone.eval()
        return self

    def backbone_features(self, images: dict[str, torch.Tensor],
                          augment: bool) -> dict[str, torch.Tensor]:
        """uint8 (B, H, W, 3) per camera -> backbone feature maps (B, C, h, w).

        Feature maps are bfloat16 with ``backbone_precision="bfloat16"`` (the
        head converts them on its first copy), else float32.
        """
        pad = self.config.random_shift_pad
        features = {}
        bf16 = self.config.backbone_precision == "bfloat16"
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen_backbone), \
                torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            for camera, backbone in self.backbones.items():
                pixels = images[camera]
                if augment and pad > 0:
                    pixels = random_shift(pixels, pad)
                x = pixels.permute(0, 3, 1, 2).to(torch.float32)  # channels_last NCHW view
                x = torch.addcmul(backbone.pixel_shift, x, backbone.pixel_scale)
                features[camera] = backbone(x.contiguous(memory_format=torch.channels_last))
        return features

    def head(self, feature_maps: dict[str, torch.Tensor], state: torch.Tensor | None,
             dropout: bool = True) -> torch.Tensor:
        """Backbone feature maps (+ state) -> feature vector (B, output_dim)."""
        parts = [self.heads[c](feature_maps[c], dropout) for c in self.camera_names]
        if self.state_head is not None:
            parts.append(self.state_head(state))
        return torch.cat(parts, dim=-1)

    def forward(self, observations: dict[str, torch.Tensor], augment: bool = False,
                dropout: bool = True) -> torch.Tensor:
        """Encode an observation dict; cached features (``feature_key``) skip the backbone.

        ``dropout=False`` turns dropout off even in training mode (the learner
        encodes next observations for the target that way).
        """
        state = observations.get(STATE_KEY)
        if state is not None and self.state_normalizer is not None:
            state = self.state_normalizer(state)
        if not self.camera_names:
            return state
        cached = {c: observations[feature_key(c)] for c in self.camera_names
                  if feature_key(c) in observations}
        missing = {c: observations[c] for c in self.camera_names if c not in cached}
        if missing:
            cached.update(self.backbone_features(missing, augment))
        return self.head(cached, state, dropout)

"""Typed, validated configuration of the observation spec and of the networks.

One dataclass per component. Every field carries a comment saying what it is;
defaults follow the official HIL-SERL recipe unless a comment says otherwise.
``__post_init__`` validates and raises ``ValueError`` naming the field.
``config_to_dict`` / ``config_from_dict`` convert any of these (and nested
ones) to and from plain JSON-able dicts.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any

ACTIVATION_NAMES = ("tanh", "relu", "silu", "gelu")
BACKBONE_NAMES = ("small_cnn", "resnet10")
PRECISIONS = ("float32", "bfloat16")
GRIPPER_EXPLORATION_MODES = ("none", "epsilon", "boltzmann")


def _fail(obj: Any, name: str, message: str) -> None:
    raise ValueError(f"{type(obj).__name__}.{name}: {message}")


def _check_positive_int(obj: Any, name: str, allow_zero: bool = False) -> None:
    value = getattr(obj, name)
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(obj, name, f"must be an int, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        _fail(obj, name, f"must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def _check_finite(obj: Any, name: str, low: float = -math.inf, high: float = math.inf,
                  low_open: bool = False) -> None:
    value = getattr(obj, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        _fail(obj, name, f"must be a finite number, got {value!r}")
    if value < low or value > high or (low_open and value == low):
        bracket = "(" if low_open else "["
        _fail(obj, name, f"must be in {bracket}{low}, {high}], got {value}")


def _check_dims(obj: Any, name: str, allow_empty: bool = False) -> None:
    dims = tuple(getattr(obj, name))
    if not dims and not allow_empty:
        _fail(obj, name, "must not be empty")
    if any(isinstance(d, bool) or not isinstance(d, int) or d <= 0 for d in dims):
        _fail(obj, name, f"must be positive ints, got {dims!r}")
    object.__setattr__(obj, name, dims)


def _check_choice(obj: Any, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(obj, name)
    if value not in choices:
        _fail(obj, name, f"must be one of {choices}, got {value!r}")


STATE_NORMALIZATIONS = ("none", "bounds", "running")


@dataclass
class ObservationSpec:
    """What the policy observes and commands (fixed for a task).

    The state vector is built by a layout of ``hilserl_policy.observation``
    (``ObservationLayout(...).dim`` is its ``state_dim``). State normalisation
    runs inside the encoder (``hilserl_policy.encoders.StateNormalizer``), so
    its numbers are module buffers: saved with every checkpoint and pushed
    with the weights, applied identically at act time and in the update.

    - ``"none"``: the state passes unchanged.
    - ``"bounds"``: fixed affine map of [state_low, state_high] onto [-1, 1]
      (e.g. ``ObservationLayout.bounds(...)`` of the workspace box).
    - ``"running"``: (x - mean) / std from running statistics of every state
      the caller feeds to ``StateNormalizer.update`` (the training loop feeds
      each stored observation), clipped to +/- ``normalization_clip``.

    docs/observations.md has the measured learning curves behind the defaults.
    """

    state_dim: int = 0  # length of the proprioceptive/task state vector (0: none)
    action_dim: int = 3  # continuous action dims, normalised to [-1, 1] (gripper excluded)
    camera_names: tuple[str, ...] = ()  # image keys, e.g. ("front", "wrist"); () for state-only
    image_size: int = 128  # images are square image_size x image_size x 3, uint8 RGB
    has_gripper: bool = False  # a 3-way gripper command exists, learned by the grasp critic
    state_normalization: str = "none"  # "none", "bounds" or "running" (see the class docstring)
    state_low: tuple[float, ...] = ()  # "bounds": per-element low (state_dim values)
    state_high: tuple[float, ...] = ()  # "bounds": per-element high (state_dim values)
    normalization_clip: float = 5.0  # normalised values are clipped to +/- this ("bounds", "running")

    def __post_init__(self) -> None:
        _check_positive_int(self, "state_dim", allow_zero=True)
        _check_positive_int(self, "action_dim")
        _check_positive_int(self, "image_size")
        self.camera_names = tuple(self.camera_names)
        if len(set(self.camera_names)) != len(self.camera_names):
            _fail(self, "camera_names", f"duplicate names in {self.camera_names}")
        for name in self.camera_names:
            if not name or not isinstance(name, str) or name == "state" or "/" in name:
                _fail(self, "camera_names", f"invalid camera name {name!r}")
        if self.state_dim == 0 and not self.camera_names:
            _fail(self, "state_dim", "observation is empty: need state_dim > 0 or camera_names")
        _check_choice(self, "state_normalization", STATE_NORMALIZATIONS)
        _check_finite(self, "normalization_clip", 0.0, 1e6, low_open=True)
        self.state_low = tuple(float(v) for v in self.state_low)
        self.state_high = tuple(float(v) for v in self.state_high)
        if self.state_normalization == "bounds":
            for name in ("state_low", "state_high"):
                values = getattr(self, name)
                if len(values) != self.state_dim:
                    _fail(self, name, f"needs state_dim={self.state_dim} values for \"bounds\", "
                                      f"got {len(values)}")
                if not all(math.isfinite(v) for v in values):
                    _fail(self, name, f"must be finite, got {values}")
            bad = [i for i, (lo, hi) in enumerate(zip(self.state_low, self.state_high)) if hi <= lo]
            if bad:
                _fail(self, "state_high", f"must exceed state_low at every element; not at {bad}")
        elif self.state_normalization != "bounds" and (self.state_low or self.state_high):
            _fail(self, "state_low", "state_low/state_high are only used with \"bounds\"")
        if self.state_normalization != "none" and self.state_dim == 0:
            _fail(self, "state_normalization", "needs state_dim > 0")


@dataclass
class EncoderConfig:
    """Per-camera image encoder + proprioception branch (shared by actor and critic)."""

    backbone: str = "small_cnn"  # "small_cnn" (trainable default) or "resnet10" (HIL-SERL)
    pretrained_path: str | None = None  # local safetensors file with resnet10 weights (no hub)
    freeze_backbone: bool = False  # HIL-SERL freezes its pretrained ResNet-10
    small_cnn_channels: tuple[int, ...] = (32, 32, 32, 32)  # stride-2 3x3 convs, 128 -> 8x8
    num_spatial_embeddings: int = 8  # learned spatial embeddings per channel (official: 8)
    image_latent_dim: int = 256  # Linear -> LayerNorm -> tanh after the spatial embeddings
    state_latent_dim: int = 64  # proprio Linear -> LayerNorm -> tanh (used with images only)
    dropout: float = 0.1  # dropout after the spatial embeddings (official: 0.1)
    random_shift_pad: int = 4  # random-shift augmentation padding in pixels (0: off)
    # Matmul precision of each image head's Linear (spatial embeddings -> latent):
    # "bfloat16" (mixed precision: bf16 inputs/weights, float32 accumulation,
    # float32 parameters, gradients, optimiser state and LayerNorm) or "float32".
    head_precision: str = "bfloat16"
    # Precision of the backbone convolutions: "bfloat16" runs them under
    # torch.autocast (bf16 convs, float32 weights, gradients and optimiser
    # state; feature maps come out in bfloat16) or "float32".
    backbone_precision: str = "bfloat16"

    def __post_init__(self) -> None:
        _check_choice(self, "backbone", BACKBONE_NAMES)
        if self.pretrained_path is not None and self.backbone != "resnet10":
            _fail(self, "pretrained_path", "only the resnet10 backbone loads pretrained weights")
        _check_dims(self, "small_cnn_channels")
        _check_positive_int(self, "num_spatial_embeddings")
        _check_positive_int(self, "image_latent_dim")
        _check_positive_int(self, "state_latent_dim")
        _check_finite(self, "dropout", 0.0, 0.99)
        _check_positive_int(self, "random_shift_pad", allow_zero=True)
        _check_choice(self, "head_precision", PRECISIONS)
        _check_choice(self, "backbone_precision", PRECISIONS)


@dataclass
class ActorConfig:
    """Tanh-squashed Gaussian policy with state-dependent, clipped std."""

    hidden_dims: tuple[int, ...] = (256, 256)  # MLP widths; Linear -> LayerNorm -> act each
    activation: str = "tanh"  # hidden activation (official: tanh after LayerNorm)
    std_min: float = 1e-5  # lower clip of the pre-tanh std
    std_max: float = 5.0  # upper clip of the pre-tanh std

    def __post_init__(self) -> None:
        _check_dims(self, "hidden_dims")
        _check_choice(self, "activation", ACTIVATION_NAMES)
        _check_finite(self, "std_min", 0.0, math.inf, low_open=True)
        _check_finite(self, "std_max", 0.0, math.inf, low_open=True)
        if self.std_max <= self.std_min:
            _fail(self, "std_max", f"must exceed std_min={self.std_min}, got {self.std_max}")


@dataclass
class CriticConfig:
    """Ensemble of independent Q(s, a) networks evaluated in one batched pass."""

    hidden_dims: tuple[int, ...] = (256, 256)  # per-member MLP widths
    activation: str = "tanh"  # hidden activation after LayerNorm: "tanh" or "relu"
    num_critics: int = 2  # ensemble size (HIL-SERL: 2; RLPD: 10)
    target_subset_size: int = 2  # target = min over a random subset of this many members
    # "bfloat16": hidden-to-hidden matmuls with bf16 operands, float32 accumulation,
    # everything else (layer 1, Q head, LayerNorm, gradients, Adam) float32.
    matmul_precision: str = "float32"

    def __post_init__(self) -> None:
        _check_dims(self, "hidden_dims")
        _check_choice(self, "activation", ("tanh", "relu"))
        _check_positive_int(self, "num_critics")
        _check_positive_int(self, "target_subset_size")
        _check_choice(self, "matmul_precision", PRECISIONS)
        if self.target_subset_size > self.num_critics:
            _fail(self, "target_subset_size",
                  f"{self.target_subset_size} exceeds num_critics={self.num_critics}")


@dataclass
class GraspCriticConfig:
    """3-way (close / stay / open) Q-network for the gripper command."""

    hidden_dims: tuple[int, ...] = (256, 256)  # MLP widths
    activation: str = "tanh"  # hidden activation after LayerNorm

    def __post_init__(self) -> None:
        _check_dims(self, "hidden_dims")
        _check_choice(self, "activation", ACTIVATION_NAMES)


@dataclass
class GripperExplorationConfig:
    """How the gripper command explores in training (evaluation is always greedy).

    Both references act greedily with the grasp critic, so the gripper never
    explores; here exploration is on by default and annealed linearly.
    """

    mode: str = "epsilon"  # "epsilon", "boltzmann" or "none" (greedy)
    start: float = 0.2  # epsilon, or Boltzmann temperature, at step 0
    end: float = 0.02  # value reached after anneal_steps
    anneal_steps: int = 20_000  # environment steps of the linear anneal

    def __post_init__(self) -> None:
        _check_choice(self, "mode", GRIPPER_EXPLORATION_MODES)
        high = 1.0 if self.mode == "epsilon" else math.inf
        _check_finite(self, "start", 0.0, high)
        _check_finite(self, "end", 0.0, high)
        if self.mode == "boltzmann" and min(self.start, self.end) <= 0.0:
            _fail(self, "start" if self.start <= 0 else "end", "Boltzmann temperature must be > 0")
        _check_positive_int(self, "anneal_steps", allow_zero=True)

    def value_at(self, step: int) -> float:
        """Annealed epsilon / temperature at environment step ``step``."""
        if self.anneal_steps == 0 or step >= self.anneal_steps:
            return self.end
        return self.start + (self.end - self.start) * step / self.anneal_steps


@dataclass
class NetworkConfig:
    """All networks of one agent."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    actor: ActorConfig = field(default_factory=ActorConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    grasp_critic: GraspCriticConfig = field(default_factory=GraspCriticConfig)
    gripper_exploration: GripperExplorationConfig = field(default_factory=GripperExplorationConfig)


def config_to_dict(config: Any) -> dict[str, Any]:
    """Nested dataclass -> JSON-able dict (tuples become lists)."""
    return dataclasses.asdict(config)


def config_from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Inverse of ``config_to_dict``; unknown keys are an error naming the key."""
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__}: expected an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            value = config_from_dict(hint, value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)

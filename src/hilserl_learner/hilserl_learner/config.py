"""Typed, validated configuration of the RLPD update, the replay buffers and checkpoints.

Defaults follow the official HIL-SERL recipe (Adam 3e-4, batch 256, discount
0.97, Polyak 0.005, initial temperature 0.01, target entropy -|A|/2,
critic-to-actor 2, gripper penalty -0.02, 50/50 demo/online batches).
``LearnerConfig`` groups them and is what a checkpoint saves as JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hilserl_policy.config import (
    NetworkConfig,
    ObservationSpec,
    _check_choice,
    _check_finite,
    _check_positive_int,
    _fail,
    config_from_dict,
    config_to_dict,
)


@dataclass
class RLPDConfig:
    """SAC/RLPD update hyper-parameters."""

    batch_size: int = 256  # transitions per gradient update (demo + online together)
    discount: float = 0.97  # gamma (official: 0.97; 0.98-0.985 on some tasks)
    tau: float = 0.005  # Polyak rate of the target networks, applied every critic update
    critic_lr: float = 3e-4  # Adam lr of critic ensemble + encoder (+ grasp critic)
    actor_lr: float = 3e-4  # Adam lr of the actor
    temperature_lr: float = 3e-4  # Adam lr of log(alpha)
    initial_temperature: float = 0.01  # alpha at step 0
    target_entropy: float | None = None  # None: -target_entropy_scale * |A|
    target_entropy_scale: float = 0.5  # |A| multiplier when target_entropy is None
    learn_temperature: bool = True  # False keeps alpha at initial_temperature
    backup_entropy: bool = False  # subtract alpha * log pi(a'|s') in the critic target
    critic_actor_ratio: int = 2  # critic updates per actor+temperature update
    utd_ratio: float = 1.0  # critic updates per new environment transition
    actor_q_reduction: str = "mean"  # ensemble reduction in the actor loss: "mean" or "min"
    grasp_discount: float | None = None  # discount of the grasp critic (None: discount)
    gripper_penalty: float = -0.02  # reward per gripper command that changes the gripper state
    # Large-margin loss of the grasp critic on demonstration and intervention transitions
    # (DQfD): Q(s, a_expert) must exceed every other Q(s, a) by grasp_margin. The TD gap
    # between closing now and one step later is only about (1 - discount) * V, so without
    # it the greedy gripper hovers open at the cube. 0 weight: plain double DQN (HIL-SERL).
    grasp_margin: float = 0.1
    grasp_margin_weight: float = 1.0
    # Behaviour-cloning term of the actor on demonstration and intervention transitions:
    # weight * |tanh(mean(s)) - a_expert|^2 (summed over action dims). 0: pure RLPD.
    # docs/training.md has the measurements behind both defaults.
    actor_bc_weight: float = 0.5
    learning_starts: int = 100  # online transitions before the first update
    # Environment steps at the start whose (non-deterministic) actions are uniform
    # random instead of the policy's (RLPDAgent.act with env_step < random_steps).
    random_steps: int = 0
    seed: int = 0  # seeds torch, numpy and python RNGs of the learner

    def __post_init__(self) -> None:
        _check_positive_int(self, "batch_size")
        _check_finite(self, "discount", 0.0, 1.0)
        _check_finite(self, "tau", 0.0, 1.0, low_open=True)
        for name in ("critic_lr", "actor_lr", "temperature_lr", "initial_temperature"):
            _check_finite(self, name, 0.0, 1e3, low_open=True)
        if self.target_entropy is not None:
            _check_finite(self, "target_entropy")
        _check_finite(self, "target_entropy_scale", 0.0, 1e3)
        _check_positive_int(self, "critic_actor_ratio")
        _check_finite(self, "utd_ratio", 0.0, 1e4, low_open=True)
        _check_choice(self, "actor_q_reduction", ("mean", "min"))
        if self.grasp_discount is not None:
            _check_finite(self, "grasp_discount", 0.0, 1.0)
        _check_finite(self, "gripper_penalty", -1e3, 0.0)
        _check_finite(self, "grasp_margin", 0.0, 1e3)
        _check_finite(self, "grasp_margin_weight", 0.0, 1e3)
        _check_finite(self, "actor_bc_weight", 0.0, 1e3)
        _check_positive_int(self, "learning_starts", allow_zero=True)
        _check_positive_int(self, "random_steps", allow_zero=True)
        _check_positive_int(self, "seed", allow_zero=True)

    def resolved_target_entropy(self, action_dim: int) -> float:
        if self.target_entropy is not None:
            return float(self.target_entropy)
        return -self.target_entropy_scale * action_dim


@dataclass
class ReplayConfig:
    """Demo and online replay buffers and how batches mix them.

    Build the buffers with ``DemoOnlineReplay.from_config(spec, replay_config)``.
    ``demo_capacity = 0`` means no demo buffer: every batch is online,
    ``demo_fraction`` is ignored, intervention transitions go to the online
    buffer only, and adding a DEMO transition is an error.
    """

    online_capacity: int = 200_000  # transitions kept in the online buffer
    demo_capacity: int = 200_000  # transitions kept in the demo buffer (0: no demo buffer)
    frame_capacity_factor: float = 1.05  # observation frames stored per transition slot
    demo_fraction: float = 0.5  # share of each batch drawn from the demo buffer
    policy_weight: float = 1.0  # sampling weight of the policy's own transitions
    demo_weight: float = 1.0  # sampling weight of offline demonstration transitions
    intervention_weight: float = 1.0  # sampling weight of human-intervention transitions
    cache_frozen_features: bool = False  # frozen backbone: encode each stored frame once

    def __post_init__(self) -> None:
        _check_positive_int(self, "online_capacity")
        _check_positive_int(self, "demo_capacity", allow_zero=True)
        # Each transition needs one frame, plus one per episode start.
        _check_finite(self, "frame_capacity_factor", 1.0, 2.0)
        _check_finite(self, "demo_fraction", 0.0, 1.0)
        for name in ("policy_weight", "demo_weight", "intervention_weight"):
            _check_finite(self, name, 0.0, 1e6, low_open=True)

    @property
    def source_weights(self) -> tuple[float, float, float]:
        """Sampling weights indexed by ``TransitionSource`` (policy, demo, intervention)."""
        return (self.policy_weight, self.demo_weight, self.intervention_weight)


@dataclass
class CheckpointConfig:
    """Where and how checkpoints are written."""

    directory: str = "checkpoints"  # root folder (save_checkpoint's root); one sub-folder each
    keep_last: int = 2  # complete checkpoints kept (save_checkpoint's keep_last)
    include_buffers: bool = True  # pass the replay to save_checkpoint (needed for exact resume)
    verify_digests: bool = True  # load_checkpoint's check_digests: sha256 of every file

    def __post_init__(self) -> None:
        if not isinstance(self.directory, str) or not self.directory:
            _fail(self, "directory", "must be a non-empty path")
        _check_positive_int(self, "keep_last")


@dataclass
class LearnerConfig:
    """Everything a learner needs; saved as config.json next to each checkpoint."""

    spec: ObservationSpec = field(default_factory=lambda: ObservationSpec(state_dim=1))
    networks: NetworkConfig = field(default_factory=NetworkConfig)
    rlpd: RLPDConfig = field(default_factory=RLPDConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)

    def __post_init__(self) -> None:
        pad = self.networks.encoder.random_shift_pad
        if self.replay.cache_frozen_features:
            if not self.networks.encoder.freeze_backbone:
                _fail(self.replay, "cache_frozen_features", "needs networks.encoder.freeze_backbone")
            if pad > 0:
                # Cached features were computed from unshifted pixels; a shift cannot apply.
                _fail(self.replay, "cache_frozen_features",
                      f"incompatible with random_shift_pad={pad} (set it to 0)")

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LearnerConfig":
        return config_from_dict(cls, data)

    def save_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True))

    @classmethod
    def load_json(cls, path: str | Path) -> "LearnerConfig":
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}: cannot read learner config ({error})") from error
        return cls.from_dict(data)

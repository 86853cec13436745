"""Policy weights as safetensors bytes (learner -> actor), and the policy that acts on them.

``export_policy(agent, version)`` packs everything an actor needs to act, and
nothing it does not (no critic ensemble, no target networks, no optimiser):

- ``encoder/*``       the observation encoder's state_dict, including its state
                      normalisation buffers (``StateNormalizer``) when used;
- ``actor/*``         the tanh-Gaussian actor;
- ``grasp_critic/*``  the 3-way gripper critic (when the spec has a gripper);

plus, in the safetensors metadata, the ObservationSpec and NetworkConfig as
JSON, the version and the warm-up length (``random_steps``). The bytes are a
standard safetensors file: nothing is ever unpickled.

``InferencePolicy.from_bytes(data, sha256=...)`` checks the digest, the format,
the key set and every tensor's shape before building the networks, and
``act`` gives the same actions as ``RLPDAgent.act`` on the same weights (the
gripper as an ``Action.GRIPPER_*`` command in {-1, 0, 1} instead of an index).
Every failure is a ``PolicyFormatError`` naming what is wrong.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import numpy as np
import torch

from hilserl_policy.config import NetworkConfig, ObservationSpec, config_from_dict, config_to_dict
from hilserl_policy.encoders import STATE_KEY, ObservationEncoder
from hilserl_policy.networks import (
    NUM_GRIPPER_ACTIONS,
    GraspCritic,
    TanhGaussianActor,
    gripper_index_to_command,
    select_gripper_action,
)

FORMAT = "safetensors"  # PolicyParams.format
FORMAT_NAME = "hilserl-policy"
FORMAT_VERSION = "1"
EXPORTED_MODULES = ("encoder", "actor", "grasp_critic")


class PolicyFormatError(ValueError):
    """Policy bytes that cannot be used: wrong digest, format, keys or shapes."""


def _agent_modules(agent) -> dict[str, torch.nn.Module]:
    modules = {"encoder": agent.encoder, "actor": agent.actor}
    if getattr(agent, "grasp_critic", None) is not None:
        modules["grasp_critic"] = agent.grasp_critic
    return modules


def export_policy(agent, version: int) -> bytes:
    """Safetensors bytes of ``agent``'s encoder, actor and grasp critic (see module doc).

    ``agent``: an ``RLPDAgent`` (or anything with ``config``, ``encoder``,
    ``actor`` and ``grasp_critic``); ``version``: a non-negative int.
    """
    from safetensors.torch import save

    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ValueError(f"version must be an int >= 0, got {version!r}")
    tensors = {}
    for name, module in _agent_modules(agent).items():
        for key, value in module.state_dict().items():
            tensors[f"{name}/{key}"] = value.detach().cpu().contiguous().clone()
    config = agent.config
    metadata = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "version": str(version),
                "spec": json.dumps(config_to_dict(config.spec), sort_keys=True),
                "networks": json.dumps(config_to_dict(config.networks), sort_keys=True),
                "random_steps": str(int(getattr(config.rlpd, "random_steps", 0)))}
    return save(tensors, metadata=metadata)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _differences(a: Any, b: Any) -> list[str]:
    da, db = config_to_dict(a), config_to_dict(b)
    return [f"{k}={da[k]!r} (expected {db[k]!r})" for k in da if da[k] != db.get(k)]


class InferencePolicy:
    """Encoder + actor (+ grasp critic) rebuilt from exported bytes, in eval mode."""

    def __init__(self, spec: ObservationSpec, networks: NetworkConfig, version: int,
                 tensors: dict[str, torch.Tensor], random_steps: int = 0):
        self.spec = spec
        self.networks = networks
        self.version = version
        self.random_steps = random_steps
        # Weights come from the bytes: never read a pretrained file on the actor side.
        encoder_config = dataclasses.replace(networks.encoder, pretrained_path=None)
        self.encoder = ObservationEncoder(spec, encoder_config)
        self.actor = TanhGaussianActor(self.encoder.output_dim, spec.action_dim, networks.actor)
        self.grasp_critic = GraspCritic(self.encoder.output_dim, networks.grasp_critic) \
            if spec.has_gripper else None
        modules = {"encoder": self.encoder, "actor": self.actor}
        if self.grasp_critic is not None:
            modules["grasp_critic"] = self.grasp_critic
        expected = {f"{name}/{key}": value for name, module in modules.items()
                    for key, value in module.state_dict().items()}
        missing = sorted(set(expected) - set(tensors))
        unexpected = sorted(set(tensors) - set(expected))
        if missing or unexpected:
            raise PolicyFormatError(f"policy weights: tensors do not match the networks of this spec: "
                                    f"missing {missing[:5]}, unexpected {unexpected[:5]}")
        for key, value in expected.items():
            got = tensors[key]
            if tuple(got.shape) != tuple(value.shape):
                raise PolicyFormatError(f"policy weights: {key} has shape {tuple(got.shape)}, "
                                        f"the networks expect {tuple(value.shape)}")
            if got.dtype != value.dtype:
                raise PolicyFormatError(f"policy weights: {key} has dtype {got.dtype}, "
                                        f"the networks expect {value.dtype}")
            if got.is_floating_point() and not torch.isfinite(got).all():
                raise PolicyFormatError(f"policy weights: {key} holds NaN or inf")
        for name, module in modules.items():
            prefix = f"{name}/"
            module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items()
                                    if k.startswith(prefix)})
            module.eval()

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_bytes(cls, data: bytes, sha256: str, expect_spec: ObservationSpec | None = None
                   ) -> "InferencePolicy":
        """Check ``data`` against ``sha256`` (hex) and build the policy.

        ``expect_spec``: the actor's own observation spec; weights for another
        spec are refused, naming the fields that differ.
        """
        from safetensors.torch import load

        data = bytes(data)
        digest = sha256_hex(data)
        if not isinstance(sha256, str) or digest != sha256.strip().lower():
            raise PolicyFormatError(f"policy weights: sha256 mismatch (data hashes to {digest}, "
                                    f"expected {sha256!r}): corrupt or tampered bytes")
        try:
            tensors = load(data)
        except Exception as error:  # safetensors raises its own error types
            raise PolicyFormatError(f"policy weights: not a safetensors file ({error})") from error
        metadata = _read_metadata(data)
        if metadata.get("format") != FORMAT_NAME:
            raise PolicyFormatError(f"policy weights: metadata format is {metadata.get('format')!r}, "
                                    f"expected {FORMAT_NAME!r}")
        if metadata.get("format_version") != FORMAT_VERSION:
            raise PolicyFormatError(f"policy weights: format_version {metadata.get('format_version')!r} "
                                    f"is not supported (this code reads {FORMAT_VERSION!r})")
        try:
            spec = config_from_dict(ObservationSpec, json.loads(metadata["spec"]))
            networks = config_from_dict(NetworkConfig, json.loads(metadata["networks"]))
            version = int(metadata["version"])
            random_steps = int(metadata.get("random_steps", "0"))
        except (KeyError, ValueError, TypeError) as error:
            raise PolicyFormatError(f"policy weights: bad metadata ({error})") from error
        if expect_spec is not None and spec != expect_spec:
            raise PolicyFormatError("policy weights: observation spec differs from this actor's: "
                                    + ", ".join(_differences(spec, expect_spec)))
        return cls(spec, networks, version, tensors, random_steps)

    # ----------------------------------------------------------------- acting
    def _check_observation(self, observation: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        spec = self.spec
        obs = {}
        if spec.state_dim:
            if STATE_KEY not in observation:
                raise ValueError(f"observation: missing {STATE_KEY!r}")
            state = np.asarray(observation[STATE_KEY])
            if state.shape != (spec.state_dim,):
                raise ValueError(f"observation: {STATE_KEY!r} has shape {state.shape}, "
                                 f"expected ({spec.state_dim},)")
            if not np.all(np.isfinite(state)):
                raise ValueError(f"observation: {STATE_KEY!r} holds NaN or inf")
            obs[STATE_KEY] = torch.from_numpy(state.astype(np.float32))[None]
        size = spec.image_size
        for camera in spec.camera_names:
            if camera not in observation:
                raise ValueError(f"observation: missing camera {camera!r}")
            image = np.asarray(observation[camera])
            if image.shape != (size, size, 3) or image.dtype != np.uint8:
                raise ValueError(f"observation: {camera!r} is {image.dtype}{image.shape}, "
                                 f"expected uint8({size}, {size}, 3)")
            obs[camera] = torch.from_numpy(np.ascontiguousarray(image))[None]
        return obs

    @torch.no_grad()
    def act(self, observation: dict[str, np.ndarray], deterministic: bool,
            env_step: int = 0) -> tuple[np.ndarray, int | None]:
        """(continuous action (action_dim,) in [-1, 1], gripper command in {-1, 0, 1} or None).

        Same computation as ``RLPDAgent.act``: the mean action when
        ``deterministic``, else a sample (torch's global RNG), with the warm-up
        (``random_steps``) and the gripper exploration schedule at ``env_step``.
        """
        if not deterministic and env_step < self.random_steps:
            # RLPDAgent draws warm-up actions from its own generator; an actor has none
            # of the learner's state, so it draws from torch's.
            action = torch.rand(self.spec.action_dim) * 2.0 - 1.0
            gripper = None
            if self.grasp_critic is not None:
                gripper = gripper_index_to_command(int(torch.randint(0, NUM_GRIPPER_ACTIONS, ())))
            return action.numpy(), gripper
        features = self.encoder(self._check_observation(observation), augment=False)
        if deterministic:
            action = self.actor.mean_action(features)
        else:
            action = self.actor.sample(features)[0]
        gripper = None
        if self.grasp_critic is not None:
            index = select_gripper_action(self.grasp_critic(features),
                                          self.networks.gripper_exploration, env_step, deterministic)
            gripper = gripper_index_to_command(int(index[0]))
        return action[0].numpy(), gripper


def _read_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of safetensors bytes (header parsed without loading tensors)."""
    import struct

    if len(data) < 8:
        raise PolicyFormatError("policy weights: shorter than a safetensors header")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > len(data) - 8:
        raise PolicyFormatError("policy weights: safetensors header length exceeds the data")
    try:
        header = json.loads(data[8:8 + header_len])
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PolicyFormatError(f"policy weights: unreadable safetensors header ({error})") from error
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(metadata, dict):
        raise PolicyFormatError("policy weights: no metadata (not exported by export_policy)")
    return metadata

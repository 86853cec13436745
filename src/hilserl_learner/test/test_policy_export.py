"""Policy export: bytes -> InferencePolicy acts exactly like the RLPDAgent it came from.

Lives with the learner's tests because it needs ``RLPDAgent`` (hilserl_policy
does not depend on hilserl_learner).
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch

from hilserl_learner.config import LearnerConfig, RLPDConfig
from hilserl_learner.rlpd import RLPDAgent
from hilserl_policy.config import (
    ActorConfig,
    CriticConfig,
    EncoderConfig,
    GraspCriticConfig,
    NetworkConfig,
    ObservationSpec,
)
from hilserl_policy.policy_export import InferencePolicy, PolicyFormatError, export_policy, sha256_hex


def make_agent(cameras=(), has_gripper=True, normalization="none", seed=0) -> RLPDAgent:
    kwargs = {}
    if normalization == "bounds":
        kwargs = dict(state_low=(-1.0,) * 5, state_high=(2.0,) * 5)
    spec = ObservationSpec(state_dim=5, action_dim=3, camera_names=cameras, image_size=16,
                           has_gripper=has_gripper, state_normalization=normalization, **kwargs)
    nets = NetworkConfig(
        encoder=EncoderConfig(small_cnn_channels=(4, 4), image_latent_dim=8, state_latent_dim=4),
        actor=ActorConfig(hidden_dims=(16, 16)),
        critic=CriticConfig(hidden_dims=(16, 16)),
        grasp_critic=GraspCriticConfig(hidden_dims=(16,)))
    agent = RLPDAgent(LearnerConfig(spec=spec, networks=nets, rlpd=RLPDConfig(seed=seed)))
    with torch.no_grad():  # move every weight away from its initialisation
        for module in agent.modules().values():
            for param in module.parameters():
                param.add_(0.05 * torch.randn_like(param))
    return agent


def observation(spec: ObservationSpec, rng: np.random.Generator) -> dict[str, np.ndarray]:
    obs = {"state": rng.normal(size=spec.state_dim).astype(np.float32)}
    for camera in spec.camera_names:
        obs[camera] = rng.integers(0, 256, (spec.image_size, spec.image_size, 3), dtype=np.uint8)
    return obs


@pytest.mark.parametrize("cameras,normalization", [((), "none"), ((), "running"),
                                                   (("front", "wrist"), "bounds")])
def test_round_trip_acts_like_the_agent(cameras, normalization):
    agent = make_agent(cameras, normalization=normalization)
    rng = np.random.default_rng(1)
    if normalization == "running":
        agent.encoder.state_normalizer.update(rng.normal(3.0, 2.0, (100, 5)))
    data = export_policy(agent, version=7)
    policy = InferencePolicy.from_bytes(data, sha256=sha256_hex(data), expect_spec=agent.config.spec)
    assert policy.version == 7 and policy.spec == agent.config.spec
    if normalization == "running":  # the running statistics travelled with the weights
        assert torch.equal(policy.encoder.state_normalizer.shift, agent.encoder.state_normalizer.shift)
        assert float(policy.encoder.state_normalizer.shift.mean()) == pytest.approx(3.0, abs=0.5)
    for _ in range(5):
        obs = observation(agent.config.spec, rng)
        expected, expected_index = agent.act(obs, deterministic=True)
        action, gripper = policy.act(obs, deterministic=True)
        assert action.shape == (3,) and action.dtype == np.float32
        np.testing.assert_array_equal(action, expected)
        assert gripper == expected_index - 1 and gripper in (-1, 0, 1)
        # Stochastic acting draws the same numbers from the same RNG state.
        torch.manual_seed(123)
        expected, expected_index = agent.act(obs, deterministic=False, env_step=50)
        torch.manual_seed(123)
        action, gripper = policy.act(obs, deterministic=False, env_step=50)
        np.testing.assert_array_equal(action, expected)
        assert gripper == expected_index - 1


def test_only_what_the_actor_needs_travels():
    from safetensors.torch import load

    agent = make_agent(cameras=("front",))
    names = set(load(export_policy(agent, 1)))
    assert {n.split("/")[0] for n in names} == {"encoder", "actor", "grasp_critic"}
    no_gripper = set(load(export_policy(make_agent(has_gripper=False), 1)))
    assert {n.split("/")[0] for n in no_gripper} == {"actor"}  # state-only encoder has no tensors
    assert not any(n.startswith(("critic/", "target_")) for n in names | no_gripper)
    assert InferencePolicy.from_bytes(data := export_policy(make_agent(has_gripper=False), 2),
                                      sha256_hex(data)).act(
        observation(ObservationSpec(state_dim=5), np.random.default_rng(0)), True)[1] is None


def test_wrong_digest_is_refused():
    data = export_policy(make_agent(), 1)
    with pytest.raises(PolicyFormatError, match="sha256 mismatch"):
        InferencePolicy.from_bytes(data, sha256="0" * 64)
    flipped = bytearray(data)
    flipped[-10] ^= 1
    with pytest.raises(PolicyFormatError, match="sha256 mismatch"):
        InferencePolicy.from_bytes(bytes(flipped), sha256=sha256_hex(data))


def test_not_safetensors_is_refused():
    junk = b"\x80\x04pickle-looking bytes"
    with pytest.raises(PolicyFormatError, match="not a safetensors file"):
        InferencePolicy.from_bytes(junk, sha256_hex(junk))
    truncated = export_policy(make_agent(), 1)[:-100]
    with pytest.raises(PolicyFormatError, match="not a safetensors file"):
        InferencePolicy.from_bytes(truncated, sha256_hex(truncated))


def _rewrite(data: bytes, edit) -> bytes:
    """Safetensors bytes with their JSON header changed by ``edit(header)``."""
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    edit(header)
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    return struct.pack("<Q", len(new)) + new + data[8 + length:]


def test_wrong_format_or_metadata_is_refused():
    data = export_policy(make_agent(), 1)
    other = _rewrite(data, lambda h: h["__metadata__"].update(format="something-else"))
    with pytest.raises(PolicyFormatError, match="format is 'something-else'"):
        InferencePolicy.from_bytes(other, sha256_hex(other))
    newer = _rewrite(data, lambda h: h["__metadata__"].update(format_version="99"))
    with pytest.raises(PolicyFormatError, match="format_version '99'"):
        InferencePolicy.from_bytes(newer, sha256_hex(newer))
    bare = _rewrite(data, lambda h: h.pop("__metadata__"))
    with pytest.raises(PolicyFormatError, match="no metadata"):
        InferencePolicy.from_bytes(bare, sha256_hex(bare))


def test_wrong_shapes_are_refused_naming_the_tensor():
    from safetensors.torch import save

    agent = make_agent()
    data = export_policy(agent, 1)
    (length,) = struct.unpack("<Q", data[:8])
    metadata = json.loads(data[8:8 + length])["__metadata__"]
    spec = json.loads(metadata["spec"])
    spec["state_dim"] = 6  # metadata says 6, weights are for 5
    metadata["spec"] = json.dumps(spec)
    from safetensors.torch import load

    tensors = load(data)
    bad = save(tensors, metadata=metadata)
    with pytest.raises(PolicyFormatError, match=r"actor/.*has shape .*expect"):
        InferencePolicy.from_bytes(bad, sha256_hex(bad))
    tensors.pop(sorted(k for k in tensors if k.startswith("grasp_critic/"))[-1])
    missing = save(tensors, metadata=json.loads(data[8:8 + length])["__metadata__"])
    with pytest.raises(PolicyFormatError, match="missing"):
        InferencePolicy.from_bytes(missing, sha256_hex(missing))


def test_spec_mismatch_names_the_fields():
    agent = make_agent()
    data = export_policy(agent, 1)
    other = ObservationSpec(state_dim=5, action_dim=4, has_gripper=True)
    with pytest.raises(PolicyFormatError, match=r"action_dim=3 \(expected 4\)"):
        InferencePolicy.from_bytes(data, sha256_hex(data), expect_spec=other)


def test_bad_observation_is_refused():
    agent = make_agent(cameras=("front",))
    data = export_policy(agent, 1)
    policy = InferencePolicy.from_bytes(data, sha256_hex(data))
    obs = observation(agent.config.spec, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"'state' has shape \(4,\)"):
        policy.act({**obs, "state": np.zeros(4, np.float32)}, True)
    with pytest.raises(ValueError, match="missing camera 'front'"):
        policy.act({"state": obs["state"]}, True)
    with pytest.raises(ValueError, match=r"'front' is float32"):
        policy.act({**obs, "front": obs["front"].astype(np.float32)}, True)
    with pytest.raises(ValueError, match="NaN"):
        policy.act({**obs, "state": np.full(5, np.nan, np.float32)}, True)


def test_bad_version_is_refused():
    with pytest.raises(ValueError, match="version"):
        export_policy(make_agent(), -1)

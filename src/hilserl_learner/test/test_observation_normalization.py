"""State normalisation travels with a checkpoint and acts identically after loading."""

import numpy as np
import pytest
import torch

from hilserl_learner.buffers import DemoOnlineReplay
from hilserl_learner.checkpoint import load_checkpoint, save_checkpoint
from hilserl_learner.config import LearnerConfig, ReplayConfig
from hilserl_learner.rlpd import RLPDAgent
from hilserl_policy.config import ActorConfig, CriticConfig, NetworkConfig, ObservationSpec


def config(normalization, seed=0):
    bounds = {"state_low": (-1.0, 0.0, 5.0), "state_high": (1.0, 10.0, 6.0)} \
        if normalization == "bounds" else {}
    spec = ObservationSpec(state_dim=3, action_dim=2, has_gripper=True,
                           state_normalization=normalization, **bounds)
    nets = NetworkConfig(actor=ActorConfig(hidden_dims=(16,)), critic=CriticConfig(hidden_dims=(16,)))
    return LearnerConfig(spec=spec, networks=nets, replay=ReplayConfig(online_capacity=10, demo_capacity=0))


@pytest.mark.parametrize("normalization", ["running", "bounds"])
def test_normalisation_is_saved_restored_and_identical_at_act_time(tmp_path, normalization):
    agent = RLPDAgent(config(normalization))
    states = np.random.default_rng(1).normal([0.3, 4.0, 5.5], [0.5, 3.0, 0.2], (200, 3))
    agent.observe_states(states)
    obs = {"state": np.array([0.1, 7.0, 5.2], np.float32)}
    before = agent.act(obs, deterministic=True)
    replay = DemoOnlineReplay.from_config(agent.config.spec, agent.config.replay)
    folder = save_checkpoint(tmp_path, agent, replay)

    fresh = RLPDAgent(config(normalization, seed=0))
    norm = fresh.encoder.state_normalizer
    if normalization == "running":
        assert float(norm.count) == 0  # nothing seen yet: differs from the saved agent
    load_checkpoint(folder, fresh, replay)
    for key, value in agent.encoder.state_normalizer.state_dict().items():
        torch.testing.assert_close(norm.state_dict()[key], value, rtol=0, atol=0)
    after = fresh.act(obs, deterministic=True)
    np.testing.assert_array_equal(after[0], before[0])
    assert after[1] == before[1]
    # The statistics are what the encoder applies at act time.
    expected = (obs["state"] - norm.shift.numpy()) * norm.scale.numpy()
    features = fresh.encoder({"state": torch.from_numpy(obs["state"])[None]})[0].numpy()
    np.testing.assert_allclose(features, np.clip(expected, -5, 5), rtol=1e-6)
    if normalization == "running":
        np.testing.assert_allclose(norm.mean.numpy(), states.mean(0), rtol=1e-9)

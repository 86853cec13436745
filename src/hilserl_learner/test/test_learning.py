"""The whole update learns: sparse-reward 2-D point reaching from 5 scripted demos.

Budget: 2,500 environment steps at update-to-data 2 (~5,000 updates), about
10-15 s of one CPU core. Before training the policy succeeds in under 30% of
episodes; after, it must succeed in at least 80% (seeds 1-4 reach 100% by
2,000 steps when tuned; the margin is for platform noise).
"""

import numpy as np
import pytest
import torch

from hilserl_learner.buffers import DemoOnlineReplay, TransitionSource
from hilserl_learner.config import LearnerConfig, RLPDConfig
from hilserl_learner.rlpd import RLPDAgent, UpdateSchedule
from hilserl_policy.config import ActorConfig, CriticConfig, NetworkConfig, ObservationSpec

GOAL = np.array([0.5, 0.5], np.float32)
STEP_SIZE, HORIZON, RADIUS = 0.2, 20, 0.2


class PointReach:
    """Point in [-1.2, 1.2]^2; reward 1 and termination within RADIUS of GOAL; time-out at HORIZON."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def reset(self):
        self.position = self.rng.uniform(-1, 1, 2).astype(np.float32)
        self.t = 0
        return {"state": self.position.copy()}

    def step(self, action):
        move = STEP_SIZE * np.clip(action, -1, 1)
        self.position = np.clip(self.position + move, -1.2, 1.2).astype(np.float32)
        self.t += 1
        success = bool(np.linalg.norm(self.position - GOAL) < RADIUS)
        truncated = self.t >= HORIZON and not success
        return {"state": self.position.copy()}, float(success), success, truncated


def success_rate(agent, episodes=50, seed=123):
    env, wins = PointReach(seed), 0
    for _ in range(episodes):
        obs, done = env.reset(), False
        while not done:
            obs, _, terminated, truncated = env.step(agent.act(obs, deterministic=True)[0])
            done = terminated or truncated
            wins += terminated
    return wins / episodes


@pytest.mark.parametrize("critic_precision", ["float32", "bfloat16"])
def test_rlpd_learns_point_reaching_from_five_demos(critic_precision):
    torch.set_num_threads(1)
    spec = ObservationSpec(state_dim=2, action_dim=2)
    config = LearnerConfig(
        spec=spec,
        networks=NetworkConfig(actor=ActorConfig(hidden_dims=(64, 64)),
                               critic=CriticConfig(hidden_dims=(64, 64),
                                                   matmul_precision=critic_precision)),
        rlpd=RLPDConfig(batch_size=128, utd_ratio=2.0, discount=0.9, seed=2, learning_starts=100))
    agent = RLPDAgent(config)
    replay = DemoOnlineReplay(spec, online_capacity=5000, demo_capacity=500)
    env, demo_rng = PointReach(seed=2), np.random.default_rng(3)
    for _ in range(5):  # scripted demos: head for the goal, with a little noise
        obs, done = env.reset(), False
        while not done:
            action = np.clip((GOAL - obs["state"]) / STEP_SIZE + demo_rng.normal(0, 0.1, 2), -1, 1)
            nxt, reward, terminated, truncated = env.step(action)
            replay.add(obs, action.astype(np.float32), reward, nxt, terminated, truncated,
                       source=TransitionSource.DEMO)
            obs, done = nxt, terminated or truncated
    assert 5 <= len(replay.demo) <= 50 and replay.demo.terminated.sum() == 5

    before = success_rate(agent)
    schedule, updates, obs = UpdateSchedule(config.rlpd.utd_ratio, 100), 0, env.reset()
    for _ in range(2500):
        action, _ = agent.act(obs, deterministic=False)
        nxt, reward, terminated, truncated = env.step(action)
        replay.add(obs, action, reward, nxt, terminated, truncated)
        obs = env.reset() if terminated or truncated else nxt
        for _ in range(schedule.updates_due(len(replay.online), updates)):
            agent.update(replay.sample(config.rlpd.batch_size, agent.rng))
            updates += 1
    after = success_rate(agent)
    assert updates == 2 * (2500 - 100 + 1)
    assert before < 0.3
    assert after >= 0.8, f"success {after:.2f} after {updates} updates (before: {before:.2f})"

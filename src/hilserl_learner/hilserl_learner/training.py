"""A small, ROS-free RLPD training loop over a pick-cube-style gymnasium env.

What the sample-efficiency benchmark runs, and the reference for the learner
node's loop. Steps, in order:

1. ``collect_expert_demos``: scripted-expert episodes into the demo buffer
   (``TransitionSource.DEMO``); their states also feed the running state
   statistics (``RLPDAgent.observe_states``).
2. ``train``: per env step, the simulated human (if any) decides whether it
   acts (``TransitionSource.INTERVENTION``: both buffers) or the policy does
   (``RLPDAgent.act``, random during ``RLPDConfig.random_steps``); the
   transition is stored with its gripper index and penalty; then the updates
   due at ``RLPDConfig.utd_ratio`` run (``UpdateSchedule``). Every
   ``eval_every`` env steps, ``evaluate`` runs deterministic episodes on fixed
   seeds and appends an ``EvalPoint`` to the curve.

The env must behave like ``hilserl_sim.pick_cube_env.PickCubeEnv``: Dict
observation ``{"state": ...}``, Dict action ``{"deltas": (3,), "gripper":
index}``, ``info["success"]``, ``info["gripper_penalty"]`` and
``info["sim_state"]`` (end effector, cube, gripper opening for the experts).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

import numpy as np
import torch

from hilserl_learner.buffers import DemoOnlineReplay, TransitionSource
from hilserl_learner.config import LearnerConfig
from hilserl_learner.rlpd import RLPDAgent, UpdateSchedule, metrics_to_floats
from hilserl_policy.networks import gripper_command_to_index


@dataclasses.dataclass
class TrainingConfig:
    """Budget and schedule of one training run (the learner's own settings live in LearnerConfig)."""

    total_env_steps: int = 10_000  # online environment steps
    num_demos: int = 20  # scripted-expert demo episodes (successful ones are kept)
    demo_seed: int = 1_000_000  # demo episode k uses seed demo_seed + k
    eval_every: int = 1_000  # env steps between evaluations (0: none)
    eval_episodes: int = 50  # deterministic episodes per evaluation
    eval_seed: int = 2_000_000  # evaluation episode i uses seed eval_seed + i (same every time)
    train_seed: int = 0  # training episode k uses seed train_seed * 100_003 + k
    max_wall_s: float = 0.0  # stop after this many seconds (0: no limit); the curve so far is kept
    # Act on exported weights refreshed every this many updates, as the graph's actor does
    # with the learner's publish_every_updates (0: act with the learner's own networks).
    weights_every_updates: int = 0

    def __post_init__(self) -> None:
        for name in ("total_env_steps", "num_demos", "eval_every", "eval_episodes",
                     "demo_seed", "eval_seed", "train_seed", "weights_every_updates"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"TrainingConfig.{name} must be an int >= 0, got {value!r}")
        if self.eval_every and self.eval_episodes == 0:
            raise ValueError("TrainingConfig.eval_episodes must be > 0 when eval_every > 0")
        if not (math.isfinite(self.max_wall_s) and self.max_wall_s >= 0):
            raise ValueError(f"TrainingConfig.max_wall_s must be a finite number >= 0, got {self.max_wall_s!r}")


@dataclasses.dataclass
class EvalPoint:
    """One evaluation on the learning curve."""

    env_step: int  # online env steps done before this evaluation
    success_rate: float  # deterministic policy, eval_episodes fixed seeds
    mean_length: float  # mean episode length of those episodes
    intervention_rate: float  # share of the env steps since the last point in human control
    updates: int  # gradient updates done
    wall_s: float  # seconds since train() started


@dataclasses.dataclass
class TrainingResult:
    curve: list[EvalPoint]
    agent: RLPDAgent
    replay: DemoOnlineReplay
    demo_transitions: int
    intervention_steps: int
    last_metrics: dict[str, float]
    env_steps: int = 0  # online env steps done (less than the budget if max_wall_s stopped it)
    weights_exported: int = 0  # weights_every_updates: exports the acting policy was built from

    def steps_to(self, threshold: float) -> int | None:
        """First evaluated env step with success >= threshold (None: never)."""
        return next((p.env_step for p in self.curve if p.success_rate >= threshold), None)


def _expert_inputs(info: dict) -> tuple[np.ndarray, np.ndarray, float]:
    state = info["sim_state"]
    return state.ee_position, state.cube_position, state.gripper_opening


def collect_expert_demos(env, agent: RLPDAgent, replay: DemoOnlineReplay, num_demos: int,
                         seed: int, expert) -> tuple[int, int]:
    """Run ``num_demos`` episodes of ``expert`` (a ``ScriptedExpert``) and store the
    successful ones as DEMO transitions. Returns (successful episodes, transitions)."""
    successes = transitions = 0
    for k in range(num_demos):
        obs, info = env.reset(seed=seed + k)
        expert.reset(seed=seed + k)
        episode = []
        done = False
        while not done:
            deltas, command = expert.act(*_expert_inputs(info))
            action = np.clip(np.asarray(deltas[:3], np.float32), -1.0, 1.0)
            gripper = gripper_command_to_index(command)
            nxt, reward, terminated, truncated, info = env.step({"deltas": action, "gripper": gripper})
            episode.append((obs, action, reward, nxt, terminated, truncated, gripper,
                            info["gripper_penalty"]))
            obs, done = nxt, terminated or truncated
        if not info["success"]:
            continue  # a failed demonstration is not a demonstration
        successes += 1
        agent.observe_states(np.stack([episode[0][0]["state"]] + [t[3]["state"] for t in episode]))
        for obs, action, reward, nxt, terminated, truncated, gripper, penalty in episode:
            replay.add(obs, action, reward, nxt, terminated, truncated, source=TransitionSource.DEMO,
                       gripper_action=gripper, gripper_penalty=penalty)
            transitions += 1
    return successes, transitions


def evaluate(agent: RLPDAgent, env, episodes: int, seed: int) -> tuple[float, float]:
    """Deterministic policy on episodes seeded ``seed .. seed + episodes - 1``:
    (success rate, mean episode length)."""
    wins, lengths = 0, []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        done, length, info = False, 0, {"success": False}
        while not done:
            action, gripper = agent.act(obs, deterministic=True)
            obs, _, terminated, truncated, info = env.step({"deltas": action, "gripper": gripper})
            length += 1
            done = terminated or truncated
        wins += bool(info["success"])
        lengths.append(length)
    return wins / episodes, float(np.mean(lengths))


class _ExportedWeights:
    """Acts like the graph's actor: on the agent's weights as last exported (``refresh``)."""

    def __init__(self, agent: RLPDAgent):
        self.agent = agent
        self.version = 0
        self.refresh()

    def refresh(self) -> None:
        from hilserl_policy.policy_export import InferencePolicy, export_policy, sha256_hex

        self.version += 1
        data = export_policy(self.agent, self.version)
        self.policy = InferencePolicy.from_bytes(data, sha256_hex(data))

    def act(self, observation, deterministic: bool, env_step: int = 0):
        action, command = self.policy.act(observation, deterministic, env_step)
        return action, (None if command is None else gripper_command_to_index(command))


def train(env, config: LearnerConfig, training: TrainingConfig, expert=None, human=None,
          eval_env=None, progress: Callable[[EvalPoint], None] | None = None) -> TrainingResult:
    """Demos, then online RLPD with optional simulated-human interventions; returns the curve.

    ``expert``: a ``ScriptedExpert`` for the demos (required if ``num_demos`` > 0).
    ``human``: a ``SimulatedHuman`` (``reset``/``decide``/``end_episode``) or None.
    ``eval_env``: a separate env for evaluations (default: ``env``; a fresh
    training episode starts after each evaluation either way).
    """
    if training.num_demos and expert is None:
        raise ValueError("train: num_demos > 0 needs an expert")
    if training.num_demos and config.replay.demo_capacity == 0:
        raise ValueError("train: num_demos > 0 needs replay.demo_capacity > 0")
    start = time.monotonic()
    agent = RLPDAgent(config)
    replay = DemoOnlineReplay.from_config(config.spec, config.replay, agent.encoder.feature_shapes)
    _, demo_transitions = (collect_expert_demos(env, agent, replay, training.num_demos,
                                                training.demo_seed, expert)
                           if training.num_demos else (0, 0))
    eval_env = eval_env or env
    schedule = UpdateSchedule(config.rlpd.utd_ratio, config.rlpd.learning_starts)
    curve: list[EvalPoint] = []
    updates = episode = step_in_episode = interventions = window_interventions = 0
    metrics: dict[str, torch.Tensor] = {}

    def new_episode():
        nonlocal episode, step_in_episode
        obs, info = env.reset(seed=training.train_seed * 100_003 + episode)
        if human is not None:
            human.reset(episode)
        episode += 1
        step_in_episode = 0
        agent.observe_states(obs["state"])
        return obs, info

    acting = _ExportedWeights(agent) if training.weights_every_updates else agent
    obs, info = new_episode()
    done_steps = 0
    for env_step in range(training.total_env_steps):
        if training.max_wall_s and time.monotonic() - start >= training.max_wall_s:
            break
        intervening = False
        if human is not None:
            intervening, deltas, command = human.decide(step_in_episode, *_expert_inputs(info))
        if intervening:
            action = np.clip(deltas, -1.0, 1.0).astype(np.float32)
            gripper = gripper_command_to_index(command)
            source = TransitionSource.INTERVENTION
            interventions += 1
            window_interventions += 1
        else:
            action, gripper = acting.act(obs, deterministic=False, env_step=env_step)
            source = TransitionSource.POLICY
        nxt, reward, terminated, truncated, info = env.step({"deltas": action, "gripper": gripper})
        replay.add(obs, action, reward, nxt, terminated, truncated, source=source,
                   gripper_action=gripper, gripper_penalty=info["gripper_penalty"])
        agent.observe_states(nxt["state"])
        step_in_episode += 1
        for _ in range(schedule.updates_due(replay.online.num_added, updates)):
            replay.refresh_features(agent.encode_for_cache)  # no-op without a feature cache
            metrics = agent.update(replay.sample(config.rlpd.batch_size, agent.rng))
            updates += 1
            if training.weights_every_updates and updates % training.weights_every_updates == 0:
                acting.refresh()
        if terminated or truncated:
            if human is not None:
                human.end_episode(bool(info["success"]))
            obs, info = new_episode()
        else:
            obs = nxt
        done_steps = env_step + 1
        if training.eval_every and done_steps % training.eval_every == 0:
            rate, length = evaluate(agent, eval_env, training.eval_episodes, training.eval_seed)
            point = EvalPoint(done_steps, rate, length, window_interventions / training.eval_every,
                              updates, time.monotonic() - start)
            window_interventions = 0
            curve.append(point)
            if human is not None and hasattr(human, "observe_success_rate") and \
                    human.rule.kind == "success_rate":
                human.observe_success_rate(rate)
            if progress is not None:
                progress(point)
            if eval_env is env:
                obs, info = new_episode()
    return TrainingResult(curve, agent, replay, demo_transitions, interventions,
                          metrics_to_floats(metrics) if metrics else {}, done_steps,
                          acting.version if training.weights_every_updates else 0)

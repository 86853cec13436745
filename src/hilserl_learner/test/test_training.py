"""The ROS-free training loop: demos, interventions to both buffers, update-to-data, evaluation."""

import numpy as np
import pytest

from hilserl_learner.buffers import TransitionSource
from hilserl_learner.config import LearnerConfig, ReplayConfig, RLPDConfig
from hilserl_learner.training import TrainingConfig, evaluate, train
from hilserl_policy.config import (
    ActorConfig,
    CriticConfig,
    EncoderConfig,
    GraspCriticConfig,
    NetworkConfig,
)
from hilserl_policy.encoders import feature_key
from hilserl_sim.expert import EXPERT_DEFAULTS, ScriptedExpert
from hilserl_sim.pick_cube import PickCubeConfig
from hilserl_sim.pick_cube_env import PickCubeEnv
from hilserl_sim.simulated_human import InterventionRule, SimulatedHuman


@pytest.fixture(scope="module")
def env():
    environment = PickCubeEnv(PickCubeConfig(max_episode_steps=40))
    yield environment
    environment.close()


def tiny_config(env, **rlpd):
    nets = NetworkConfig(actor=ActorConfig(hidden_dims=(32,)), critic=CriticConfig(hidden_dims=(32,)),
                         grasp_critic=GraspCriticConfig(hidden_dims=(32,)))
    return LearnerConfig(spec=env.observation_spec("running"), networks=nets,
                         rlpd=RLPDConfig(batch_size=32, **rlpd),
                         replay=ReplayConfig(online_capacity=1000, demo_capacity=1000))


def test_training_loop_stores_demos_and_interventions_and_keeps_the_update_ratio(env):
    config = tiny_config(env, utd_ratio=2.0, learning_starts=20, random_steps=10)
    training = TrainingConfig(total_env_steps=120, num_demos=2, eval_every=60, eval_episodes=2)
    human = SimulatedHuman(InterventionRule("episode_probability", 1.0, decay_steps=60), seed=0)
    points = []
    result = train(env, config, training, expert=ScriptedExpert(EXPERT_DEFAULTS["panda"]),
                   human=human, progress=points.append)
    replay, agent = result.replay, result.agent
    # Two successful expert demos (the expert solves these seeds in < 40 steps).
    assert result.demo_transitions > 0 and replay.demo.terminated[:result.demo_transitions].sum() == 2
    sources = replay.online.source[:len(replay.online)]
    interventions = int((sources == TransitionSource.INTERVENTION).sum())
    assert interventions == result.intervention_steps == human.intervention_steps > 0
    assert len(replay.demo) == result.demo_transitions + interventions  # both buffers
    assert len(replay.online) == 120
    # Update-to-data 2 after learning_starts, counted on online transitions.
    assert result.curve[-1].updates == 2 * (120 - 20 + 1) == agent.num_critic_updates
    assert [p.env_step for p in result.curve] == [60, 120] and points == result.curve
    assert result.curve[0].intervention_rate > 0  # p = 1 at step 0, decaying
    assert 0.0 <= result.curve[-1].success_rate <= 1.0
    # Running statistics saw every stored state once: demo episodes (steps + first state),
    # every online next state, and the first state of every training episode.
    episodes_started = human.episode + 1
    assert float(agent.encoder.state_normalizer.count) == \
        result.demo_transitions + 2 + 120 + episodes_started
    assert set(result.last_metrics) >= {"losses/critic", "charts/actor_updated"}
    assert all(np.isfinite(v) for v in result.last_metrics.values())


def test_evaluation_is_deterministic_on_fixed_seeds(env):
    config = tiny_config(env)
    training = TrainingConfig(total_env_steps=0, num_demos=0, eval_every=0)
    agent = train(env, config, training).agent
    first = evaluate(agent, env, episodes=2, seed=5)
    assert first == evaluate(agent, env, episodes=2, seed=5)
    assert first[1] == 40.0 and first[0] == 0.0  # an untrained policy times out


def test_camera_training_with_a_frozen_backbone_encodes_each_stored_frame_once():
    env = PickCubeEnv(PickCubeConfig(max_episode_steps=40, image_width=32, image_height=32),
                      layout="proprio", cameras=("front", "wrist"))
    try:
        nets = NetworkConfig(actor=ActorConfig(hidden_dims=(32,)), critic=CriticConfig(hidden_dims=(32,)),
                             grasp_critic=GraspCriticConfig(hidden_dims=(32,)),
                             encoder=EncoderConfig(freeze_backbone=True, random_shift_pad=0,
                                                   image_latent_dim=16, state_latent_dim=8))
        config = LearnerConfig(spec=env.observation_spec(), networks=nets,
                               rlpd=RLPDConfig(batch_size=16, learning_starts=10),
                               replay=ReplayConfig(online_capacity=200, demo_capacity=200,
                                                   cache_frozen_features=True))
        result = train(env, config, TrainingConfig(total_env_steps=30, num_demos=1, eval_every=30,
                                                   eval_episodes=1),
                       expert=ScriptedExpert(EXPERT_DEFAULTS["panda"]))
        assert result.env_steps == 30 and result.curve[-1].updates == 30 - 10 + 1
        for name, buffer in result.replay.buffers().items():
            stored = min(buffer.num_frames, buffer.frame_capacity)
            assert stored > 0 and buffer.frame_feature_ready[:stored].all(), name
            assert not buffer.frame_feature_ready[stored:].any(), name
        batch = result.replay.sample(4, np.random.default_rng(0))
        assert set(batch.observations) == {"state", feature_key("front"), feature_key("wrist")}
    finally:
        env.close()


def test_acting_on_exported_weights_refreshes_them_every_k_updates(env):
    config = tiny_config(env, learning_starts=10)
    result = train(env, config, TrainingConfig(total_env_steps=60, num_demos=0, eval_every=0,
                                               weights_every_updates=7))
    updates = result.agent.num_critic_updates
    assert updates == 51 and result.weights_exported == 1 + updates // 7
    assert train(env, config, TrainingConfig(total_env_steps=5, num_demos=0, eval_every=0)).weights_exported == 0


def test_max_wall_s_stops_a_run_and_keeps_what_it_has(env):
    result = train(env, tiny_config(env), TrainingConfig(total_env_steps=10_000, num_demos=0,
                                                         eval_every=0, max_wall_s=1.0))
    assert 0 < result.env_steps < 10_000 and len(result.replay.online) == result.env_steps


def test_training_config_is_validated():
    with pytest.raises(ValueError, match="max_wall_s"):
        TrainingConfig(max_wall_s=-1.0)
    with pytest.raises(ValueError, match="total_env_steps"):
        TrainingConfig(total_env_steps=-1)
    with pytest.raises(ValueError, match="eval_episodes"):
        TrainingConfig(eval_every=10, eval_episodes=0)

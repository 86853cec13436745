"""RLPD update: targets and losses on hand-computed tiny cases, schedules, what trains what."""

import math

import numpy as np
import pytest
import torch

from hilserl_learner.buffers import TransitionBatch
from hilserl_learner.config import LearnerConfig, RLPDConfig
from hilserl_learner.rlpd import (
    RLPDAgent,
    UpdateSchedule,
    critic_target,
    grasp_critic_target,
    grasp_margin_loss,
    actor_bc_loss,
    UPDATE_METRIC_KEYS,
    gripper_change_penalty,
    metrics_to_floats,
    polyak_update,
)
from hilserl_policy.config import (
    ActorConfig,
    CriticConfig,
    EncoderConfig,
    GraspCriticConfig,
    NetworkConfig,
    ObservationSpec,
)
from hilserl_policy.networks import GRIPPER_CLOSE, GRIPPER_OPEN, GRIPPER_STAY


def small_config(num_critics=2, subset=2, has_gripper=False, cameras=(), freeze=False,
                 **rlpd_kwargs):
    spec = ObservationSpec(state_dim=3, action_dim=2, camera_names=cameras, image_size=16,
                           has_gripper=has_gripper)
    nets = NetworkConfig(
        encoder=EncoderConfig(small_cnn_channels=(4, 4), image_latent_dim=8, state_latent_dim=4,
                              freeze_backbone=freeze, random_shift_pad=2),
        actor=ActorConfig(hidden_dims=(16, 16)),
        critic=CriticConfig(hidden_dims=(16, 16), num_critics=num_critics,
                            target_subset_size=subset),
        grasp_critic=GraspCriticConfig(hidden_dims=(16,)))
    return LearnerConfig(spec=spec, networks=nets, rlpd=RLPDConfig(**rlpd_kwargs))


def make_batch(spec, batch=8, seed=0, rewards=None, terminated=None, truncated=None,
               penalties=None):
    gen = torch.Generator().manual_seed(seed)

    def obs():
        out = {"state": torch.randn(batch, spec.state_dim, generator=gen)}
        for camera in spec.camera_names:
            out[camera] = torch.randint(0, 255, (batch, spec.image_size, spec.image_size, 3),
                                        generator=gen, dtype=torch.uint8)
        return out

    def const(value):
        return torch.full((batch,), float(value)) if not torch.is_tensor(value) else value

    return TransitionBatch(
        observations=obs(), actions=torch.rand(batch, spec.action_dim, generator=gen) * 2 - 1,
        gripper_actions=torch.randint(0, 3, (batch,), generator=gen),
        rewards=const(0.0 if rewards is None else rewards),
        gripper_penalties=const(0.0 if penalties is None else penalties),
        next_observations=obs(), terminated=const(0.0 if terminated is None else terminated),
        truncated=const(0.0 if truncated is None else truncated),
        sources=torch.zeros(batch, dtype=torch.int64))


def test_critic_target_hand_computed():
    r, term = torch.tensor([1.0, 0.5, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    next_q, logp = torch.tensor([2.0, 3.0, -1.0]), torch.tensor([0.5, 0.1, -0.2])
    torch.testing.assert_close(critic_target(r, term, 0.9, next_q),
                               torch.tensor([2.8, 0.5, -0.9]))
    torch.testing.assert_close(critic_target(r, term, 0.9, next_q, logp, 0.1),
                               torch.tensor([2.755, 0.5, -0.882]))


def test_grasp_target_is_double_dqn_with_penalty():
    target = grasp_critic_target(
        torch.tensor([1.0, 0.0]), torch.tensor([-0.02, -0.02]), torch.tensor([0.0, 1.0]), 0.9,
        next_q_online=torch.tensor([[1.0, 3.0, 2.0], [5.0, 0.0, 0.0]]),
        next_q_target=torch.tensor([[10.0, 20.0, 30.0], [1.0, 1.0, 1.0]]))
    # Row 0: the online net picks index 1 (not the target's argmax 2) -> 1 - 0.02 + 0.9 * 20.
    torch.testing.assert_close(target, torch.tensor([18.98, -0.02]))


def test_grasp_margin_loss_hand_computed():
    q = torch.tensor([[1.0, 0.95, 0.2], [0.5, 0.9, 0.1], [3.0, 0.0, 0.0]])
    actions = torch.tensor([0, 1, 1])
    # row 0: expert closes, stay is within the margin: max(1.0, 1.05, 0.3) - 1.0 = 0.05
    # row 1: expert stays and leads by more than the margin: 0; row 2 is a policy row (ignored)
    expert = torch.tensor([True, True, False])
    torch.testing.assert_close(grasp_margin_loss(q, actions, expert, 0.1), torch.tensor(0.025))
    assert grasp_margin_loss(q, actions, torch.zeros(3, dtype=torch.bool), 0.1).item() == 0.0


def test_actor_bc_loss_hand_computed_and_pulls_the_actor_to_expert_actions():
    mean = torch.tensor([[0.5, 0.0], [1.0, 1.0], [0.0, 0.0]])
    expert_actions = torch.tensor([[0.0, 0.0], [1.0, 0.0], [9.0, 9.0]])
    rows = torch.tensor([True, True, False])  # row 2 is the policy's own: ignored
    torch.testing.assert_close(actor_bc_loss(mean, expert_actions, rows), torch.tensor(0.625))
    config = small_config(actor_bc_weight=5.0, actor_lr=3e-3)
    agent = RLPDAgent(config)
    batch = make_batch(config.spec, batch=32, seed=4)
    target = torch.full_like(batch.actions, 0.6)
    batch = batch._replace(actions=target, sources=torch.ones(32, dtype=torch.int64))
    for _ in range(200):
        agent.update(batch)
    with torch.no_grad():
        mean_action = agent.actor.mean_action(agent.encoder(batch.observations))
    assert (mean_action - 0.6).abs().mean().item() < 0.1  # without the term: 1.6


def test_grasp_margin_teaches_the_expert_choice_only_on_expert_rows():
    """With the margin loss, demo rows' gripper choice becomes the greedy one; policy rows
    (no expert) are left to the TD loss alone."""
    config = small_config(has_gripper=True, grasp_margin=0.1, grasp_margin_weight=1.0,
                          critic_lr=1e-2)
    agent = RLPDAgent(config)
    base = make_batch(config.spec, batch=32, seed=3)
    labels = (base.observations["state"][:, 0] > 0).long() * 2  # close (0) or open (2) by a state sign
    sources = torch.tensor([1] * 16 + [0] * 16)
    batch = base._replace(gripper_actions=labels, sources=sources)
    for _ in range(300):
        agent.update(batch)
    with torch.no_grad():
        features = agent.encoder(batch.observations)
        greedy = agent.grasp_critic(features).argmax(dim=1)
    assert (greedy[:16] == labels[:16]).float().mean().item() == 1.0


def constant_target_critic(agent, values):
    with torch.no_grad():
        agent.target_critic.ensemble.output_weight.zero_()
        agent.target_critic.ensemble.output_bias.copy_(torch.tensor(values).view(-1, 1, 1))


def test_target_is_min_over_the_sampled_subset(monkeypatch):
    agent = RLPDAgent(small_config(num_critics=10, subset=2))
    batch = make_batch(agent.config.spec)
    for members, expected_min in (([0, 2], 5.0), ([3, 5], 1.0), ([9, 6], 8.0)):
        # (reset each time: the Polyak step moves the target after every update)
        constant_target_critic(agent, [5.0, 3.0, 9.0, 1.0, 7.0, 2.0, 8.0, 6.0, 4.0, 10.0])
        monkeypatch.setattr(agent, "sample_target_members", lambda m=members: torch.tensor(m))
        metrics = agent.update_critic(batch, batch.observations["state"],
                                      batch.next_observations["state"])
        assert math.isclose(float(metrics["values/target_q_mean"]), 0.97 * expected_min,
                            rel_tol=1e-6)


def test_target_subset_is_uniform_and_distinct():
    agent = RLPDAgent(small_config(num_critics=10, subset=2))
    counts = torch.zeros(10)
    for _ in range(3000):
        members = agent.sample_target_members()
        assert members.numel() == 2 and members[0] != members[1]
        counts[members] += 1
    assert torch.allclose(counts / 6000, torch.full((10,), 0.1), atol=0.02)
    assert RLPDAgent(small_config(num_critics=2, subset=2)).sample_target_members() is None


def test_timeout_bootstraps_and_termination_does_not():
    agent = RLPDAgent(small_config())
    timeout = make_batch(agent.config.spec, rewards=1.0, truncated=1.0)
    success = make_batch(agent.config.spec, rewards=1.0, terminated=1.0)
    for batch, expected in ((timeout, 1.0 + 0.97 * 4.0), (success, 1.0)):
        constant_target_critic(agent, [4.0, 6.0])
        metrics = agent.update_critic(batch, batch.observations["state"],
                                      batch.next_observations["state"])
        assert math.isclose(float(metrics["values/target_q_mean"]), expected, rel_tol=1e-6)


def test_critic_loss_matches_independent_computation():
    agent = RLPDAgent(small_config(backup_entropy=True))
    batch = make_batch(agent.config.spec, rewards=torch.linspace(-1, 1, 8))
    obs, nxt = batch.observations["state"], batch.next_observations["state"]
    torch.manual_seed(7)
    with torch.no_grad():
        next_a, next_logp = agent.actor.sample(nxt)
        next_q = agent.target_critic(nxt, next_a).amin(0) - 0.01 * next_logp
        target = batch.rewards + 0.97 * next_q
        expected = (agent.critic(obs, batch.actions) - target).square().mean()
    torch.manual_seed(7)
    metrics = agent.update_critic(batch, obs, nxt)
    assert math.isclose(float(metrics["losses/critic"]), float(expected), rel_tol=1e-5)


@pytest.mark.parametrize("target_entropy, direction", [(5.0, 1), (-50.0, -1)])
def test_temperature_moves_toward_target_entropy(target_entropy, direction):
    agent = RLPDAgent(small_config(target_entropy=target_entropy, temperature_lr=1e-2))
    batch = make_batch(agent.config.spec)
    for _ in range(20):
        metrics = agent.update_actor(batch.observations["state"])
    alpha = float(agent.temperature)
    assert (alpha - 0.01) * direction > 0.001, alpha
    assert math.isclose(float(metrics["charts/temperature"]), alpha, rel_tol=0.05)


def test_fixed_temperature_stays():
    agent = RLPDAgent(small_config(learn_temperature=False, target_entropy=5.0))
    batch = make_batch(agent.config.spec)
    for _ in range(5):
        agent.update_actor(batch.observations["state"])
    assert math.isclose(float(agent.temperature), 0.01, rel_tol=1e-6)


def snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


def changed(module, before):
    return any(not torch.equal(a, b) for a, b in zip(module.parameters(), before))


def test_encoder_is_trained_by_the_critic_loss_only():
    agent = RLPDAgent(small_config(cameras=("front",), critic_actor_ratio=1))
    batch = make_batch(agent.config.spec)
    enc, critic, actor = snapshot(agent.encoder), snapshot(agent.critic), snapshot(agent.actor)
    features = agent.encoder(batch.observations).detach()
    agent.update_actor(features)
    assert changed(agent.actor, actor)
    assert not changed(agent.encoder, enc) and not changed(agent.critic, critic)
    actor = snapshot(agent.actor)
    obs_features = agent.encoder(batch.observations, augment=True)
    with torch.no_grad():
        next_features = agent.encoder(batch.next_observations, augment=True)
    agent.update_critic(batch, obs_features, next_features)
    assert changed(agent.encoder, enc) and changed(agent.critic, critic)
    assert not changed(agent.actor, actor)


def count_backbone_calls(agent):
    calls = []
    for camera, backbone in agent.encoder.backbones.items():
        backbone.register_forward_hook(
            lambda m, inp, out, c=camera: calls.append((c, inp[0].shape[0], torch.is_grad_enabled())))
    return calls


@pytest.mark.parametrize("freeze", [True, False], ids=["frozen", "trainable"])
def test_each_image_is_encoded_once_per_update(freeze):
    agent = RLPDAgent(small_config(cameras=("front", "wrist"), freeze=freeze, critic_actor_ratio=1))
    calls = count_backbone_calls(agent)
    agent.update(make_batch(agent.config.spec, batch=8))
    # obs and next obs, once each per camera, critic + target + actor passes all included.
    assert sorted(c for c, _, _ in calls) == ["front", "front", "wrist", "wrist"]
    assert all(n == 8 for _, n, _ in calls)
    with_grad = [g for _, _, g in calls]
    assert with_grad.count(True) == (0 if freeze else 2)


def test_gripper_penalty_enters_every_update_whatever_the_ratio():
    agent = RLPDAgent(small_config(has_gripper=True, critic_actor_ratio=1))
    for net in (agent.grasp_critic, agent.target_grasp_critic):
        with torch.no_grad():
            net.head.weight.zero_()
            net.head.bias.zero_()
    batch = make_batch(agent.config.spec, penalties=-0.02)
    metrics = agent.update(batch)  # a full update (critic + actor) at ratio 1
    assert "losses/actor" in metrics
    assert math.isclose(float(metrics["losses/grasp_critic"]), 0.02 ** 2, rel_tol=1e-5)


def test_critic_to_actor_ratio_schedule():
    agent = RLPDAgent(small_config(critic_actor_ratio=3))
    batch = make_batch(agent.config.spec)
    metrics = [agent.update(batch) for _ in range(6)]
    with_actor = [bool(m["charts/actor_updated"]) for m in metrics]
    assert with_actor == [False, False, True, False, False, True]
    assert agent.num_critic_updates == 6 and agent.num_actor_updates == 2


def test_update_metrics_have_the_same_keys_every_call():
    """Critic-only updates repeat the last full update's actor/temperature values."""
    agent = RLPDAgent(small_config(critic_actor_ratio=2))
    batch = make_batch(agent.config.spec)
    metrics = [metrics_to_floats(agent.update(batch)) for _ in range(5)]
    keys = {tuple(sorted(m)) for m in metrics}
    assert len(keys) == 1
    assert set(UPDATE_METRIC_KEYS) <= set(metrics[0])
    # Before any actor update: zeros and the initial temperature.
    assert metrics[0]["losses/actor"] == 0.0 and metrics[0]["charts/entropy"] == 0.0
    assert metrics[0]["charts/temperature"] == pytest.approx(0.01)
    assert metrics[1]["charts/actor_updated"] == 1.0 and metrics[1]["losses/actor"] != 0.0
    for key in ("losses/actor", "losses/temperature", "charts/temperature", "charts/entropy"):
        assert metrics[2][key] == metrics[1][key]  # carried by the critic-only update
        assert all(np.isfinite(m[key]) for m in metrics)
    assert metrics[3]["charts/actor_updated"] == 1.0 and metrics[4]["charts/actor_updated"] == 0.0
    assert metrics[4]["losses/actor"] == metrics[3]["losses/actor"] != metrics[1]["losses/actor"]


def test_random_warmup_actions():
    config = small_config(random_steps=5, has_gripper=True)
    agent = RLPDAgent(config)
    obs = {"state": np.zeros(config.spec.state_dim, np.float32)}
    warm = [agent.act(obs, deterministic=False, env_step=s) for s in range(200)]
    actions = np.stack([a for a, _ in warm[:5]])
    assert np.all(np.abs(actions) <= 1.0) and np.std(actions) > 0.2  # uniform: std ~0.58
    # Same seed, same warm-up actions; the warm-up draws no torch random numbers.
    twin = RLPDAgent(small_config(random_steps=0, has_gripper=True))
    twin_warm = RLPDAgent(config)
    np.testing.assert_array_equal(twin_warm.act(obs, False, 0)[0], actions[0])
    torch.manual_seed(7)
    after = twin_warm.act(obs, deterministic=False, env_step=5)
    torch.manual_seed(7)
    policy = twin.act(obs, deterministic=False, env_step=5)
    np.testing.assert_array_equal(after[0], policy[0])
    grippers = [g for _, g in (twin_warm.act(obs, False, 0) for _ in range(60))]
    assert set(grippers) == {0, 1, 2}


def test_update_schedule_utd_ratio():
    schedule = UpdateSchedule(utd_ratio=2.0, learning_starts=10)
    assert schedule.updates_due(9, 0) == 0
    assert schedule.updates_due(10, 0) == 2
    assert schedule.updates_due(15, 4) == 8
    assert UpdateSchedule(0.5, 0).updates_due(4, 0) == 2


def test_polyak_update_and_gripper_penalty_helper():
    target, source = [torch.zeros(3)], [torch.ones(3)]
    polyak_update(target, source, 0.1)
    torch.testing.assert_close(target[0], torch.full((3,), 0.1))
    assert gripper_change_penalty(GRIPPER_CLOSE, False, -0.02) == -0.02
    assert gripper_change_penalty(GRIPPER_CLOSE, True, -0.02) == 0.0
    assert gripper_change_penalty(GRIPPER_OPEN, True, -0.02) == -0.02
    assert gripper_change_penalty(GRIPPER_STAY, True, -0.02) == 0.0


def test_act_is_deterministic_in_evaluation_and_explores_in_training():
    agent = RLPDAgent(small_config(has_gripper=True))
    obs = {"state": [0.1, 0.2, 0.3]}
    a1, g1 = agent.act(obs, deterministic=True)
    a2, g2 = agent.act(obs, deterministic=True)
    assert (a1 == a2).all() and g1 == g2 and a1.shape == (2,)
    samples = {tuple(agent.act(obs, deterministic=False)[0].round(4)) for _ in range(5)}
    assert len(samples) == 5
    grippers = {agent.act(obs, deterministic=False, env_step=0)[1] for _ in range(200)}
    assert grippers == {0, 1, 2}  # epsilon 0.2 at step 0 tries every command


def test_full_update_matches_separate_losses_on_pre_step_parameters(monkeypatch):
    """The full update (critic + actor + temperature + grasp critic, one backward)
    has exactly the gradients of the separately differentiated losses: the actor
    loss gives the critic no gradient."""
    agent = RLPDAgent(small_config(num_critics=4, subset=2, has_gripper=True,
                                   critic_actor_ratio=1, backup_entropy=True))
    batch = make_batch(agent.config.spec, rewards=torch.linspace(0, 1, 8), penalties=-0.02)
    captured = {}
    monkeypatch.setattr(agent.optimizer, "step", lambda: captured.update(
        {n: p.grad.clone() for n, p in named_trainables(agent) if p.grad is not None}))
    torch.manual_seed(11)
    metrics = agent.update_critic_and_actor(batch, batch.observations["state"],
                                            batch.next_observations["state"])

    # Reference: the same losses, each differentiated separately with plain autograd.
    agent.optimizer.zero_grad(set_to_none=True)
    obs, nxt = batch.observations["state"], batch.next_observations["state"]
    torch.manual_seed(11)
    with torch.no_grad():
        next_a, next_logp = agent.actor.sample(nxt)
        members = agent.sample_target_members()
        next_q = agent.target_critic(nxt, next_a, members).amin(0) - agent.temperature * next_logp
        target = batch.rewards + 0.97 * next_q
    actions, log_probs = agent.actor.sample(obs)
    critic_loss = (agent.critic(obs, batch.actions) - target).square().mean()
    q_pi = agent.critic(obs, actions, detach_params=True).mean(0)
    actor_loss = (agent.temperature * log_probs - q_pi).mean()
    entropy = -log_probs.detach().mean()
    temperature_loss = agent.log_alpha * (entropy - agent.target_entropy)
    grasp_loss = agent._grasp_loss(batch, obs, nxt)[0]
    (critic_loss + actor_loss + temperature_loss + grasp_loss).backward()
    expected = {n: p.grad for n, p in named_trainables(agent) if p.grad is not None}
    assert math.isclose(float(metrics["losses/critic"]), critic_loss.item(), rel_tol=1e-5)
    assert math.isclose(float(metrics["losses/actor"]), actor_loss.item(), rel_tol=1e-5)
    assert set(captured) == set(expected)
    assert any(n.startswith("actor.") for n in expected) and "log_alpha" in expected
    for name, grad in expected.items():
        torch.testing.assert_close(captured[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def named_trainables(agent):
    for name, module in agent.modules().items():
        for key, param in module.named_parameters():
            yield f"{name}.{key}", param
    yield "log_alpha", agent.log_alpha

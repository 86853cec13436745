"""RLPD / HIL-SERL update: SAC with a LayerNorm critic ensemble and a grasp critic.

Each update is a method returning a metrics dict of detached 0-d tensors
(turn them into floats with ``metrics_to_floats`` only when logging, which
keeps the update free of per-step host syncs and Python conversions).
``RLPDAgent.update`` returns the same keys on every call (``UPDATE_METRIC_KEYS``,
plus the grasp-critic keys with a gripper): a critic-only update repeats the
actor/temperature values of the last full update (before the first one: actor
and temperature losses 0, entropy 0, the current temperature), and
``charts/actor_updated`` is 1.0 when this call updated the actor, else 0.0.

Random warm-up: with ``RLPDConfig.random_steps`` > 0, ``act`` (not
deterministic) returns uniform random actions and gripper indices while
``env_step < random_steps`` (drawn from the agent's own generator, so the
replay sampling stream is unchanged).

Per call of ``RLPDAgent.update(batch)``:

1. encode observations and next observations once (augmented; frozen backbone
   features computed without autograd, cached ones not at all; no dropout on
   the next observations, which only feed the target);
2. ``update_critic``: target = r + gamma * (1 - terminated) * min over a
   random subset of the target ensemble at a' ~ pi(s') (a time-out bootstraps,
   only ``terminated`` stops it), plus the grasp critic's double-DQN loss with
   the gripper penalty, in every critic update, in one backward and one Adam step;
3. every ``critic_actor_ratio``-th call, ``update_actor`` (and the
   temperature) on the features from step 1, detached: the encoder is trained
   by the critic loss only.
"""

from __future__ import annotations

import copy
import math
import random
from itertools import chain

import numpy as np
import torch
from torch import nn

from hilserl_learner.buffers import TransitionBatch, TransitionSource
from hilserl_learner.config import LearnerConfig
from hilserl_policy.encoders import ObservationEncoder
from hilserl_policy.networks import (  # noqa: F401  (gripper_change_penalty: re-exported)
    NUM_GRIPPER_ACTIONS,
    CriticEnsemble,
    GraspCritic,
    TanhGaussianActor,
    gripper_change_penalty,
    select_gripper_action,
)


def polyak_update(targets: list[torch.Tensor], sources: list[torch.Tensor], tau: float) -> None:
    """target <- (1 - tau) * target + tau * source, for all tensors in one fused call."""
    with torch.no_grad():
        torch._foreach_lerp_(targets, sources, tau)


def critic_target(rewards: torch.Tensor, terminated: torch.Tensor, discount: float,
                  next_q: torch.Tensor, next_log_probs: torch.Tensor | None = None,
                  temperature: torch.Tensor | float = 0.0) -> torch.Tensor:
    """r + gamma * (1 - terminated) * (next_q - alpha * log pi(a'|s') if given)."""
    if next_log_probs is not None:
        next_q = next_q - temperature * next_log_probs
    return rewards + discount * (1.0 - terminated) * next_q


def grasp_critic_target(rewards: torch.Tensor, gripper_penalties: torch.Tensor,
                        terminated: torch.Tensor, discount: float,
                        next_q_online: torch.Tensor, next_q_target: torch.Tensor) -> torch.Tensor:
    """Double DQN: the online net picks g' = argmax Q(s', .), the target net values it."""
    best = next_q_online.argmax(dim=-1, keepdim=True)
    next_value = next_q_target.gather(-1, best).squeeze(-1)
    return rewards + gripper_penalties + discount * (1.0 - terminated) * next_value


def grasp_margin_loss(q_all: torch.Tensor, actions: torch.Tensor, expert: torch.Tensor,
                      margin: float) -> torch.Tensor:
    """Large-margin loss (DQfD) on the expert rows: max_a [Q(s, a) + margin * (a != a_E)] - Q(s, a_E),
    averaged over the expert rows (0 when the batch has none)."""
    penalties = torch.full_like(q_all, margin).scatter_(1, actions.unsqueeze(1), 0.0)
    excess = (q_all + penalties).max(dim=1).values - q_all.gather(1, actions.unsqueeze(1)).squeeze(1)
    weights = expert.to(q_all.dtype)
    return (excess * weights).sum() / weights.sum().clamp(min=1.0)


def actor_bc_loss(mean_actions: torch.Tensor, actions: torch.Tensor, expert: torch.Tensor) -> torch.Tensor:
    """Squared distance of the deterministic action to the expert's, summed over action
    dimensions and averaged over the expert rows (0 when the batch has none)."""
    weights = expert.to(mean_actions.dtype)
    return ((mean_actions - actions).square().sum(dim=1) * weights).sum() / weights.sum().clamp(min=1.0)


UPDATE_METRIC_KEYS = ("losses/critic", "values/q_mean", "values/target_q_mean", "losses/actor",
                      "losses/temperature", "charts/temperature", "charts/entropy",
                      "charts/actor_updated")
GRASP_METRIC_KEYS = ("losses/grasp_critic", "values/grasp_q_mean")
_ACTOR_METRIC_KEYS = ("losses/actor", "losses/temperature", "charts/temperature", "charts/entropy")


def metrics_to_floats(metrics: dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}


class UpdateSchedule:
    """Explicit update-to-data ratio: updates due after ``n`` online transitions."""

    def __init__(self, utd_ratio: float, learning_starts: int):
        self.utd_ratio = utd_ratio
        self.learning_starts = learning_starts

    def updates_due(self, num_online_transitions: int, num_updates_done: int) -> int:
        if num_online_transitions < self.learning_starts:
            return 0
        total = math.floor((num_online_transitions - self.learning_starts + 1) * self.utd_ratio)
        return max(0, total - num_updates_done)


def _adam(params, lr: float) -> torch.optim.Adam:
    # The fused CPU kernel updates every tensor in one call (torch >= 2.4).
    return torch.optim.Adam(params, lr=lr, fused=True)


class RLPDAgent:
    """Networks, target networks, optimisers and counters of one learner."""

    def __init__(self, config: LearnerConfig):
        self.config = config
        spec, nets, rl = config.spec, config.networks, config.rlpd
        # The learner owns the process RNGs: torch (init, sampling, augmentation),
        # python, and a numpy Generator for replay sampling. All are checkpointed.
        torch.manual_seed(rl.seed)
        random.seed(rl.seed)
        self.rng = np.random.default_rng(rl.seed)
        self.encoder = ObservationEncoder(spec, nets.encoder)
        feature_dim = self.encoder.output_dim
        self.actor = TanhGaussianActor(feature_dim, spec.action_dim, nets.actor)
        self.critic = CriticEnsemble(feature_dim, spec.action_dim, nets.critic)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.grasp_critic = self.target_grasp_critic = None
        if spec.has_gripper:
            self.grasp_critic = GraspCritic(feature_dim, nets.grasp_critic)
            self.target_grasp_critic = copy.deepcopy(self.grasp_critic).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(rl.initial_temperature)),
                                      requires_grad=rl.learn_temperature)
        self.target_entropy = rl.resolved_target_entropy(spec.action_dim)
        self.grasp_discount = rl.discount if rl.grasp_discount is None else rl.grasp_discount

        # One optimiser, one param group per role: a single fused Adam kernel per
        # update; parameters without a gradient this step (the actor during a
        # critic-only update) are skipped by Adam and keep their moments.
        critic_side = [self.critic, self.encoder] + ([self.grasp_critic] if self.grasp_critic else [])
        groups = [{"params": [p for m in critic_side for p in m.parameters() if p.requires_grad],
                   "lr": rl.critic_lr},
                  {"params": list(self.actor.parameters()), "lr": rl.actor_lr}]
        if rl.learn_temperature:
            groups.append({"params": [self.log_alpha], "lr": rl.temperature_lr})
        self.optimizer = _adam(groups, rl.critic_lr)

        online = [self.critic] + ([self.grasp_critic] if self.grasp_critic else [])
        target = [self.target_critic] + ([self.target_grasp_critic] if self.grasp_critic else [])
        self._polyak_sources = [p for m in online for p in m.parameters()]
        self._polyak_targets = [p for m in target for p in m.parameters()]
        self.num_critic_updates = 0
        self.num_actor_updates = 0
        # Actor/temperature metrics of the last full update (repeated by critic-only ones).
        self._last_actor_metrics = {"losses/actor": torch.zeros(()),
                                    "losses/temperature": torch.zeros(()),
                                    "charts/temperature": self.temperature,
                                    "charts/entropy": torch.zeros(())}
        # Warm-up actions come from their own stream (seeded apart from self.rng).
        self.warmup_rng = np.random.default_rng([rl.seed, 1])
        self.set_training(True)

    # ---------------------------------------------------------------- modules
    def modules(self) -> dict[str, nn.Module]:
        """Every network by name (what a checkpoint saves)."""
        out = {"encoder": self.encoder, "actor": self.actor, "critic": self.critic,
               "target_critic": self.target_critic}
        if self.grasp_critic is not None:
            out["grasp_critic"] = self.grasp_critic
            out["target_grasp_critic"] = self.target_grasp_critic
        return out

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"adam": self.optimizer}

    def set_training(self, mode: bool) -> None:
        for module in self.modules().values():
            module.train(mode)

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_alpha.detach().exp()

    # ---------------------------------------------------------------- updates
    def update(self, batch: TransitionBatch) -> dict[str, torch.Tensor]:
        """One gradient update: critic only, or every ``critic_actor_ratio``-th call
        critic + actor + temperature from the same pre-step parameters, as the
        official implementation does, in one backward and one Adam step."""
        obs_features = self.encoder(batch.observations, augment=True)
        with torch.no_grad():
            # No dropout for the target's inputs: a deterministic target, and
            # dropout masks are a large share of an image update on CPU.
            next_features = self.encoder(batch.next_observations, augment=True, dropout=False)
        if (self.num_critic_updates + 1) % self.config.rlpd.critic_actor_ratio == 0:
            metrics = self.update_critic_and_actor(batch, obs_features, next_features)
            self._last_actor_metrics = {k: metrics[k] for k in _ACTOR_METRIC_KEYS}
            metrics["charts/actor_updated"] = torch.ones(())
            return metrics
        metrics = self.update_critic(batch, obs_features, next_features)
        metrics.update(self._last_actor_metrics)
        metrics["charts/actor_updated"] = torch.zeros(())
        return metrics

    def _critic_target(self, batch: TransitionBatch, next_features: torch.Tensor) -> torch.Tensor:
        """r + gamma (1 - terminated) min_{subset} Q_target(s', a'), a' ~ pi(s')."""
        rl = self.config.rlpd
        with torch.no_grad():
            next_actions, next_log_probs = self.actor.sample(next_features)
            members = self.sample_target_members()
            next_q = self.target_critic(next_features, next_actions, members).amin(dim=0)
            return critic_target(batch.rewards, batch.terminated, rl.discount, next_q,
                                 next_log_probs if rl.backup_entropy else None,
                                 self.log_alpha.detach().exp())

    def update_critic(self, batch: TransitionBatch, obs_features: torch.Tensor,
                      next_features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Critic (and grasp-critic) update alone."""
        target_q = self._critic_target(batch, next_features)
        q = self.critic(obs_features, batch.actions)
        critic_loss = (q - target_q).square().mean()
        metrics = {"losses/critic": critic_loss.detach(), "values/q_mean": q.detach().mean(),
                   "values/target_q_mean": target_q.mean()}
        self._step(critic_loss, batch, obs_features.detach(), next_features, metrics)
        return metrics

    def update_critic_and_actor(self, batch: TransitionBatch, obs_features: torch.Tensor,
                                next_features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Critic, grasp-critic, actor and temperature losses, one backward.

        The actor loss sees the critic with detached weights: it moves the
        actions (and so the actor), never the critic.
        """
        target_q = self._critic_target(batch, next_features)
        features = obs_features.detach()
        actions, log_probs = self.actor.sample(features)
        q = self.critic(obs_features, batch.actions)
        critic_loss = (q - target_q).square().mean()
        metrics = {"losses/critic": critic_loss.detach(), "values/q_mean": q.detach().mean(),
                   "values/target_q_mean": target_q.mean()}
        q_pi = self.critic(features, actions, detach_params=True)
        actor_loss = self._actor_losses(q_pi, log_probs, metrics)
        if self.config.rlpd.actor_bc_weight > 0:
            actor_loss = actor_loss + self.config.rlpd.actor_bc_weight * actor_bc_loss(
                self.actor.mean_action(features), batch.actions, batch.sources != TransitionSource.POLICY)
        self._step(critic_loss + actor_loss, batch, features, next_features, metrics)
        self.num_actor_updates += 1
        return metrics

    def _actor_losses(self, q_pi: torch.Tensor, log_probs: torch.Tensor,
                      metrics: dict[str, torch.Tensor]) -> torch.Tensor:
        """alpha * log pi - Q (ensemble mean or min), plus the temperature loss if learned."""
        q_pi = q_pi.mean(0) if self.config.rlpd.actor_q_reduction == "mean" else q_pi.amin(0)
        alpha = self.log_alpha.exp()
        actor_loss = (alpha.detach() * log_probs - q_pi).mean()
        entropy = -log_probs.detach().mean()
        # d/dlog(alpha) = entropy - target: alpha falls when entropy is above target.
        temperature_loss = self.log_alpha * (entropy - self.target_entropy)
        metrics.update({"losses/actor": actor_loss.detach(),
                        "losses/temperature": temperature_loss.detach(),
                        "charts/temperature": alpha.detach(), "charts/entropy": entropy})
        return actor_loss + temperature_loss if self.log_alpha.requires_grad else actor_loss

    def _step(self, loss: torch.Tensor, batch: TransitionBatch, features: torch.Tensor,
              next_features: torch.Tensor, metrics: dict[str, torch.Tensor]) -> None:
        """Add the grasp-critic loss (every critic update), backward, Adam, Polyak."""
        if self.grasp_critic is not None:
            grasp_loss, grasp_q = self._grasp_loss(batch, features, next_features)
            loss = loss + grasp_loss
            metrics["losses/grasp_critic"] = grasp_loss.detach()
            metrics["values/grasp_q_mean"] = grasp_q
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        polyak_update(self._polyak_targets, self._polyak_sources, self.config.rlpd.tau)
        self.num_critic_updates += 1

    def sample_target_members(self) -> torch.Tensor | None:
        """Random subset of target members whose min forms the target (None: all of them)."""
        cfg = self.config.networks.critic
        if cfg.target_subset_size == cfg.num_critics:
            return None
        return torch.randperm(cfg.num_critics)[:cfg.target_subset_size]

    def _grasp_loss(self, batch: TransitionBatch, obs_features: torch.Tensor,
                    next_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q_all = self.grasp_critic(obs_features)
        q_taken = q_all.gather(1, batch.gripper_actions.unsqueeze(1)).squeeze(1)
        with torch.no_grad():
            target = grasp_critic_target(
                batch.rewards, batch.gripper_penalties, batch.terminated, self.grasp_discount,
                self.grasp_critic(next_features), self.target_grasp_critic(next_features))
        loss = (q_taken - target).square().mean()
        rl = self.config.rlpd
        if rl.grasp_margin_weight > 0:
            loss = loss + rl.grasp_margin_weight * grasp_margin_loss(
                q_all, batch.gripper_actions, batch.sources != TransitionSource.POLICY, rl.grasp_margin)
        return loss, q_taken.detach().mean()

    def update_actor(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Actor and temperature update alone, against the current critic."""
        actions, log_probs = self.actor.sample(features)
        # Detached critic weights: the gradient flows to the actions only.
        q_pi = self.critic(features, actions, detach_params=True)
        metrics: dict[str, torch.Tensor] = {}
        loss = self._actor_losses(q_pi, log_probs, metrics)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.num_actor_updates += 1
        return metrics

    # ----------------------------------------------------------------- acting
    @torch.no_grad()
    def act(self, observation: dict[str, np.ndarray], deterministic: bool,
            env_step: int = 0) -> tuple[np.ndarray, int | None]:
        """One unbatched observation -> (continuous action, gripper index or None).

        Not deterministic and ``env_step < RLPDConfig.random_steps``: a uniform
        random action (and gripper index) instead of the policy's (warm-up).
        """
        if not deterministic and env_step < self.config.rlpd.random_steps:
            action = self.warmup_rng.uniform(-1.0, 1.0, self.config.spec.action_dim)
            gripper = None
            if self.grasp_critic is not None:
                gripper = int(self.warmup_rng.integers(0, NUM_GRIPPER_ACTIONS))
            return action.astype(np.float32), gripper
        obs = {}
        for key, value in observation.items():
            value = np.asarray(value)
            obs[key] = torch.from_numpy(value if value.dtype == np.uint8
                                        else value.astype(np.float32))[None]
        self.encoder.eval()
        features = self.encoder(obs, augment=False)
        self.encoder.train()
        if deterministic:
            action = self.actor.mean_action(features)
        else:
            action = self.actor.sample(features)[0]
        gripper = None
        if self.grasp_critic is not None:
            gripper = int(select_gripper_action(self.grasp_critic(features),
                                                self.config.networks.gripper_exploration,
                                                env_step, deterministic)[0])
        return action[0].numpy(), gripper

    def observe_states(self, states) -> None:
        """Feed stored state vectors ((N, S) or (S,)) to the running state statistics
        (``ObservationSpec.state_normalization = "running"``; a no-op otherwise).
        Call it once per observation added to the replay, demos included."""
        normalizer = self.encoder.state_normalizer
        if normalizer is not None:
            normalizer.update(states)

    def encode_for_cache(self, images: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Frozen backbone features of unaugmented images (fills the buffer's feature cache)."""
        with torch.no_grad():
            return self.encoder.backbone_features(images, augment=False)

    def parameters(self):
        return chain.from_iterable(m.parameters() for m in self.modules().values())


def keep_freed_memory_in_process() -> bool:
    """Ask glibc malloc to reuse freed blocks instead of returning them to the OS.

    Every update allocates and frees the same few-MB activation tensors; by
    default glibc serves blocks above its mmap threshold with fresh pages, so
    each allocation page-faults (measured: ~30% of a state update on this
    2-core VM). Call once at learner start-up. Returns False where glibc's
    ``mallopt`` is unavailable (nothing changed).
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "mallopt"):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    one_gib = 1 << 30
    return bool(libc.mallopt(m_mmap_threshold, 32 << 20)) and bool(
        libc.mallopt(m_trim_threshold, one_gib))

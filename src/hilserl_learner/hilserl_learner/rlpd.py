"""RLPD / HIL-SERL update: SAC with a LayerNorm critic ensemble and a grasp critic.

Each update is a method returning a metrics dict of detached 0-d tensors
(turn them into floats with ``metrics_to_floats`` only when logging, which
keeps the update free of per-step host syncs and Python conversions).

Per call of ``RLPDAgent.update(batch)``:

1. encode observations and next observations once (augmented; frozen backbone
   features computed without autograd, cached ones not at all);
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

from hilserl_learner.buffers import TransitionBatch
from hilserl_learner.config import LearnerConfig
from hilserl_policy.encoders import ObservationEncoder
from hilserl_policy.networks import (
    GRIPPER_CLOSE,
    GRIPPER_OPEN,
    CriticEnsemble,
    GraspCritic,
    TanhGaussianActor,
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


def gripper_change_penalty(gripper_index: int, gripper_closed: bool, penalty: float) -> float:
    """``penalty`` when a command changes the gripper state (close an open one or vice versa)."""
    changes = (gripper_index == GRIPPER_CLOSE and not gripper_closed) or (
        gripper_index == GRIPPER_OPEN and gripper_closed)
    return penalty if changes else 0.0


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

        critic_side = [self.critic, self.encoder] + ([self.grasp_critic] if self.grasp_critic else [])
        self.critic_optimizer = _adam(
            [p for m in critic_side for p in m.parameters() if p.requires_grad], rl.critic_lr)
        actor_groups = [{"params": list(self.actor.parameters()), "lr": rl.actor_lr}]
        if rl.learn_temperature:
            actor_groups.append({"params": [self.log_alpha], "lr": rl.temperature_lr})
        self.actor_optimizer = _adam(actor_groups, rl.actor_lr)

        online = [self.critic] + ([self.grasp_critic] if self.grasp_critic else [])
        target = [self.target_critic] + ([self.target_grasp_critic] if self.grasp_critic else [])
        self._polyak_sources = [p for m in online for p in m.parameters()]
        self._polyak_targets = [p for m in target for p in m.parameters()]
        self.num_critic_updates = 0
        self.num_actor_updates = 0
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
        return {"critic": self.critic_optimizer, "actor": self.actor_optimizer}

    def set_training(self, mode: bool) -> None:
        for module in self.modules().values():
            module.train(mode)

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_alpha.detach().exp()

    # ---------------------------------------------------------------- updates
    def update(self, batch: TransitionBatch) -> dict[str, torch.Tensor]:
        """One critic update, plus actor and temperature every critic_actor_ratio-th call."""
        obs_features = self.encoder(batch.observations, augment=True)
        with torch.no_grad():
            next_features = self.encoder(batch.next_observations, augment=True)
        metrics = self.update_critic(batch, obs_features, next_features)
        if self.num_critic_updates % self.config.rlpd.critic_actor_ratio == 0:
            metrics.update(self.update_actor(obs_features.detach()))
        return metrics

    def update_critic(self, batch: TransitionBatch, obs_features: torch.Tensor,
                      next_features: torch.Tensor) -> dict[str, torch.Tensor]:
        rl = self.config.rlpd
        with torch.no_grad():
            next_actions, next_log_probs = self.actor.sample(next_features)
            members = self.sample_target_members()
            next_q = self.target_critic(next_features, next_actions, members).amin(dim=0)
            target_q = critic_target(batch.rewards, batch.terminated, rl.discount, next_q,
                                     next_log_probs if rl.backup_entropy else None,
                                     self.log_alpha.detach().exp())
        q = self.critic(obs_features, batch.actions)
        critic_loss = (q - target_q).square().mean()
        loss = critic_loss
        metrics = {"losses/critic": critic_loss.detach(), "values/q_mean": q.detach().mean(),
                   "values/target_q_mean": target_q.mean()}
        if self.grasp_critic is not None:
            grasp_loss, grasp_q = self._grasp_loss(batch, obs_features.detach(), next_features)
            loss = loss + grasp_loss
            metrics["losses/grasp_critic"] = grasp_loss.detach()
            metrics["values/grasp_q_mean"] = grasp_q
        self.critic_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_optimizer.step()
        polyak_update(self._polyak_targets, self._polyak_sources, rl.tau)
        self.num_critic_updates += 1
        return metrics

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
        return (q_taken - target).square().mean(), q_taken.detach().mean()

    def update_actor(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Actor loss alpha * log pi - Q and temperature loss, one backward, one Adam step."""
        actions, log_probs = self.actor.sample(features)
        # Detached critic weights: the gradient flows to the actions only.
        q = self.critic(features, actions, detach_params=True)
        q = q.mean(0) if self.config.rlpd.actor_q_reduction == "mean" else q.amin(0)
        alpha = self.log_alpha.exp()
        actor_loss = (alpha.detach() * log_probs - q).mean()
        entropy = -log_probs.detach().mean()
        # d/dlog(alpha) = entropy - target: alpha falls when entropy is above target.
        temperature_loss = self.log_alpha * (entropy - self.target_entropy)
        loss = actor_loss + temperature_loss if self.log_alpha.requires_grad else actor_loss
        self.actor_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.actor_optimizer.step()
        self.num_actor_updates += 1
        return {"losses/actor": actor_loss.detach(), "losses/temperature": temperature_loss.detach(),
                "charts/temperature": alpha.detach(), "charts/entropy": entropy}

    # ----------------------------------------------------------------- acting
    @torch.no_grad()
    def act(self, observation: dict[str, np.ndarray], deterministic: bool,
            env_step: int = 0) -> tuple[np.ndarray, int | None]:
        """One unbatched observation -> (continuous action, gripper index or None)."""
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

    def encode_for_cache(self, images: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Frozen backbone features of unaugmented images (fills the buffer's feature cache)."""
        with torch.no_grad():
            return self.encoder.backbone_features(images, augment=False)

    def parameters(self):
        return chain.from_iterable(m.parameters() for m in self.modules().values())

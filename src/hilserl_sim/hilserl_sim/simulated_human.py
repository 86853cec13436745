"""Simulated human: the scripted expert as an intervention source, with a rule for when. No ROS.

One ``SimulatedHuman`` follows one actor's episodes. Per episode call
``reset(episode)``; per frame ``decide(step, ee, cube, gripper)`` returns
``(intervening, deltas, gripper_command)``: whether the human is in control
this frame, the expert's three normalised xyz deltas in [-1, 1], and the
gripper command as ``hilserl_msgs/Action`` has it (-1 close, 0 stay, 1 open).
At an episode's end call ``end_episode(success)``. The object counts the
frames it was asked about (its own env-step clock) and the outcome of the
episodes it left to the policy (the measured success rate).

Rules (``InterventionRule.kind``):

- ``"never"`` / ``"always"``;
- ``"episode_probability"``: at ``reset`` the human takes over the whole
  episode with probability ``start_probability * max(0, 1 - env_steps / decay_steps)``
  (linear decay to 0 at ``decay_steps`` frames);
- ``"no_progress"``: the human takes over, for the rest of the episode, once
  ``patience`` frames passed without the end effector getting ``min_progress``
  metres closer to the cube than it had been (disabled after ``decay_steps``
  frames when ``decay_steps`` > 0);
- ``"success_rate"``: like ``episode_probability`` but the probability is
  ``start_probability * max(0, 1 - success_rate / target_success_rate)``,
  with the success rate of the last ``window`` episodes the policy ran alone
  (``observe_success_rate`` sets it from an evaluation instead).
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

from hilserl_sim.expert import EXPERT_DEFAULTS, ExpertConfig, ScriptedExpert

RULE_KINDS = ("never", "always", "episode_probability", "no_progress", "success_rate")


@dataclasses.dataclass(frozen=True)
class InterventionRule:
    """When the simulated human takes over (see the module docstring)."""

    kind: str = "episode_probability"
    start_probability: float = 0.5  # takeover probability at env step 0 / success rate 0
    decay_steps: int = 5000  # frames over which the probability falls linearly to 0
    patience: int = 10  # "no_progress": frames without getting closer before taking over
    min_progress: float = 0.005  # "no_progress": metres closer that count as progress
    target_success_rate: float = 0.9  # "success_rate": probability 0 at this success rate
    window: int = 20  # "success_rate": policy-only episodes in the measured rate

    def __post_init__(self) -> None:
        if self.kind not in RULE_KINDS:
            raise ValueError(f"InterventionRule.kind must be one of {RULE_KINDS}, got {self.kind!r}")
        if not (0.0 <= self.start_probability <= 1.0):
            raise ValueError(f"InterventionRule.start_probability must be in [0, 1], got {self.start_probability}")
        for name in ("decay_steps", "patience", "window"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"InterventionRule.{name} must be an int >= 0, got {value!r}")
        if self.kind == "episode_probability" and self.decay_steps == 0:
            raise ValueError("InterventionRule.decay_steps must be > 0 for 'episode_probability'")
        if not (np.isfinite(self.min_progress) and self.min_progress >= 0):
            raise ValueError(f"InterventionRule.min_progress must be >= 0, got {self.min_progress!r}")
        if not (0.0 < self.target_success_rate <= 1.0):
            raise ValueError("InterventionRule.target_success_rate must be in (0, 1], "
                             f"got {self.target_success_rate}")

    def episode_probability(self, env_steps: int, success_rate: float = 0.0) -> float:
        """Probability of taking over a whole episode that starts now."""
        if self.kind == "always":
            return 1.0
        if self.kind == "episode_probability":
            return self.start_probability * max(0.0, 1.0 - env_steps / self.decay_steps)
        if self.kind == "success_rate":
            return self.start_probability * max(0.0, 1.0 - success_rate / self.target_success_rate)
        return 0.0


class SimulatedHuman:
    """The scripted expert deciding, frame by frame, whether to take over."""

    def __init__(self, rule: InterventionRule | None = None, expert: ExpertConfig | None = None,
                 seed: int = 0):
        self.rule = rule or InterventionRule()
        self.expert = ScriptedExpert(expert or EXPERT_DEFAULTS["panda"], seed=seed)
        self._rng = np.random.default_rng(seed)
        self.env_steps = 0  # frames seen by decide()
        self.intervention_steps = 0  # frames in which the human was in control
        self._outcomes: collections.deque[bool] = collections.deque(maxlen=max(1, self.rule.window))
        self._observed_rate: float | None = None
        self.episode = -1
        self.taking_over = False
        self._best_distance = np.inf
        self._stalled = 0

    @property
    def success_rate(self) -> float:
        """Set by ``observe_success_rate``, else the rate of recent policy-only episodes (0 if none)."""
        if self._observed_rate is not None:
            return self._observed_rate
        return float(np.mean(self._outcomes)) if self._outcomes else 0.0

    def observe_success_rate(self, rate: float) -> None:
        """Use an externally measured success rate (e.g. the last evaluation)."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"success rate must be in [0, 1], got {rate}")
        self._observed_rate = float(rate)

    def reset(self, episode: int) -> bool:
        """Start ``episode``; returns whether the human takes it over from its first frame."""
        self.episode = int(episode)
        self.expert.reset()
        self._best_distance = np.inf
        self._stalled = 0
        p = self.rule.episode_probability(self.env_steps, self.success_rate)
        self.taking_over = bool(p > 0 and self._rng.random() < p)
        return self.taking_over

    def _no_progress(self, ee: np.ndarray, cube: np.ndarray) -> bool:
        rule = self.rule
        if rule.decay_steps > 0 and self.env_steps >= rule.decay_steps:
            return False
        distance = float(np.linalg.norm(cube - ee))
        if distance < self._best_distance - rule.min_progress:
            self._best_distance = distance
            self._stalled = 0
        else:
            self._stalled += 1
        return self._stalled >= rule.patience

    def decide(self, step: int, ee, cube, gripper: float) -> tuple[bool, np.ndarray, int]:
        """(intervening, 3 normalised deltas, gripper command -1/0/1) for this frame.

        ``step``: frame index within the episode; ``ee``/``cube``: xyz (m, base
        frame); ``gripper``: opening (0 closed, 1 open). The expert runs on
        every frame, so its plan is current when it takes over.
        """
        ee = np.asarray(ee, dtype=float)
        cube = np.asarray(cube, dtype=float)
        deltas, command = self.expert.act(ee, cube, float(gripper))
        if not self.taking_over:
            if self.rule.kind == "always":
                self.taking_over = True
            elif self.rule.kind == "no_progress" and step >= 0 and self._no_progress(ee, cube):
                self.taking_over = True
        self.env_steps += 1
        if self.taking_over:
            self.intervention_steps += 1
        return self.taking_over, np.asarray(deltas[:3], dtype=np.float32), int(command)

    def end_episode(self, success: bool) -> None:
        """Record the outcome; only episodes the policy ran alone count toward the success rate."""
        if not self.taking_over:
            self._outcomes.append(bool(success))

"""Intervention mux core: who drives the robot this step, policy or person. No ROS in here.

One ``InterventionMux.decide`` per policy action (the actor is the clock) returns the one
executed action of that step with its source and intervention flag:

1. a human is in control when a fresh human input (not older than ``human_timeout_s``,
   from an accepted ``input_source``) is active, or when intervention is toggled on;
   the executed action is the human's (hold while toggled on with no fresh human input);
2. otherwise, for ``handback_hold_steps`` steps after a human let go, the arm holds
   (the take-over countdown: the person sees the arm stop before the policy resumes);
3. otherwise, while the policy is paused, the arm holds;
4. otherwise the policy's action is executed.

Each run of consecutive human-controlled steps is recorded as an ``InterventionSegment``
(first and last step index, and the policy stamps of both).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

SOURCE_POLICY = 0
SOURCE_HUMAN = 1
SOURCE_SCRIPTED = 2
"""Same values as hilserl_msgs/Action SOURCE_*."""

GRIPPER_STAY = 0
ACTION_DIM = 6

INPUT_SOURCES = ("any", "simulated", "spacemouse", "keyboard", "gamepad", "leader_arm")
"""Accepted human inputs. 'any': every human action; 'simulated': the simulated human only
(source SCRIPTED); a device name: actions of source HUMAN whose device (the message's
header.frame_id) is that name (the human_input node; docs/teleop.md)."""


class Command(NamedTuple):
    """One end-effector command: six normalised deltas and a gripper command."""

    deltas: np.ndarray
    gripper: int


class HumanInput(NamedTuple):
    deltas: np.ndarray
    gripper: int
    source: int
    """SOURCE_HUMAN for a person's device, SOURCE_SCRIPTED for the simulated human."""
    active: bool
    """The person is touching the device / taking over (Action.intervention)."""
    device: str = ""


class Decision(NamedTuple):
    deltas: np.ndarray
    gripper: int
    source: int
    intervention: bool
    reason: str
    """'human', 'human_silent' (toggled on, no fresh input: hold), 'handback', 'paused' or 'policy'."""


@dataclasses.dataclass(frozen=True)
class MuxConfig:
    input_source: str = "any"
    """Which human inputs count, one of INPUT_SOURCES."""
    human_timeout_s: float = 0.5
    """A human input older than this (s) is ignored."""
    handback_hold_steps: int = 2
    """Steps the arm holds after a human lets go, before the policy resumes (0: resume at once)."""

    def validate(self) -> None:
        if self.input_source not in INPUT_SOURCES:
            raise ValueError(f"input_source must be one of {list(INPUT_SOURCES)}, got {self.input_source!r}")
        if not (np.isfinite(self.human_timeout_s) and self.human_timeout_s > 0.0):
            raise ValueError(f"human_timeout_s must be a finite number > 0, got {self.human_timeout_s!r}")
        if int(self.handback_hold_steps) != self.handback_hold_steps or self.handback_hold_steps < 0:
            raise ValueError(f"handback_hold_steps must be an integer >= 0, got {self.handback_hold_steps!r}")


@dataclasses.dataclass
class InterventionSegment:
    first_step: int
    last_step: int
    first_stamp: int
    last_stamp: int
    """Stamps (ns) of the policy actions of the first and last human-controlled step."""

    @property
    def steps(self) -> int:
        return self.last_step - self.first_step + 1


def accepts(input_source: str, human: HumanInput) -> bool:
    """Whether ``input_source`` lets this human input through."""
    if input_source == "any":
        return True
    if input_source == "simulated":
        return human.source == SOURCE_SCRIPTED
    return human.source == SOURCE_HUMAN and human.device == input_source


def _as_six(deltas) -> np.ndarray:
    vec = np.asarray(deltas, dtype=float).reshape(-1)
    if vec.size == 3:
        return np.concatenate([vec, np.zeros(3)])
    return vec


class InterventionMux:
    """The mux state machine; call ``decide`` once per policy action."""

    def __init__(self, config: MuxConfig | None = None, intervention: bool = False, paused: bool = False) -> None:
        self.config = config or MuxConfig()
        self.config.validate()
        self.intervention = bool(intervention)
        """Toggle: a person has taken over (rqt, service), whatever the device reports."""
        self.paused = bool(paused)
        self.step = 0
        """Index of the next decision."""
        self.segments: list[InterventionSegment] = []
        """Finished intervention segments, in order."""
        self.open_segment: InterventionSegment | None = None
        self.counts = {"policy": 0, "human": 0, "human_silent": 0, "handback": 0, "paused": 0}
        self._handback_left = 0

    def reconfigure(self, config: MuxConfig) -> None:
        config.validate()
        self.config = config
        self._handback_left = min(self._handback_left, config.handback_hold_steps)

    def set_intervention(self, on: bool) -> None:
        self.intervention = bool(on)

    def set_pause(self, on: bool) -> None:
        self.paused = bool(on)

    def all_segments(self) -> list[InterventionSegment]:
        """Finished segments plus the one in progress, if any."""
        return self.segments + ([dataclasses.replace(self.open_segment)] if self.open_segment else [])

    def decide(self, policy: Command, stamp: int, human: HumanInput | None, human_age_s: float | None) -> Decision:
        """The executed action for the policy action stamped ``stamp`` (ns).

        ``human``: the latest human input (None if none), ``human_age_s`` its age.
        """
        fresh = (human is not None and human_age_s is not None and human_age_s <= self.config.human_timeout_s
                 and accepts(self.config.input_source, human))
        if fresh and (human.active or self.intervention):
            decision = Decision(_as_six(human.deltas), int(human.gripper), int(human.source), True, "human")
        elif self.intervention:
            decision = Decision(np.zeros(ACTION_DIM), GRIPPER_STAY,
                                int(human.source) if human is not None else SOURCE_HUMAN, True, "human_silent")
        elif self._handback_left > 0:
            self._handback_left -= 1
            decision = Decision(np.zeros(ACTION_DIM), GRIPPER_STAY, SOURCE_POLICY, False, "handback")
        elif self.paused:
            decision = Decision(np.zeros(ACTION_DIM), GRIPPER_STAY, SOURCE_POLICY, False, "paused")
        else:
            decision = Decision(_as_six(policy.deltas), int(policy.gripper), SOURCE_POLICY, False, "policy")
        self._record(decision, stamp)
        self.counts[decision.reason] += 1
        self.step += 1
        return decision

    def _record(self, decision: Decision, stamp: int) -> None:
        if decision.intervention:
            if self.open_segment is None:
                self.open_segment = InterventionSegment(self.step, self.step, stamp, stamp)
            else:
                self.open_segment.last_step, self.open_segment.last_stamp = self.step, stamp
            self._handback_left = self.config.handback_hold_steps
        elif self.open_segment is not None:
            self.segments.append(self.open_segment)
            self.open_segment = None

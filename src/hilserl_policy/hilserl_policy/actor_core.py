"""The policy actor's bookkeeping, without ROS: frames, episodes, unacknowledged transitions.

- ``FrameAssembler``: the driver publishes one *frame* per control step (joint
  states, end-effector pose, task state, images, then the reward last, all with
  one stamp). Parts are kept by stamp; a frame is complete when its reward and
  every other required part of that stamp are in.
- ``EpisodeTracker``: step count, return, intervention steps, the gripper's
  commanded state and the penalty for commands that change it, termination
  (success) versus truncation (time limit).
- ``ResendQueue``: every transition sent and not yet acknowledged, bounded;
  acknowledged ones are dropped, the rest are resent (go-back-N, in sequence
  order) when the acknowledgements stop moving.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Hashable

from hilserl_policy.networks import gripper_change_penalty, gripper_command_to_index

GRIPPER_CLOSE_COMMAND, GRIPPER_OPEN_COMMAND = -1, 1


class FrameAssembler:
    """Collects the parts of each frame by stamp; ``add`` returns the frame once it is complete.

    ``required``: part names besides ``"reward"`` (which completes a frame). Parts older
    than the newest complete frame are discarded; at most ``keep`` stamps are held.
    """

    def __init__(self, required: tuple[str, ...], keep: int = 32) -> None:
        self.required = tuple(required)
        self.keep = keep
        self._parts: collections.OrderedDict[int, dict[str, Any]] = collections.OrderedDict()
        self.newest_complete = -1
        self.incomplete_dropped = 0

    def add(self, part: str, stamp_ns: int, value: Any) -> dict[str, Any] | None:
        if stamp_ns <= self.newest_complete:
            return None  # late part of a frame already delivered (or older)
        parts = self._parts.setdefault(stamp_ns, {})
        parts[part] = value
        while len(self._parts) > self.keep:
            self._parts.popitem(last=False)
            self.incomplete_dropped += 1
        if "reward" in parts and all(name in parts for name in self.required):
            for stamp in [s for s in self._parts if s <= stamp_ns]:
                if stamp < stamp_ns:
                    self.incomplete_dropped += 1
                del self._parts[stamp]
            self.newest_complete = stamp_ns
            return dict(parts, stamp_ns=stamp_ns)
        return None


@dataclasses.dataclass
class EpisodeTracker:
    """One episode's counters as the actor sees it."""

    max_steps: int
    gripper_penalty: float = -0.02
    episode_id: int = 0
    step: int = 0
    episode_return: float = 0.0
    intervention_steps: int = 0
    gripper_closed: bool = False

    def start(self, episode_id: int) -> None:
        self.episode_id, self.step, self.episode_return = episode_id, 0, 0.0
        self.intervention_steps, self.gripper_closed = 0, False

    def record(self, reward: float, success: bool, gripper_command: int, intervened: bool,
               env_terminated: bool = False, env_truncated: bool = False) -> tuple[bool, bool, float]:
        """Count one executed step; returns (terminated, truncated, gripper penalty of the step).
        Success or the environment's own end (``env_terminated``) terminates; the environment's
        time limit (``env_truncated``) or ``max_steps`` truncates."""
        penalty = gripper_change_penalty(gripper_command_to_index(gripper_command), self.gripper_closed,
                                         self.gripper_penalty)
        if gripper_command == GRIPPER_CLOSE_COMMAND:
            self.gripper_closed = True
        elif gripper_command == GRIPPER_OPEN_COMMAND:
            self.gripper_closed = False
        self.step += 1
        self.episode_return += float(reward)
        self.intervention_steps += int(intervened)
        terminated = bool(success) or bool(env_terminated)
        truncated = not terminated and (bool(env_truncated) or self.step >= self.max_steps)
        return terminated, truncated, penalty


class ResendQueue:
    """Transitions sent and not yet acknowledged, by sequence; bounded by ``capacity``."""

    def __init__(self, capacity: int, resend_after_s: float) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity, self.resend_after_s = capacity, resend_after_s
        self._items: collections.OrderedDict[int, Hashable] = collections.OrderedDict()
        self.acked = -1
        self._progress_at = 0.0
        self.resent = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def full(self) -> bool:
        return len(self._items) >= self.capacity

    def add(self, sequence: int, item, now: float) -> None:
        if self.full:
            raise OverflowError(f"{len(self._items)} transitions unacknowledged (capacity {self.capacity})")
        if not self._items:
            self._progress_at = now  # the timeout counts from the oldest unacknowledged send
        self._items[sequence] = item

    def ack(self, highest_contiguous: int, now: float) -> bool:
        """Drop every sequence <= highest_contiguous; True if that moved the frontier."""
        if highest_contiguous <= self.acked:
            return False
        self.acked = highest_contiguous
        while self._items and next(iter(self._items)) <= highest_contiguous:
            self._items.popitem(last=False)
        self._progress_at = now
        return True

    def due(self, now: float) -> list:
        """Everything unacknowledged, oldest first, if the acknowledgements stalled; else []."""
        if not self._items or now - self._progress_at < self.resend_after_s:
            return []
        self._progress_at = now
        self.resent += len(self._items)
        return list(self._items.values())

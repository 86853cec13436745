"""Preallocated replay buffers: each observation frame stored once, next frames explicit.

Layout. A *frame* is one observation (state vector + uint8 images). Frames
live in a ring of ``frame_capacity`` slots; transitions live in a ring of
``capacity`` slots and hold two frame indices, ``obs_frame`` and
``next_frame``, written explicitly at insertion. Within an episode the next
frame of step t is the observation frame of step t+1, so ``add`` stores it
once (it reuses the last written frame when the new observation is equal to
it, compared by content). Nothing ever assumes "next = i + 1": episode ends,
truncations, resets and intervention segments written to the demo buffer all
get the right next frame because it is looked up, not inferred.

Eviction. When a frame slot is overwritten, every transition that still
refers to the old frame is evicted (the valid window of transitions starts
after the last transition that used it). With ``frame_capacity_factor`` 1.05
and episodes of 20 steps or more, the frame ring never binds before the
transition ring; with shorter episodes the buffer holds fewer transitions,
never wrong ones.

Memory: images dominate; frames = 1.05 x transitions, so a buffer's bytes
are ~1.05-1.06x the raw uint8 size of one image set per transition.
"""

from __future__ import annotations

import enum
import math
from typing import Callable, NamedTuple

import numpy as np
import torch

from hilserl_policy.config import ObservationSpec
from hilserl_policy.encoders import STATE_KEY, feature_key


class TransitionSource(enum.IntEnum):
    """Who produced a transition (sets which buffers get it and its sampling weight)."""

    POLICY = 0  # the policy acted: online buffer only
    DEMO = 1  # offline demonstration: demo buffer only
    INTERVENTION = 2  # a person acted during online training: both buffers


class TransitionBatch(NamedTuple):
    observations: dict[str, torch.Tensor]  # "state" (B, S) f32; camera (B, H, W, 3) uint8
    actions: torch.Tensor  # (B, A) float32 continuous actions in [-1, 1]
    gripper_actions: torch.Tensor  # (B,) int64 grasp-critic index (0 close, 1 stay, 2 open)
    rewards: torch.Tensor  # (B,) float32
    gripper_penalties: torch.Tensor  # (B,) float32, <= 0
    next_observations: dict[str, torch.Tensor]
    terminated: torch.Tensor  # (B,) float32 1.0: success/failure, the target does not bootstrap
    truncated: torch.Tensor  # (B,) float32 1.0: time-out, the target still bootstraps
    sources: torch.Tensor  # (B,) int64 TransitionSource


class ReplayBuffer:
    """One preallocated buffer (see module docstring for the layout)."""

    def __init__(self, spec: ObservationSpec, capacity: int, frame_capacity_factor: float = 1.05,
                 source_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)):
        if capacity <= 0:
            raise ValueError(f"capacity must be > 0, got {capacity}")
        self.spec = spec
        self.capacity = capacity
        self.frame_capacity = max(int(math.ceil(capacity * frame_capacity_factor)), capacity + 1)
        self.source_weights = np.asarray(source_weights, dtype=np.float64)
        m, n, size = self.frame_capacity, capacity, spec.image_size
        self.frame_state = np.zeros((m, spec.state_dim), np.float32)
        self.frame_images = {c: np.zeros((m, size, size, 3), np.uint8) for c in spec.camera_names}
        self.frame_last_use = np.full(m, -1, np.int64)  # newest transition using the frame
        self.obs_frame = np.zeros(n, np.int64)
        self.next_frame = np.zeros(n, np.int64)
        self.action = np.zeros((n, spec.action_dim), np.float32)
        self.gripper_action = np.ones(n, np.int8)  # 1 = stay
        self.reward = np.zeros(n, np.float32)
        self.gripper_penalty = np.zeros(n, np.float32)
        self.terminated = np.zeros(n, np.bool_)
        self.truncated = np.zeros(n, np.bool_)
        self.source = np.zeros(n, np.uint8)
        self.num_added = 0  # transitions ever added (absolute index of the next one)
        self.oldest = 0  # absolute index of the oldest valid transition
        self.num_frames = 0  # frames ever written
        self.frame_features: dict[str, np.ndarray] = {}
        self.frame_feature_ready = np.zeros(0, np.bool_)

    # ------------------------------------------------------------------ writing
    def __len__(self) -> int:
        return self.num_added - self.oldest

    def _frame_equals(self, slot: int, observation: dict[str, np.ndarray]) -> bool:
        if not np.array_equal(self.frame_state[slot], observation.get(STATE_KEY, self.frame_state[slot])):
            return False
        return all(np.array_equal(self.frame_images[c][slot], observation[c])
                   for c in self.spec.camera_names)

    def _write_frame(self, observation: dict[str, np.ndarray]) -> int:
        slot = self.num_frames % self.frame_capacity
        # Transitions that still use the frame being overwritten leave the buffer.
        self.oldest = max(self.oldest, int(self.frame_last_use[slot]) + 1)
        if self.spec.state_dim:
            self.frame_state[slot] = observation[STATE_KEY]
        for camera in self.spec.camera_names:
            self.frame_images[camera][slot] = observation[camera]
        if self.frame_features:
            self.frame_feature_ready[slot] = False
        self.frame_last_use[slot] = -1
        self.num_frames += 1
        return slot

    def add(self, observation: dict[str, np.ndarray], action: np.ndarray, reward: float,
            next_observation: dict[str, np.ndarray], terminated: bool, truncated: bool = False,
            source: TransitionSource = TransitionSource.POLICY, gripper_action: int | None = 1,
            gripper_penalty: float = 0.0) -> None:
        """Append one transition; observations are {"state": (S,), camera: (H, W, 3) uint8}.
        ``gripper_action`` None (a task without a gripper: what ``RLPDAgent.act`` returns then)
        is stored as "stay" (1)."""
        if terminated and truncated:
            # A success on the last step is a termination: no bootstrap.
            truncated = False
        t = self.num_added
        last = (self.num_frames - 1) % self.frame_capacity
        if self.num_frames > 0 and self._frame_equals(last, observation):
            obs_slot = last  # continuing episode: obs is the previous next-observation
        else:
            obs_slot = self._write_frame(observation)
        next_slot = self._write_frame(next_observation)
        self.frame_last_use[obs_slot] = t
        self.frame_last_use[next_slot] = t
        self.oldest = max(self.oldest, t + 1 - self.capacity)
        i = t % self.capacity
        self.obs_frame[i] = obs_slot
        self.next_frame[i] = next_slot
        self.action[i] = action
        self.gripper_action[i] = 1 if gripper_action is None else gripper_action
        self.reward[i] = reward
        self.gripper_penalty[i] = gripper_penalty
        self.terminated[i] = terminated
        self.truncated[i] = truncated
        self.source[i] = int(source)
        self.num_added = t + 1

    # ----------------------------------------------------------------- sampling
    def sample_slots(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """Transition slots, uniform or weighted by ``source_weights`` (rejection sampling)."""
        size = len(self)
        if size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        weights = self.source_weights
        if np.all(weights == weights[0]):
            return (self.oldest + rng.integers(0, size, count)) % self.capacity
        accept_prob = weights / weights.max()
        chosen: list[np.ndarray] = []
        needed = count
        while needed > 0:
            slots = (self.oldest + rng.integers(0, size, 2 * needed)) % self.capacity
            keep = slots[rng.random(slots.shape[0]) < accept_prob[self.source[slots]]][:needed]
            chosen.append(keep)
            needed -= keep.shape[0]
        return np.concatenate(chosen)

    def _frame_arrays(self, use_features: bool) -> dict[str, np.ndarray]:
        """Per-frame storage by observation key (features replace images if cached)."""
        arrays = {}
        if self.spec.state_dim:
            arrays[STATE_KEY] = self.frame_state
        for camera in self.spec.camera_names:
            if use_features:
                arrays[feature_key(camera)] = self.frame_features[camera]
            else:
                arrays[camera] = self.frame_images[camera]
        return arrays

    def _gather_frames(self, frames: np.ndarray, use_features: bool,
                       out: dict[str, np.ndarray] | None = None) -> dict[str, torch.Tensor]:
        """Observation rows of ``frames``; with ``out``, written into those arrays (the
        mixed demo/online batch gathers each half in place instead of concatenating)."""
        result = {}
        for key, array in self._frame_arrays(use_features).items():
            if out is None:
                result[key] = torch.from_numpy(array.take(frames, axis=0))
            else:  # mode="clip": unbuffered (frames are valid indices)
                array.take(frames, axis=0, out=out[key], mode="clip")
        return result

    def _check_features_ready(self, slots: np.ndarray) -> bool:
        use_features = bool(self.frame_features)
        if use_features and not self.frame_feature_ready[self.obs_frame[slots]].all():
            raise RuntimeError("feature cache is stale: call refresh_features() before sampling")
        if use_features and not self.frame_feature_ready[self.next_frame[slots]].all():
            raise RuntimeError("feature cache is stale: call refresh_features() before sampling")
        return use_features

    def gather(self, slots: np.ndarray, frames_out: tuple[dict, dict] | None = None
               ) -> TransitionBatch:
        """Batch of the transitions in ``slots``; cached features replace images if ready.

        ``frames_out``: (observation, next observation) arrays by key to write the
        observation rows into; the batch's observation dicts are then empty.
        """
        use_features = self._check_features_ready(slots)
        obs_out, next_out = frames_out if frames_out is not None else (None, None)
        return TransitionBatch(
            observations=self._gather_frames(self.obs_frame[slots], use_features, obs_out),
            actions=torch.from_numpy(self.action[slots]),
            gripper_actions=torch.from_numpy(self.gripper_action[slots].astype(np.int64)),
            rewards=torch.from_numpy(self.reward[slots]),
            gripper_penalties=torch.from_numpy(self.gripper_penalty[slots]),
            next_observations=self._gather_frames(self.next_frame[slots], use_features, next_out),
            terminated=torch.from_numpy(self.terminated[slots].astype(np.float32)),
            truncated=torch.from_numpy(self.truncated[slots].astype(np.float32)),
            sources=torch.from_numpy(self.source[slots].astype(np.int64)),
        )

    def sample(self, count: int, rng: np.random.Generator) -> TransitionBatch:
        return self.gather(self.sample_slots(count, rng))

    # ------------------------------------------------------------ feature cache
    def enable_feature_cache(self, feature_shapes: dict[str, tuple[int, ...]]) -> None:
        """Keep float16 backbone features per frame (for a frozen backbone)."""
        m = self.frame_capacity
        self.frame_features = {c: np.zeros((m, *feature_shapes[c]), np.float16)
                               for c in self.spec.camera_names}
        self.frame_feature_ready = np.zeros(m, np.bool_)

    def refresh_features(self, encode: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]],
                         chunk_size: int = 256) -> int:
        """Encode every stored frame whose features are missing; returns how many."""
        if not self.frame_features:
            return 0
        stored = min(self.num_frames, self.frame_capacity)
        pending = np.flatnonzero(~self.frame_feature_ready[:stored])
        for start in range(0, pending.shape[0], chunk_size):
            frames = pending[start:start + chunk_size]
            images = {c: torch.from_numpy(self.frame_images[c].take(frames, axis=0))
                      for c in self.spec.camera_names}
            with torch.no_grad():
                features = encode(images)
            for camera in self.spec.camera_names:
                self.frame_features[camera][frames] = features[camera].to(torch.float16).numpy()
            self.frame_feature_ready[frames] = True
        return int(pending.shape[0])

    # ------------------------------------------------------------- persistence
    @property
    def nbytes(self) -> int:
        arrays = [self.frame_state, self.frame_last_use, self.obs_frame, self.next_frame,
                  self.action, self.gripper_action, self.reward, self.gripper_penalty,
                  self.terminated, self.truncated, self.source, self.frame_feature_ready,
                  *self.frame_images.values(), *self.frame_features.values()]
        return int(sum(a.nbytes for a in arrays))

    def counters(self) -> dict[str, int]:
        return {"num_added": self.num_added, "oldest": self.oldest, "num_frames": self.num_frames,
                "capacity": self.capacity, "frame_capacity": self.frame_capacity}

    def arrays(self) -> dict[str, np.ndarray]:
        """The filled part of every array (what a checkpoint stores); no feature cache."""
        frames = min(self.num_frames, self.frame_capacity)
        steps = min(self.num_added, self.capacity)
        out = {"frame_state": self.frame_state[:frames], "frame_last_use": self.frame_last_use[:frames]}
        for camera, images in self.frame_images.items():
            out[f"frame_images/{camera}"] = images[:frames]
        for name in ("obs_frame", "next_frame", "action", "gripper_action", "reward",
                     "gripper_penalty", "terminated", "truncated", "source"):
            out[name] = getattr(self, name)[:steps]
        return out

    def load(self, counters: dict[str, int], arrays: dict[str, np.ndarray]) -> None:
        """Restore from ``counters()`` and ``arrays()`` of a buffer with the same layout."""
        for key in ("capacity", "frame_capacity"):
            if counters[key] != getattr(self, key):
                raise ValueError(f"buffer {key} {counters[key]} != configured {getattr(self, key)}")
        for name, value in arrays.items():
            if name.startswith("frame_images/"):
                target = self.frame_images[name.split("/", 1)[1]]
            else:
                target = getattr(self, name)
            if value.dtype != target.dtype or value.shape[1:] != target.shape[1:]:
                raise ValueError(f"buffer array {name}: {value.dtype}{value.shape} does not match "
                                 f"{target.dtype}{target.shape}")
            target[:value.shape[0]] = value
        self.num_added, self.oldest = counters["num_added"], counters["oldest"]
        self.num_frames = counters["num_frames"]
        if self.frame_features:
            self.frame_feature_ready[:] = False


class DemoOnlineReplay:
    """Online + demo buffers; each batch mixes them (RLPD symmetric sampling).

    Policy transitions go to the online buffer, demonstrations to the demo
    buffer, and intervention transitions to both. ``demo_capacity = 0``: no
    demo buffer (``demo`` is None), every batch is online, interventions go
    to the online buffer only and a DEMO transition is refused.
    """

    def __init__(self, spec: ObservationSpec, online_capacity: int, demo_capacity: int,
                 demo_fraction: float = 0.5, frame_capacity_factor: float = 1.05,
                 source_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)):
        if demo_capacity < 0:
            raise ValueError(f"demo_capacity must be >= 0, got {demo_capacity}")
        self.demo_fraction = demo_fraction
        self.online = ReplayBuffer(spec, online_capacity, frame_capacity_factor, source_weights)
        self.demo = (ReplayBuffer(spec, demo_capacity, frame_capacity_factor, source_weights)
                     if demo_capacity > 0 else None)

    @classmethod
    def from_config(cls, spec: ObservationSpec, config,
                    feature_shapes: dict[str, tuple[int, ...]] | None = None) -> "DemoOnlineReplay":
        """Buffers as a ``hilserl_learner.config.ReplayConfig`` describes them.

        With ``cache_frozen_features`` (and cameras), ``feature_shapes`` (the encoder's
        ``feature_shapes``) sizes the feature cache; call ``refresh_features`` before sampling.
        """
        replay = cls(spec, config.online_capacity, config.demo_capacity, config.demo_fraction,
                     config.frame_capacity_factor, config.source_weights)
        if config.cache_frozen_features and spec.camera_names:
            if feature_shapes is None:
                raise ValueError("cache_frozen_features: from_config needs the encoder's feature_shapes")
            for buffer in replay.buffers().values():
                buffer.enable_feature_cache(feature_shapes)
        return replay

    def refresh_features(self, encode) -> int:
        """Encode the stored frames of every buffer whose cached features are missing."""
        return sum(buffer.refresh_features(encode) for buffer in self.buffers().values())

    def add(self, *args, source: TransitionSource = TransitionSource.POLICY, **kwargs) -> None:
        if source == TransitionSource.DEMO and self.demo is None:
            raise ValueError("a DEMO transition needs a demo buffer (demo_capacity is 0)")
        if source != TransitionSource.DEMO:
            self.online.add(*args, source=source, **kwargs)
        if source != TransitionSource.POLICY and self.demo is not None:
            self.demo.add(*args, source=source, **kwargs)

    def buffers(self) -> dict[str, ReplayBuffer]:
        out = {"online": self.online}
        if self.demo is not None:
            out["demo"] = self.demo
        return out

    def sample(self, batch_size: int, rng: np.random.Generator) -> TransitionBatch:
        """``demo_fraction`` of the batch from demos (all from one buffer if the other is empty)."""
        n_demo = int(round(batch_size * self.demo_fraction))
        if self.demo is None or len(self.demo) == 0:
            n_demo = 0
        elif len(self.online) == 0:
            n_demo = batch_size
        chosen = []  # online first, then demo: the order the RNG is drawn in
        if batch_size - n_demo > 0:
            chosen.append((self.online, self.online.sample_slots(batch_size - n_demo, rng)))
        if n_demo > 0:
            chosen.append((self.demo, self.demo.sample_slots(n_demo, rng)))
        if len(chosen) == 1:
            return chosen[0][0].gather(chosen[0][1])
        use_features = [buffer._check_features_ready(slots) for buffer, slots in chosen]
        if use_features[0] != use_features[1]:  # different keys: gather each, concatenate
            return concat_batches([buffer.gather(slots) for buffer, slots in chosen])
        # Observation rows (the bulk of an image batch) go straight into the batch arrays.
        arrays = chosen[0][0]._frame_arrays(use_features[0])
        obs, nxt = ({key: np.empty((batch_size, *a.shape[1:]), a.dtype)
                     for key, a in arrays.items()} for _ in range(2))
        parts, start = [], 0
        for buffer, slots in chosen:
            rows = slice(start, start + slots.shape[0])
            parts.append(buffer.gather(slots, ({k: v[rows] for k, v in obs.items()},
                                               {k: v[rows] for k, v in nxt.items()})))
            start = rows.stop
        batch = concat_batches(parts)
        return batch._replace(observations={k: torch.from_numpy(v) for k, v in obs.items()},
                              next_observations={k: torch.from_numpy(v) for k, v in nxt.items()})


def concat_batches(parts: list[TransitionBatch]) -> TransitionBatch:
    def cat(values):
        if isinstance(values[0], dict):
            return {k: torch.cat([v[k] for v in values]) for k in values[0]}
        return torch.cat(values)

    return TransitionBatch(*(cat([p[i] for p in parts]) for i in range(len(parts[0]))))

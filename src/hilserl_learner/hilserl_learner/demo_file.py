"""Demonstration datasets as one safetensors file with JSON metadata (ROS-free, no pickle).

Arrays (N transitions, M observation frames; each frame stored once, as in the
replay buffer, and every transition names its observation and next-observation
frame explicitly, so episode ends are never inferred):

| name | dtype, shape | meaning |
|---|---|---|
| ``frames/state`` | float32 (M, state_dim) | state vectors (when state_dim > 0) |
| ``frames/<camera>`` | uint8 (M, H, W, 3) | images of each camera of the spec |
| ``obs_frame``, ``next_frame`` | int64 (N,) | frame of the observation / next observation |
| ``action`` | float32 (N, action_dim) | executed continuous action in [-1, 1] |
| ``gripper_action`` | int8 (N,) | grasp-critic index 0 close, 1 stay, 2 open |
| ``reward``, ``gripper_penalty`` | float32 (N,) | task reward; gripper penalty (<= 0) |
| ``terminated``, ``truncated`` | bool (N,) | success/failure (no bootstrap); time-out |
| ``episode`` | int64 (N,) | episode index, 0..episodes-1 |

Metadata (``__metadata__["hilserl_demos"]``, JSON): format version, the
ObservationSpec, the observation layout that built the state vectors (name,
num_joints, relative_scale, dynamics) when known, episodes, successes, transitions and
free-form ``source``. ``read_demo_file`` checks all of it and raises
``DemoFileError`` naming the file and what is wrong.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from hilserl_policy.config import ObservationSpec, config_from_dict, config_to_dict
from hilserl_policy.encoders import STATE_KEY

METADATA_KEY = "hilserl_demos"
FORMAT_VERSION = 1
_TRANSITION_ARRAYS = {"obs_frame": np.int64, "next_frame": np.int64, "action": np.float32,
                      "gripper_action": np.int8, "reward": np.float32,
                      "gripper_penalty": np.float32, "terminated": np.bool_,
                      "truncated": np.bool_, "episode": np.int64}


# What the stored data depends on; normalisation is the learner's choice, not the data's.
DATA_SPEC_FIELDS = ("state_dim", "action_dim", "camera_names", "image_size", "has_gripper")


class DemoFileError(ValueError):
    """A demo file is missing, unreadable or inconsistent (the message names it)."""


@dataclasses.dataclass
class DemoDataset:
    """Frames and transitions of a set of demonstration episodes (see module doc)."""

    spec: ObservationSpec
    frames: dict[str, np.ndarray]  # "state" and camera names -> (M, ...) arrays
    arrays: dict[str, np.ndarray]  # the transition arrays of the module doc
    episodes: int
    successes: int
    layout: dict[str, Any] | None = None  # ObservationLayout fields that built "state"
    source: str = ""

    def __len__(self) -> int:
        return int(self.arrays["action"].shape[0])

    def frame(self, index: int) -> dict[str, np.ndarray]:
        return {key: values[index] for key, values in self.frames.items()}

    def transitions(self) -> Iterator[dict[str, Any]]:
        """Each transition as keyword arguments of ``ReplayBuffer.add`` (minus ``source``)."""
        a = self.arrays
        for i in range(len(self)):
            yield dict(observation=self.frame(int(a["obs_frame"][i])), action=a["action"][i],
                       reward=float(a["reward"][i]),
                       next_observation=self.frame(int(a["next_frame"][i])),
                       terminated=bool(a["terminated"][i]), truncated=bool(a["truncated"][i]),
                       gripper_action=int(a["gripper_action"][i]),
                       gripper_penalty=float(a["gripper_penalty"][i]))

    def add_to(self, replay) -> int:
        """Add every transition to ``replay`` (a ``DemoOnlineReplay``) as DEMO; returns the count."""
        from hilserl_learner.buffers import TransitionSource

        count = 0
        for kwargs in self.transitions():
            replay.add(source=TransitionSource.DEMO, **kwargs)
            count += 1
        return count


class DemoDatasetBuilder:
    """Collects episodes step by step; ``build()`` returns the ``DemoDataset``."""

    def __init__(self, spec: ObservationSpec, layout: dict[str, Any] | None = None, source: str = ""):
        self.spec = spec
        self.layout = layout
        self.source = source
        self._frames: dict[str, list[np.ndarray]] = {k: [] for k in _frame_keys(spec)}
        self._rows: dict[str, list] = {k: [] for k in _TRANSITION_ARRAYS}
        self._last_frame: int | None = None  # next-observation frame of the previous step
        self._episode_steps = 0
        self.episodes = 0
        self.successes = 0

    def _add_frame(self, observation: dict[str, np.ndarray]) -> int:
        for key in self._frames:
            self._frames[key].append(np.asarray(observation[key]).copy())
        return len(self._frames[next(iter(self._frames))]) - 1

    def add(self, observation: dict[str, np.ndarray], action: np.ndarray, gripper_action: int,
            reward: float, next_observation: dict[str, np.ndarray], terminated: bool,
            truncated: bool, gripper_penalty: float = 0.0) -> None:
        """One step of the current episode (its observation is the previous next-observation)."""
        if self._last_frame is None:
            obs_frame = self._add_frame(observation)
        else:
            obs_frame = self._last_frame
        next_frame = self._add_frame(next_observation)
        self._last_frame = next_frame
        row = dict(obs_frame=obs_frame, next_frame=next_frame,
                   action=np.asarray(action, np.float32), gripper_action=gripper_action,
                   reward=reward, gripper_penalty=gripper_penalty, terminated=terminated,
                   truncated=truncated, episode=self.episodes)
        for key, value in row.items():
            self._rows[key].append(value)
        self._episode_steps += 1

    def discard_episode(self) -> None:
        """Forget the steps of the current (e.g. failed) episode."""
        steps = self._episode_steps
        if steps:
            first_frame = self._rows["obs_frame"][-steps]
            for rows in self._rows.values():
                del rows[-steps:]
            for frames in self._frames.values():
                del frames[first_frame:]
        self._last_frame = None
        self._episode_steps = 0

    def end_episode(self, success: bool) -> None:
        if self._episode_steps == 0:
            raise ValueError("end_episode without any step")
        self.episodes += 1
        self.successes += int(bool(success))
        self._last_frame = None
        self._episode_steps = 0

    def build(self) -> DemoDataset:
        if self._episode_steps:
            raise ValueError("the last episode was neither ended nor discarded")
        frames = {}
        for key, values in self._frames.items():
            dtype = np.float32 if key == STATE_KEY else np.uint8
            shape = _frame_shape(self.spec, key)
            frames[key] = np.asarray(values, dtype).reshape((len(values),) + shape)
        arrays = {}
        for key, dtype in _TRANSITION_ARRAYS.items():
            values = np.asarray(self._rows[key], dtype)
            if key == "action":
                values = values.reshape(-1, self.spec.action_dim)
            arrays[key] = values
        dataset = DemoDataset(self.spec, frames, arrays, self.episodes, self.successes,
                              self.layout, self.source)
        validate_dataset(dataset, "<in memory>")
        return dataset


def _frame_keys(spec: ObservationSpec) -> list[str]:
    return ([STATE_KEY] if spec.state_dim else []) + list(spec.camera_names)


def _frame_shape(spec: ObservationSpec, key: str) -> tuple[int, ...]:
    if key == STATE_KEY:
        return (spec.state_dim,)
    return (spec.image_size, spec.image_size, 3)


def validate_dataset(data: DemoDataset, name: str | Path) -> None:
    """Every array present with its dtype and shape, indices in range, values finite."""
    def fail(message: str) -> None:
        raise DemoFileError(f"{name}: {message}")

    spec = data.spec
    frame_count = None
    for key in _frame_keys(spec):
        if key not in data.frames:
            fail(f"missing frames/{key}")
        values = data.frames[key]
        dtype = np.float32 if key == STATE_KEY else np.uint8
        shape = _frame_shape(spec, key)
        if values.dtype != dtype or values.shape[1:] != shape:
            fail(f"frames/{key} is {values.dtype}{values.shape}, expected {np.dtype(dtype)}(M, "
                 f"{', '.join(map(str, shape))})")
        if frame_count is not None and values.shape[0] != frame_count:
            fail(f"frames/{key} has {values.shape[0]} frames, others have {frame_count}")
        frame_count = values.shape[0]
        if key == STATE_KEY and not np.all(np.isfinite(values)):
            fail("frames/state holds NaN or inf")
    extra = sorted(set(data.frames) - set(_frame_keys(spec)))
    if extra:
        fail(f"frames {extra} are not in the observation spec")
    n = None
    for key, dtype in _TRANSITION_ARRAYS.items():
        if key not in data.arrays:
            fail(f"missing array {key!r}")
        values = data.arrays[key]
        if values.dtype != dtype:
            fail(f"{key} has dtype {values.dtype}, expected {np.dtype(dtype)}")
        expected_ndim = 2 if key == "action" else 1
        if values.ndim != expected_ndim:
            fail(f"{key} has shape {values.shape}, expected {expected_ndim} dimension(s)")
        if n is not None and values.shape[0] != n:
            fail(f"{key} has {values.shape[0]} rows, 'action' has {n}")
        n = values.shape[0] if n is None else n
    a = data.arrays
    if a["action"].shape[1] != spec.action_dim:
        fail(f"action has {a['action'].shape[1]} columns, spec.action_dim is {spec.action_dim}")
    if n == 0:
        fail("no transitions")
    for key in ("obs_frame", "next_frame"):
        if a[key].min() < 0 or a[key].max() >= frame_count:
            fail(f"{key} indexes frame {int(a[key].max() if a[key].max() >= frame_count else a[key].min())}"
                 f" outside 0..{frame_count - 1}")
    for key in ("action", "reward", "gripper_penalty"):
        if not np.all(np.isfinite(a[key])):
            fail(f"{key} holds NaN or inf")
    if np.abs(a["action"]).max() > 1.0 + 1e-6:
        fail(f"action outside [-1, 1] (max |a| = {float(np.abs(a['action']).max()):.3g})")
    if a["gripper_action"].min() < 0 or a["gripper_action"].max() > 2:
        fail("gripper_action must be 0 (close), 1 (stay) or 2 (open)")
    if a["gripper_penalty"].max() > 0:
        fail("gripper_penalty must be <= 0")
    if np.any(a["terminated"] & a["truncated"]):
        fail("a transition is both terminated and truncated")
    if a["episode"].min() < 0 or a["episode"].max() >= data.episodes or np.any(np.diff(a["episode"]) < 0):
        fail(f"episode indices must be ascending in 0..{data.episodes - 1}")
    if len(np.unique(a["episode"])) != data.episodes:
        fail(f"metadata says {data.episodes} episodes, the arrays hold {len(np.unique(a['episode']))}")
    if not 0 <= data.successes <= data.episodes:
        fail(f"successes {data.successes} not in 0..{data.episodes}")


def write_demo_file(path: str | Path, data: DemoDataset) -> Path:
    """Write ``data`` atomically (temporary file, fsync, rename); returns the path."""
    from safetensors.numpy import save

    path = Path(path)
    validate_dataset(data, path)
    arrays = {f"frames/{k}": v for k, v in data.frames.items()}
    arrays.update(data.arrays)
    meta = {"format_version": FORMAT_VERSION, "spec": config_to_dict(data.spec),
            "layout": data.layout, "episodes": data.episodes, "successes": data.successes,
            "transitions": len(data), "source": data.source}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        blob = save({k: np.ascontiguousarray(v) for k, v in arrays.items()},
                    metadata={METADATA_KEY: json.dumps(meta, sort_keys=True)})
        with open(tmp, "wb") as handle:
            handle.write(blob)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def read_demo_file(path: str | Path, expect_spec: ObservationSpec | None = None) -> DemoDataset:
    """Load and validate a demo file; ``expect_spec``: refuse demos whose observation
    differs from it in any of ``DATA_SPEC_FIELDS`` (naming the fields)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise DemoFileError(f"{path}: demo file not found")
    try:
        with safe_open(str(path), framework="np") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as error:  # safetensors raises its own error types
        raise DemoFileError(f"{path}: not a readable safetensors file ({error})") from error
    if METADATA_KEY not in metadata:
        raise DemoFileError(f"{path}: no {METADATA_KEY!r} metadata (not a demo file)")
    try:
        meta = json.loads(metadata[METADATA_KEY])
        if meta.get("format_version") != FORMAT_VERSION:
            raise DemoFileError(f"{path}: format_version {meta.get('format_version')!r}, "
                                f"this code reads {FORMAT_VERSION}")
        spec = config_from_dict(ObservationSpec, meta["spec"])
        episodes, successes = int(meta["episodes"]), int(meta["successes"])
    except DemoFileError:
        raise
    except (KeyError, TypeError, ValueError) as error:
        raise DemoFileError(f"{path}: bad metadata ({error})") from error
    if expect_spec is not None:
        da, de = config_to_dict(spec), config_to_dict(expect_spec)
        diffs = [f"{k}={da[k]!r} (learner: {de[k]!r})" for k in DATA_SPEC_FIELDS if da[k] != de[k]]
    if expect_spec is not None and diffs:
        raise DemoFileError(f"{path}: observation spec differs from the learner's: {', '.join(diffs)}")
    frames = {k[len("frames/"):]: v for k, v in tensors.items() if k.startswith("frames/")}
    arrays = {k: v for k, v in tensors.items() if not k.startswith("frames/")}
    unknown = sorted(set(arrays) - set(_TRANSITION_ARRAYS))
    if unknown:
        raise DemoFileError(f"{path}: unknown arrays {unknown}")
    data = DemoDataset(spec, frames, arrays, episodes, successes, meta.get("layout"),
                       str(meta.get("source", "")))
    validate_dataset(data, path)
    if meta.get("transitions") != len(data):
        raise DemoFileError(f"{path}: metadata says {meta.get('transitions')} transitions, "
                            f"the arrays hold {len(data)}")
    return data

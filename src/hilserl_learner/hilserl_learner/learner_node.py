"""The learner: durable transition intake, RLPD training thread, weights, checkpoints.

Data path (one transition):

1. ``_on_transitions`` (executor thread, raw CDR bytes): per actor only the next
   sequence (highest accepted + 1) is taken; lower ones are duplicates (dropped,
   counted, answered with an ack), higher ones are gaps (dropped, counted; the
   actor resends everything above its last ack). The bytes are appended to the
   transition log (``transition_log.TransitionLog``).
2. The sync thread fsyncs the log in small batches (``sync_every`` records or
   ``sync_interval_ms``), then adds the durable transitions to the replay
   (policy steps -> online; intervened steps -> online and demo) and publishes
   ``TransitionAck``: ``highest_contiguous`` = highest sequence on disk.
3. The training thread runs ``RLPDAgent.update`` at the update-to-data ratio
   (``pacing: utd``; ``highest_trained`` = highest sequence whose updates are
   done, for paced actors) or as fast as it can (``pacing: free``), publishes
   ``PolicyParams`` every ``publish_every_updates`` updates (and once at start),
   TRANSIENT_LOCAL depth 1, so a late actor gets the newest weights at once.

Crash safety: a checkpoint (``hilserl_learner.checkpoint``) stores networks,
optimisers, buffers and, in its counters, the log position of the last
transition in the buffers and each actor's stored frontier. On start the
learner loads the latest checkpoint, replays the log after that position, and
retires log segments a checkpoint holds. Nothing waits on an actor: every wait
has a timeout, so a dead actor never blocks the learner (R6).
"""

from __future__ import annotations

import array
import collections
import dataclasses
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
import torch
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.exceptions import ParameterUninitializedException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSDurabilityPolicy, QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy
from rclpy.serialization import deserialize_message

from hilserl_learner.buffers import DemoOnlineReplay, TransitionSource
from hilserl_learner.checkpoint import (
    MANIFEST,
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    read_json,
    save_checkpoint,
)
from hilserl_learner.config import (
    CheckpointConfig,
    LearnerConfig,
    ReplayConfig,
    RLPDConfig,
)
from hilserl_learner.bag_demos import BagConversion, dataset_from_bags
from hilserl_learner.demo_file import read_demo_file
from hilserl_learner.rlpd import RLPDAgent, UpdateSchedule, metrics_to_floats
from hilserl_learner.sequence_tracker import SequenceTracker
from hilserl_learner.transition_log import TransitionLog, TransitionLogError
from hilserl_msgs.msg import Action, EpisodeStatus, PolicyParams, Topics, Transition, TransitionAck
from hilserl_msgs.srv import SaveCheckpoint
from hilserl_policy.config import (
    ActorConfig,
    CriticConfig,
    EncoderConfig,
    GraspCriticConfig,
    NetworkConfig,
    ObservationSpec,
)
from hilserl_policy.encoders import STATE_KEY
from hilserl_policy.networks import gripper_command_to_index
from hilserl_policy.observation import GripperCalibration, ObservationLayout
from hilserl_policy.policy_export import FORMAT, export_policy, sha256_hex

RELIABLE = QoSProfile(depth=1000, reliability=QoSReliabilityPolicy.RELIABLE,
                      durability=QoSDurabilityPolicy.VOLATILE, history=QoSHistoryPolicy.KEEP_LAST)
ACK_REPEAT_S = 1.0  # every known actor's acknowledgement is published again this often
ACKS = QoSProfile(depth=100, reliability=QoSReliabilityPolicy.RELIABLE,
                  durability=QoSDurabilityPolicy.VOLATILE, history=QoSHistoryPolicy.KEEP_LAST)
LATEST_WEIGHTS = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE,
                            durability=QoSDurabilityPolicy.TRANSIENT_LOCAL,
                            history=QoSHistoryPolicy.KEEP_LAST)
PACING_MODES = ("utd", "free")
# Parameters applied while running; every other one is read-only.
RUNTIME_PARAMETERS = ("pacing", "publish_every_updates", "checkpoint_period_s", "report_period_s")
LOG_POSITION = "log_position"
POLICY_VERSION = "policy_version"
ACTOR_PREFIX = "stored/"
VERSION_FILE = "policy_version"
RESTART_HINT_AFTER = 100  # sequence 0 after this many stored: warn about a reused actor id
CHECKPOINT_POLL_S = 0.5  # how often the checkpoint thread looks at checkpoint_period_s
REPORT_LOCK_WAIT_S = 0.02  # the progress line skips a period rather than hold up the intake


# ------------------------------------------------------------------ parameters
def _int(description: str, low: int, high: int, read_only: bool = True) -> ParameterDescriptor:
    return ParameterDescriptor(description=description, read_only=read_only,
                               integer_range=[IntegerRange(from_value=low, to_value=high)])


def _float(description: str, low: float, high: float, read_only: bool = True) -> ParameterDescriptor:
    return ParameterDescriptor(description=description, read_only=read_only,
                               floating_point_range=[FloatingPointRange(from_value=low, to_value=high)])


def _text(description: str, read_only: bool = True) -> ParameterDescriptor:
    return ParameterDescriptor(description=description, read_only=read_only)


PARAMETERS: dict[str, tuple[Any, ParameterDescriptor]] = {
    # observation spec (must match the actor's and the demo file's)
    "state_dim": (10, _int("Length of the state vector (the observation layout's dim).", 0, 4096)),
    "action_dim": (3, _int("Continuous action dims, normalised to [-1, 1].", 1, 64)),
    "camera_names": ("", _text("Comma-separated camera keys (empty: state only), e.g. front,wrist.")),
    "image_size": (128, _int("Square image side in pixels.", 8, 1024)),
    "has_gripper": (True, _text("A 3-way gripper command is learned by the grasp critic.")),
    "gym_env_id": ("", _text("Train on this gymnasium environment hosted by the bridge (scene gym): "
                             "state_dim and action_dim come from its spaces, no gripper, no layout "
                             "check. Empty: the spec parameters below.")),
    "gym_env_kwargs": ("{}", _text("JSON keyword arguments of gym_env_id (as the bridge's).")),
    "observation_layout": ("relative", _text(
        "Observation layout the actor builds (hilserl_policy.observation); checked against the demo "
        "file's layout. Empty: not checked.")),
    "observation_dynamics": (False, _text(
        "The actor's observation_dynamics (joint velocities and efforts appended to the layout); "
        "checked against the demo file's layout, used to convert demo_bags.")),
    "state_normalization": ("none", _text("State normalisation: none, bounds or running.")),
    "state_low": (Parameter.Type.DOUBLE_ARRAY, _text("Per-element low of the state (bounds).")),
    "state_high": (Parameter.Type.DOUBLE_ARRAY, _text("Per-element high of the state (bounds).")),
    # networks
    "hidden_dims": ([256, 256], _text("Hidden widths of actor, critics and grasp critic.")),
    "num_critics": (2, _int("Critic ensemble size.", 1, 64)),
    "target_subset_size": (2, _int("Target = min over a random subset of this many critics.", 1, 64)),
    "backbone": ("small_cnn", _text("Image backbone: small_cnn or resnet10.")),
    "pretrained_path": ("", _text("Local safetensors file of resnet10 weights (empty: none).")),
    "freeze_backbone": (False, _text("Freeze the image backbone.")),
    # update
    "batch_size": (256, _int("Transitions per gradient update.", 1, 1 << 16)),
    "discount": (0.97, _float("Discount gamma.", 0.0, 1.0)),
    "utd_ratio": (1.0, _float("Critic updates per new online transition (pacing utd).", 0.001, 1e4)),
    "critic_actor_ratio": (2, _int("Critic updates per actor update.", 1, 100)),
    "initial_temperature": (0.01, _float("Entropy temperature alpha at the start (HIL-SERL: 0.01; SAC: 1).",
                                         1e-6, 1e3)),
    "target_entropy_scale": (0.5, _float("Target entropy = -scale x action dims (HIL-SERL: 0.5; SAC: 1).",
                                          0.0, 100.0)),
    "learning_starts": (100, _int("Online transitions before the first update.", 0, 1 << 30)),
    "actor_bc_weight": (0.5, _float("Behaviour-cloning weight of the actor on demonstration and "
                                    "intervention transitions (0: pure RLPD).", 0.0, 1e3)),
    "grasp_margin_weight": (1.0, _float("Large-margin (DQfD) loss weight of the grasp critic on "
                                        "demonstration and intervention transitions (0: plain double "
                                        "DQN).", 0.0, 1e3)),
    "grasp_margin": (0.1, _float("Margin by which the expert's gripper choice must lead.", 0.0, 1e3)),
    "random_steps": (0, _int("Warm-up env steps with uniform random actions (sent with the "
                             "weights; the actor applies them).", 0, 1 << 30)),
    "seed": (0, _int("Seed of the learner's RNGs.", 0, 1 << 31)),
    # replay
    "online_capacity": (200_000, _int("Online buffer capacity (transitions).", 1, 1 << 31)),
    "demo_capacity": (200_000, _int("Demo buffer capacity (0: no demo buffer).", 0, 1 << 31)),
    "demo_fraction": (0.5, _float("Share of each batch drawn from the demo buffer.", 0.0, 1.0)),
    "demo_bags": ("", _text("Demo bags (record_demos): a bag folder or a folder of bag folders, converted "
                            "into the demo buffer at a fresh start (successful episodes; docs/demos.md).")),
    "num_joints": (7, _int("demo_bags: arm joints (gripper excluded) in joint_states, first in order.", 1, 32)),
    "gripper_joint": ("right_driver_joint", _text("demo_bags: the gripper joint in joint_states (as the actor's).")),
    "gripper_closed_position": (0.8, _float("demo_bags: gripper joint position when closed.", -1e3, 1e3)),
    "gripper_open_position": (0.0, _float("demo_bags: gripper joint position when open.", -1e3, 1e3)),
    "demo_file": ("", _text("Demo file (record_expert_demos) loaded into the demo buffer at a "
                            "fresh start (empty: none).")),
    # durability
    "checkpoint_dir": ("checkpoints/learner", _text("Checkpoint root; also the default of SaveCheckpoint.")),
    "keep_last": (2, _int("Complete checkpoints kept.", 1, 1000)),
    "resume": (True, _text("Load the latest checkpoint and replay the log at start.")),
    "require_checkpoint": (False, _text("Refuse to start without a loadable checkpoint in checkpoint_dir "
                                        "(evaluation: never serve untrained weights).")),
    "transition_log_dir": ("", _text("Transition log folder (empty: <checkpoint_dir>/transition_log).")),
    "sync_every": (64, _int("fsync the log after this many records...", 1, 1 << 20)),
    "sync_interval_ms": (0.0, _float("...or this long after the oldest unsynced one (0: at once; "
                                     "records arriving during an fsync share the next one).",
                                     0.0, 1000.0)),
    "segment_mb": (64, _int("Transition log segment size (MiB).", 1, 1 << 16)),
    "checkpoint_on_exit": (True, _text("Write a checkpoint on a clean shutdown.")),
    # outputs
    "tensorboard_dir": ("", _text("TensorBoard log folder (empty: no TensorBoard).")),
    "metrics_every_updates": (50, _int("Write update metrics every this many updates.", 1, 1 << 20)),
    "torch_threads": (1, _int("torch intra-op threads of the training thread.", 1, 256)),
    # applied at run time
    "pacing": ("utd", _text("utd: updates at utd_ratio per online transition (highest_trained paces "
                            "actors); free: train as fast as possible.", read_only=False)),
    "publish_every_updates": (50, _int("Publish PolicyParams every this many updates.", 1, 1 << 20,
                                       read_only=False)),
    "checkpoint_period_s": (300.0, _float("Seconds between periodic checkpoints (0: off).", 0.0, 1e6,
                                          read_only=False)),
    "report_period_s": (5.0, _float("Seconds between progress lines.", 0.5, 3600.0, read_only=False)),
}


def _hosted_task_spec(env_id: str, kwargs_json: str) -> dict[str, Any]:
    """Spec parameters of a gymnasium task as the bridge hosts it (its state vector and action)."""
    import json

    from hilserl_sim.gym_bridge import GymEnvHost

    try:
        kwargs = json.loads(kwargs_json)
    except json.JSONDecodeError as error:
        raise ValueError(f"gym_env_kwargs is not JSON: {error}") from None
    host = GymEnvHost(env_id, kwargs)  # ValueError naming gym_env_id when it cannot be hosted
    try:
        if host.camera_names:
            raise ValueError(f"gym_env_id {env_id!r} has image observations {list(host.camera_names)}; "
                             "the training graph takes hosted tasks with state observations only")
        return {"state_dim": len(host.joint_names), "action_dim": len(host.action_map), "has_gripper": False,
                "camera_names": "", "observation_layout": "", "observation_dynamics": False}
    finally:
        host.close()


def _spec_and_config(p: dict[str, Any]) -> LearnerConfig:
    hidden = tuple(int(h) for h in p["hidden_dims"])
    spec = ObservationSpec(state_dim=p["state_dim"], action_dim=p["action_dim"],
                           camera_names=tuple(c.strip() for c in p["camera_names"].split(",") if c.strip()),
                           image_size=p["image_size"], has_gripper=p["has_gripper"],
                           state_normalization=p["state_normalization"],
                           state_low=tuple(p["state_low"] or ()), state_high=tuple(p["state_high"] or ()))
    networks = NetworkConfig(
        encoder=EncoderConfig(backbone=p["backbone"], pretrained_path=p["pretrained_path"] or None,
                              freeze_backbone=p["freeze_backbone"]),
        actor=ActorConfig(hidden_dims=hidden),
        critic=CriticConfig(hidden_dims=hidden, num_critics=p["num_critics"],
                            target_subset_size=p["target_subset_size"]),
        grasp_critic=GraspCriticConfig(hidden_dims=hidden))
    rlpd_fields = {f.name for f in dataclasses.fields(RLPDConfig)}
    rlpd = {k: p[k] for k in ("batch_size", "discount", "utd_ratio", "critic_actor_ratio",
                              "initial_temperature", "target_entropy_scale",
                              "learning_starts", "seed", "random_steps", "actor_bc_weight",
                              "grasp_margin_weight", "grasp_margin") if k in rlpd_fields}
    replay = ReplayConfig(online_capacity=p["online_capacity"], demo_capacity=p["demo_capacity"],
                          demo_fraction=p["demo_fraction"])
    return LearnerConfig(spec=spec, networks=networks, rlpd=RLPDConfig(**rlpd), replay=replay,
                         checkpoint=CheckpointConfig(directory=p["checkpoint_dir"],
                                                     keep_last=p["keep_last"]))


# ------------------------------------------------------------ message -> replay
def _image(named, spec: ObservationSpec) -> np.ndarray:
    image = named.image
    size = spec.image_size
    if (image.height, image.width) != (size, size) or image.encoding != "rgb8":
        raise ValueError(f"image {named.name!r} is {image.encoding} {image.width}x{image.height}, "
                         f"expected rgb8 {size}x{size}")
    data = np.frombuffer(bytes(image.data), np.uint8)
    if image.step != size * 3 or data.shape[0] != size * size * 3:
        raise ValueError(f"image {named.name!r}: {data.shape[0]} bytes, step {image.step}")
    return data.reshape(size, size, 3)


def observation_from_msg(msg, spec: ObservationSpec) -> dict[str, np.ndarray]:
    """An ``Observation`` message as the replay's observation dict (ValueError naming the field)."""
    obs = {}
    if spec.state_dim:
        state = np.asarray(msg.state, np.float32)
        if state.shape != (spec.state_dim,):
            raise ValueError(f"state has {state.shape[0]} values, expected {spec.state_dim}")
        if not np.all(np.isfinite(state)):
            raise ValueError("state holds NaN or inf")
        obs[STATE_KEY] = state
    images = {named.name: named for named in msg.images}
    for camera in spec.camera_names:
        if camera not in images:
            raise ValueError(f"missing image {camera!r}")
        obs[camera] = _image(images[camera], spec)
    return obs


def replay_args_from_transition(msg: Transition, spec: ObservationSpec) -> dict[str, Any]:
    """Keyword arguments of ``DemoOnlineReplay.add`` for one ``Transition`` message, plus
    ``episode_start`` (its step is 0), which the caller pops."""
    action = np.asarray(msg.action, np.float32)
    if action.shape != (spec.action_dim,):
        raise ValueError(f"action has {action.shape[0]} values, expected {spec.action_dim}")
    if not np.all(np.isfinite(action)) or np.abs(action).max(initial=0.0) > 1.0 + 1e-6:
        raise ValueError(f"action must be finite and in [-1, 1], got {action.tolist()}")
    for name in ("reward", "gripper_penalty"):
        if not np.isfinite(getattr(msg, name)):
            raise ValueError(f"{name} is not finite")
    if msg.gripper_penalty > 0:
        raise ValueError(f"gripper_penalty must be <= 0, got {msg.gripper_penalty}")
    gripper = 1
    if spec.has_gripper:
        if msg.gripper_action not in (Action.GRIPPER_CLOSE, Action.GRIPPER_STAY, Action.GRIPPER_OPEN):
            raise ValueError(f"gripper_action {msg.gripper_action} is not an Action.GRIPPER_* value")
        gripper = gripper_command_to_index(msg.gripper_action)
    return dict(observation=observation_from_msg(msg.observation, spec), action=action,
                reward=float(msg.reward), next_observation=observation_from_msg(msg.next_observation, spec),
                terminated=bool(msg.terminated), truncated=bool(msg.truncated),
                source=TransitionSource.INTERVENTION if msg.intervened else TransitionSource.POLICY,
                gripper_action=gripper, gripper_penalty=float(msg.gripper_penalty),
                episode_start=msg.step == 0)


def _checkpoint_positions(root: Path) -> list[tuple[int, Path]]:
    """(log position, folder) of every complete checkpoint under ``root`` that a learner wrote."""
    out = []
    for folder in root.glob("step_*"):
        if not (folder / MANIFEST).is_file():
            continue
        try:
            position = int(read_json(folder / "state.json")["counters"][LOG_POSITION])
        except (CheckpointError, KeyError, TypeError, ValueError):
            continue
        out.append((position, folder))
    return out


def _checkpoint_candidates(root: Path) -> list[Path]:
    """Checkpoint folders under ``root`` newest first: LATEST's, then the rest by log position."""
    if not root.is_dir():
        return []
    latest = latest_checkpoint(root)
    others = sorted((f for f in _checkpoint_positions(root) if f[1] != latest), reverse=True)
    return ([latest] if latest is not None else []) + [folder for _, folder in others]


@dataclasses.dataclass
class ActorState:
    """What the learner knows of one actor (under the node's lock)."""

    rejected: int = 0  # durable transitions not added to the replay (malformed)
    gaps: int = 0  # transitions dropped because an earlier sequence was missing
    trained: int = -1  # highest sequence whose updates are done
    received_since_report: int = 0


class LearnerNode(Node):
    """See the module docstring. ``Node`` keyword arguments pass through (tests)."""

    def __init__(self, **node_kwargs) -> None:
        super().__init__("learner", **node_kwargs)
        self.log: TransitionLog | None = None
        self._threads: list[threading.Thread] = []
        self.failure = ""  # set when the sync or training thread died
        try:
            self._setup()
        except BaseException:
            if self.log is not None:
                self.log.close()
            super().destroy_node()
            raise

    def _setup(self) -> None:
        for name, (default, descriptor) in PARAMETERS.items():
            self.declare_parameter(name, default, descriptor)
        p = {name: self._value(name) for name in PARAMETERS}
        for name in ("pacing",):
            if p[name] not in PACING_MODES:
                raise ValueError(f"parameter pacing: must be one of {PACING_MODES}, got {p[name]!r}")
        if p["gym_env_id"]:
            p.update(_hosted_task_spec(p["gym_env_id"], p["gym_env_kwargs"]))
        self.config = _spec_and_config(p)  # ValueError naming the field on bad values
        if p["require_checkpoint"] and p["resume"]:
            self.config = self._served_configuration(Path(p["checkpoint_dir"]), self.config)
        self.spec = self.config.spec
        self._p = p
        torch.set_num_threads(p["torch_threads"])

        self._lock = threading.Lock()  # replay, stored trackers, actor states, counters
        self._episodes_lock = threading.Lock()  # episode outcomes (never held with a save)
        self._agent_lock = threading.Lock()  # networks, optimiser (taken before _lock)
        self._log_cv = threading.Condition()  # log, accepted tracker, pending messages
        self._train_cv = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._save_lock = threading.Lock()
        self._ack_lock = threading.Lock()  # taken before _lock
        self._announced_trained: dict[str, int] = {}  # highest_trained last published per actor

        self.agent = RLPDAgent(self.config)
        self.replay = self._new_replay()
        self.schedule = UpdateSchedule(self.config.rlpd.utd_ratio, self.config.rlpd.learning_starts)
        self.accepted = SequenceTracker()  # taken into the log (dedup at intake)
        self.stored = SequenceTracker()  # durable and in the replay
        self.actors: dict[str, ActorState] = collections.defaultdict(ActorState)
        self._pending: dict[int, tuple[str, int, bytes]] = {}  # log position -> (actor, seq, cdr)
        self._acks_requested: set[str] = set()  # actors that sent duplicates (under _log_cv)
        self._acks_repeated_at = time.monotonic()
        self._online_order: collections.deque = collections.deque()  # (online index, actor, seq)
        self._trained_online = 0  # online transitions whose updates are done
        self.log_position = -1  # position of the last log record in the replay
        self.policy_version = 0
        self.rejected_total = 0
        self.duplicates_total = 0
        self.resumed_from: Path | None = None
        self.log_replayed = 0
        self.last_checkpoint: Path | None = None
        self._last_checkpoint_time = time.monotonic()
        self._episodes: collections.deque = collections.deque(maxlen=20)
        self._ack_latencies: collections.deque = collections.deque(maxlen=10_000)
        self._received_at: dict[int, float] = {}
        self._updates_at_report = 0
        self._report_time = time.monotonic()
        self._received_since_report = 0
        self._last_metrics: dict[str, float] = {}

        self._resume_or_start(p)
        self._writer = None
        if p["tensorboard_dir"]:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(p["tensorboard_dir"])

        self._pacing = p["pacing"]
        self._publish_every = p["publish_every_updates"]
        self._checkpoint_period = p["checkpoint_period_s"]
        self._report_period = p["report_period_s"]
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)

        intake = MutuallyExclusiveCallbackGroup()
        self._acks = self.create_publisher(TransitionAck, Topics.TRANSITION_ACKS, ACKS)
        self._params_pub = self.create_publisher(PolicyParams, Topics.POLICY_PARAMS, LATEST_WEIGHTS)
        self.create_subscription(Transition, Topics.TRANSITIONS, self._on_transitions, RELIABLE,
                                 callback_group=intake, raw=True)
        self.create_subscription(EpisodeStatus, Topics.EPISODE_STATUS, self._on_episode_status,
                                 RELIABLE, callback_group=MutuallyExclusiveCallbackGroup())
        self.create_service(SaveCheckpoint, Topics.SAVE_CHECKPOINT, self._on_save_checkpoint,
                            callback_group=MutuallyExclusiveCallbackGroup())
        self._report_timer = self.create_timer(self._report_period, self._on_report,
                                               callback_group=MutuallyExclusiveCallbackGroup())

        self._publish_params()  # an actor has weights at once
        self._threads = [
            threading.Thread(target=self._guarded, args=("sync", self._sync_loop),
                             name="learner-sync", daemon=True),
            threading.Thread(target=self._guarded, args=("training", self._train_loop),
                             name="learner-train", daemon=True),
            # Periodic saves off the executor: the intake keeps taking transitions meanwhile.
            threading.Thread(target=self._guarded, args=("checkpoint", self._checkpoint_loop),
                             name="learner-checkpoint", daemon=True)]
        for thread in self._threads:
            thread.start()
        self.get_logger().info(
            f"learner ready: spec state_dim={self.spec.state_dim} cameras={list(self.spec.camera_names)} "
            f"gripper={self.spec.has_gripper}; demo {len(self.replay.demo) if self.replay.demo else 0}, "
            f"online {len(self.replay.online)}; "
            + (f"resumed from {self.resumed_from} (+{self.log_replayed} from the log)"
               if self.resumed_from else "fresh start"))

    def _value(self, name: str) -> Any:
        try:
            return self.get_parameter(name).value
        except ParameterUninitializedException:  # typed, no default, not given
            return None

    # ------------------------------------------------------------- start-up
    def _resume_or_start(self, p: dict[str, Any]) -> None:
        root = Path(p["checkpoint_dir"])
        log_dir = Path(p["transition_log_dir"] or root / "transition_log")
        folder, counters = self._load_newest_checkpoint(root) if p["resume"] else (None, {})
        if folder is None and p["require_checkpoint"]:
            raise CheckpointError(f"checkpoint_dir {root}: no checkpoint to serve (require_checkpoint is set)")
        if folder is not None:
            self.resumed_from = folder
            self.last_checkpoint = folder
            self.log_position = int(counters.get(LOG_POSITION, -1))
            self.policy_version = int(counters.get(POLICY_VERSION, 0))
            for key, value in counters.items():
                if key.startswith(ACTOR_PREFIX):
                    actor = key[len(ACTOR_PREFIX):]
                    self.stored.restore(actor, int(value))
                    self.accepted.restore(actor, int(value))
                    self.actors[actor].trained = int(value)
            # Everything in the checkpoint counts as trained (its updates were done
            # or are owed and run first: the schedule counts them).
            self._trained_online = self.replay.online.num_added
        else:
            for demos in self._demo_datasets(p):
                if self.replay.demo is None:
                    raise ValueError("parameters demo_file / demo_bags: demo_capacity is 0 (no demo buffer)")
                demos.add_to(self.replay)
                self._update_normalizer([demos.frames[STATE_KEY]] if self.spec.state_dim else [])
        self.log = TransitionLog(log_dir, segment_bytes=p["segment_mb"] << 20,
                                 sync_every=p["sync_every"],
                                 sync_interval_s=p["sync_interval_ms"] / 1000.0)
        if not p["resume"] and self.log.recovery.records:
            self.log.close()
            raise ValueError(f"parameter resume is false but the transition log {log_dir} holds "
                             f"{self.log.recovery.records} records of an earlier run: set resume "
                             "true, or choose another checkpoint_dir / transition_log_dir")
        if self.log.recovery.truncated_bytes:
            self.get_logger().warning(f"transition log: cut a torn tail of "
                                      f"{self.log.recovery.truncated_bytes} bytes from "
                                      f"{self.log.recovery.truncated_file}")
        self.policy_version = max(self.policy_version, self._published_version())
        if self.log.recovery.records and self.log.first_position > self.log_position + 1:
            raise CheckpointError(
                f"{log_dir}: the transition log starts at position {self.log.first_position}, "
                f"checkpoint {folder} holds up to {self.log_position}: transitions in between "
                "were retired with a newer checkpoint that is missing or unreadable")
        if self.log.next_position <= self.log_position:
            self.log.skip_to(self.log_position + 1)
        states = []
        for record in self.log.records(after=self.log_position):
            self._store_record(record.position, record.actor_id, record.sequence, record.payload, states)
            self.accepted.restore(record.actor_id, self.stored.highest_contiguous(record.actor_id))
            self.log_replayed += 1
        self._update_normalizer(states)
        # Transitions replayed from the log are owed their updates: they enter the
        # trained frontier (highest_trained) through _online_order like new ones.

    def _demo_datasets(self, p: dict[str, Any]) -> list:
        """The demo file and the demo bags named by the parameters, as DemoDatasets."""
        out = []
        if p["demo_file"]:
            demos = read_demo_file(p["demo_file"], expect_spec=self.spec)
            layout = (demos.layout or {}).get("name")
            if p["observation_layout"] and layout and layout != p["observation_layout"]:
                raise ValueError(f"{p['demo_file']}: demos use observation layout {layout!r}, "
                                 f"parameter observation_layout is {p['observation_layout']!r}")
            dynamics = bool((demos.layout or {}).get("dynamics", False))
            if p["observation_layout"] and layout and dynamics != p["observation_dynamics"]:
                raise ValueError(f"{p['demo_file']}: demos have observation dynamics {dynamics}, "
                                 f"parameter observation_dynamics is {p['observation_dynamics']}")
            out.append(demos)
        if p["demo_bags"]:
            if not p["observation_layout"]:
                raise ValueError("parameter demo_bags needs observation_layout (how frames become states)")
            conversion = BagConversion(
                layout=ObservationLayout(p["observation_layout"], num_joints=p["num_joints"],
                                         dynamics=p["observation_dynamics"]),
                gripper=GripperCalibration(p["gripper_joint"], p["gripper_closed_position"],
                                           p["gripper_open_position"]),
                gripper_penalty=self.config.rlpd.gripper_penalty)
            demos, totals = dataset_from_bags([p["demo_bags"]], self.spec, conversion)
            self.get_logger().info(f"demo bags {p['demo_bags']}: {totals['kept']} successful of "
                                   f"{totals['episodes']} episodes in {totals['bags']} bag(s), "
                                   f"{totals['transitions']} transitions")
            out.append(demos)
        return out

    def _served_configuration(self, root: Path, config: LearnerConfig) -> LearnerConfig:
        """Serving a checkpoint (evaluation): build the networks it was trained with, whatever
        the parameter files say (its config.json); training must match them instead."""
        for folder in _checkpoint_candidates(root):
            if not (folder / "config.json").is_file():
                continue
            try:
                saved = LearnerConfig.from_dict(read_json(folder / "config.json"))
            except (CheckpointError, ValueError, KeyError, TypeError):
                continue  # the load below reports what is wrong with it
            if (saved.spec, saved.networks) != (config.spec, config.networks):
                self.get_logger().info(f"serving {folder}: observation spec and networks from its config.json")
            return dataclasses.replace(config, spec=saved.spec, networks=saved.networks)
        return config

    def _load_newest_checkpoint(self, root: Path) -> tuple[Path | None, dict[str, int]]:
        """Load the newest loadable checkpoint (LATEST first, then by log position);
        an unreadable one is reported and skipped. Returns (folder, counters)."""
        errors = []
        for folder in _checkpoint_candidates(root):
            try:
                counters = load_checkpoint(folder, self.agent, self.replay,
                                           check_digests=self.config.checkpoint.verify_digests)
                return folder, counters
            except CheckpointError as error:
                errors.append(str(error))
                self.get_logger().error(f"checkpoint refused, trying an older one: {error}")
                self.agent = RLPDAgent(self.config)  # a failed load may have been partial
                self.replay = self._new_replay()
        if errors:  # never start fresh silently over checkpoints that exist
            raise CheckpointError(f"{root}: no loadable checkpoint ({'; '.join(errors)}); "
                                  "fix or move the folder, or choose another checkpoint_dir")
        return None, {}

    def _new_replay(self) -> DemoOnlineReplay:
        return DemoOnlineReplay.from_config(self.spec, self.config.replay)

    def _update_normalizer(self, states: list[np.ndarray]) -> None:
        """Feed stored states to the running normalisation (``RLPDAgent.observe_states``;
        a no-op unless ``state_normalization`` is "running")."""
        if states and self.spec.state_normalization == "running":
            with self._agent_lock:
                self.agent.observe_states(np.concatenate([np.atleast_2d(s) for s in states]))

    # ----------------------------------------------------------------- intake
    def _on_transitions(self, data: bytes) -> None:
        received = time.monotonic()
        try:
            msg = deserialize_message(data, Transition)
        except Exception as error:  # malformed CDR: nothing to acknowledge
            self.get_logger().error(f"undecodable transition ({error})", throttle_duration_sec=5.0)
            return
        actor, sequence = msg.actor_id, int(msg.sequence)
        with self._log_cv:
            expected = self.accepted.highest_contiguous(actor) + 1
            if sequence > expected:
                with self._lock:
                    self.actors[actor].gaps += 1
                self.get_logger().warning(
                    f"actor {actor!r}: sequence {sequence} arrived before {expected}: dropped, "
                    "waiting for the resend", throttle_duration_sec=5.0)
                return
            if not self.accepted.accept(actor, sequence):
                duplicate = True
            else:
                duplicate = False
                position = self.log.append(actor, sequence, data)
                self._pending[position] = (actor, sequence, data)
                self._received_at[position] = received
                self._log_cv.notify()
        if duplicate:
            if sequence == 0 and expected > RESTART_HINT_AFTER:
                self.get_logger().warning(
                    f"actor {actor!r} sends sequence 0 again after {expected - 1} were stored: "
                    "a restarted actor reusing its id? Its transitions are duplicates of the "
                    "old ones and are dropped; give each actor run its own actor_id or continue "
                    "from the acknowledged sequence", throttle_duration_sec=10.0)
            # Tell a resending actor what is already stored, from the sync thread: publishing an
            # ack reads under _lock, which a checkpoint save holds, and the intake must not wait.
            with self._log_cv:
                self.duplicates_total += 1  # written by the intake only
                self._acks_requested.add(actor)
                self._log_cv.notify()

    def _guarded(self, name: str, loop) -> None:
        """Run a thread's loop; a crash is logged as fatal and shown in every progress line."""
        try:
            loop()
        except Exception as error:  # noqa: BLE001  (reported, never swallowed silently)
            if not self.context.ok():
                # Ctrl-C shut the context down before destroy_node: publishing fails;
                # shutdown() does the final sync and checkpoint itself.
                return
            self.failure = f"{name} thread stopped: {type(error).__name__}: {error}"
            self.get_logger().fatal(self.failure)

    def _sync_loop(self) -> None:
        while not self._stop.is_set():
            with self._log_cv:
                requested, self._acks_requested = self._acks_requested, set()
            if time.monotonic() - self._acks_repeated_at >= ACK_REPEAT_S:
                # Every known actor's frontier again: an ack published before a (restarted)
                # actor's subscription matched would otherwise be the last one, and a paced
                # actor waiting for it would wait forever (seen after a learner restart).
                self._acks_repeated_at = time.monotonic()
                with self._lock:
                    requested |= set(self.actors)
            for actor in requested:
                self._publish_ack(actor)
            with self._log_cv:
                wait = self.log.seconds_until_due()
                if wait is None or (wait > 0 and not self.log.sync_due()):
                    self._log_cv.wait(timeout=0.1 if wait is None else wait)
                    continue
                batch = self.log.take_pending()
            # fsync without the intake lock: transitions keep arriving while the disk works
            durable = self.log.write_batch(batch)
            with self._log_cv:
                items = [(r.position, *self._pending.pop(r.position)) for r in durable]
                started = [self._received_at.pop(r.position) for r in durable]
            states: list[np.ndarray] = []
            actors = set()
            with self._lock:
                for position, actor, sequence, data in items:
                    self._store_record(position, actor, sequence, data, states)
                    actors.add(actor)
                self._train_cv.notify_all()
            self._update_normalizer(states)
            for actor in actors:
                self._publish_ack(actor)
            now = time.monotonic()
            self._ack_latencies.extend(now - t for t in started)

    def _store_record(self, position: int, actor: str, sequence: int, data: bytes,
                      states: list[np.ndarray]) -> None:
        """Add one durable record to the replay (caller holds ``_lock`` or is starting up)."""
        if sequence != self.stored.highest_contiguous(actor) + 1:
            # Only possible for records already in a checkpoint; the intake never logs these.
            self.log_position = position
            return
        self.stored.accept(actor, sequence)
        self.log_position = position
        state = self.actors[actor]
        state.received_since_report += 1
        self._received_since_report += 1
        try:
            args = replay_args_from_transition(deserialize_message(data, Transition), self.spec)
        except Exception as error:
            state.rejected += 1
            self.rejected_total += 1
            self.get_logger().error(f"actor {actor!r} sequence {sequence}: transition refused ({error}); "
                                    "acknowledged but not trained on", throttle_duration_sec=5.0)
            self._online_order.append((self.replay.online.num_added - 1, actor, sequence))
            return
        if STATE_KEY in args["observation"]:  # each frame once: episode start, then next frames
            if args.pop("episode_start"):
                states.append(args["observation"][STATE_KEY])
            states.append(args["next_observation"][STATE_KEY])
        else:
            args.pop("episode_start")
        self.replay.add(**args)
        self._online_order.append((self.replay.online.num_added - 1, actor, sequence))

    def _publish_ack(self, actor: str) -> None:
        # Read and publish under one lock: acks from the intake, sync and training
        # threads leave in order, so an actor never sees a frontier go backwards.
        with self._ack_lock:
            with self._lock:
                stored = self.stored.highest_contiguous(actor)
                trained = stored if self._pacing == "free" else min(self.actors[actor].trained, stored)
            # A switch from free to utd pacing must not take back what was announced.
            trained = max(trained, self._announced_trained.get(actor, -1))
            self._announced_trained[actor] = trained
            ack = TransitionAck(actor_id=actor, highest_contiguous=stored, highest_trained=trained)
            ack.stamp = self.get_clock().now().to_msg()
            self._acks.publish(ack)

    # --------------------------------------------------------------- training
    def _updates_due(self) -> int:
        """Updates to run now (caller holds ``_lock``)."""
        online = self.replay.online.num_added
        demo = len(self.replay.demo) if self.replay.demo is not None else 0
        if online + demo == 0 or online < self.config.rlpd.learning_starts:
            return 0
        if self._pacing == "free":
            return 1
        return self.schedule.updates_due(online, self.agent.num_critic_updates)

    def _advance_trained(self) -> set[str]:
        """Move the trained frontier; returns actors whose highest_trained moved (holds ``_lock``)."""
        online, done = self.replay.online.num_added, self.agent.num_critic_updates
        if self._pacing == "free":
            target = online
        else:
            target = self._trained_online
            while target < online and self.schedule.updates_due(target + 1, done) == 0:
                target += 1
        self._trained_online = target
        moved = set()
        while self._online_order and self._online_order[0][0] < target:
            _, actor, sequence = self._online_order.popleft()
            self.actors[actor].trained = sequence
            moved.add(actor)
        return moved

    def _train_loop(self) -> None:
        torch.set_num_threads(self._p["torch_threads"])
        metrics_every = self._p["metrics_every_updates"]
        while not self._stop.is_set():
            with self._lock:
                moved = self._advance_trained()
                due = self._updates_due()
                if due == 0:
                    if not moved:
                        self._train_cv.wait(timeout=0.1)
                    batch = None
                else:
                    batch = self.replay.sample(self.config.rlpd.batch_size, self.agent.rng)
            for actor in moved:
                self._publish_ack(actor)
            if batch is None:
                continue
            with self._agent_lock:
                metrics = self.agent.update(batch)
                updates = self.agent.num_critic_updates
            if updates % metrics_every == 0:
                self._last_metrics = metrics_to_floats(metrics)
                if self._writer is not None:
                    for key, value in self._last_metrics.items():
                        self._writer.add_scalar(key, value, updates)
            if updates % self._publish_every == 0:
                self._publish_params()

    def _publish_params(self) -> None:
        with self._agent_lock:
            self.policy_version += 1
            version = self.policy_version
            data = export_policy(self.agent, version)
        self._record_version(version)
        msg = PolicyParams(version=version, format=FORMAT, sha256=sha256_hex(data))
        # An array('B') is taken as a buffer; bytes would be checked and copied element by
        # element (75 ms instead of 1 ms for the 0.57 MB of a state policy).
        buffer = array.array("B")
        buffer.frombytes(data)
        msg.data = buffer
        self._params_pub.publish(msg)

    def _version_file(self) -> Path:
        return Path(self._p["checkpoint_dir"]) / VERSION_FILE

    def _record_version(self, version: int) -> None:
        """Remember the newest published version outside checkpoints, so that versions
        keep increasing across a crash (an actor ignores weights older than its own)."""
        path = self._version_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{VERSION_FILE}.tmp")
        tmp.write_text(str(version))
        os.replace(tmp, path)  # survives a process kill (page cache); no fsync per publication

    def _published_version(self) -> int:
        try:
            return int(self._version_file().read_text())
        except (OSError, ValueError):
            return 0

    # ------------------------------------------------------------ checkpoints
    def save(self, directory: str | Path | None = None) -> Path:
        """Write a checkpoint now (to the configured root unless ``directory``)."""
        root = Path(directory) if directory else Path(self._p["checkpoint_dir"])
        with self._save_lock, self._agent_lock, self._lock:
            counters = {LOG_POSITION: self.log_position, POLICY_VERSION: self.policy_version}
            for actor, state in self.stored.actors().items():
                counters[ACTOR_PREFIX + actor] = state.highest_contiguous
            folder = save_checkpoint(root, self.agent, self.replay, counters,
                                     keep_last=self.config.checkpoint.keep_last)
            position = self.log_position
        if root.resolve() == Path(self._p["checkpoint_dir"]).resolve():
            # Keep the log from the oldest kept checkpoint on, so that any of them can
            # be resumed from if a newer one turns out unreadable.
            kept = [pos for pos, _ in _checkpoint_positions(root)]
            with self._log_cv:
                self.log.retire(min(kept + [position]))
            self.last_checkpoint = folder
            self._last_checkpoint_time = time.monotonic()
        return folder

    def _checkpoint_loop(self) -> None:
        while not self._stop.wait(CHECKPOINT_POLL_S):
            period = self._checkpoint_period
            if period <= 0 or time.monotonic() - self._last_checkpoint_time < period:
                continue
            try:
                folder = self.save()
            except (OSError, RuntimeError, ValueError) as error:
                self._last_checkpoint_time = time.monotonic()  # retry after a period, not at once
                self.get_logger().error(f"periodic checkpoint failed: {error}")
                continue
            self.get_logger().info(f"checkpoint {folder}")

    def _on_save_checkpoint(self, request, response):
        try:
            folder = self.save(request.directory or None)
        except (OSError, RuntimeError, ValueError) as error:
            response.success, response.message = False, f"checkpoint failed: {error}"
            return response
        response.success, response.path = True, str(folder)
        response.step = int(self.agent.num_critic_updates)
        response.message = f"wrote {folder}"
        return response

    # -------------------------------------------------------------- episodes
    def _on_episode_status(self, msg: EpisodeStatus) -> None:
        if msg.end_reason == EpisodeStatus.END_RUNNING:
            return
        steps = max(int(msg.step), 1)
        # Its own lock, not _lock: a checkpoint save holds _lock for its whole duration, and this
        # callback runs on the executor thread that also takes in the transitions.
        with self._episodes_lock:
            self._episodes.append((bool(msg.success), float(msg.episode_return),
                                   int(msg.intervention_steps) / steps))
            count = len(self._episodes)
            success = sum(e[0] for e in self._episodes) / count
            ret = sum(e[1] for e in self._episodes) / count
            intervention = sum(e[2] for e in self._episodes) / count
        updates = self.agent.num_critic_updates
        if self._writer is not None:
            self._writer.add_scalar("charts/episode_return", float(msg.episode_return), updates)
            self._writer.add_scalar("charts/success_rate", success, updates)
            self._writer.add_scalar("charts/intervention_rate", intervention, updates)
            self._writer.add_scalar("charts/mean_return", ret, updates)

    # ----------------------------------------------------------------- report
    def stats(self, for_report: bool = False) -> dict[str, Any] | None:
        """Counters for the progress line, TensorBoard and tests. ``for_report``: from the
        executor thread, which must not wait for ``_lock`` (a checkpoint save holds it): None if
        it is taken; else the transitions received since the last report, and that count restarts."""
        if not self._lock.acquire(timeout=REPORT_LOCK_WAIT_S if for_report else -1):
            return None
        try:
            latencies = sorted(self._ack_latencies)
            out = {
                "updates": self.agent.num_critic_updates,
                "online": len(self.replay.online),
                "online_added": self.replay.online.num_added,
                "demo": len(self.replay.demo) if self.replay.demo is not None else 0,
                "duplicates": self.duplicates_total,
                "gaps": sum(a.gaps for a in self.actors.values()),
                "rejected": self.rejected_total,
                "failure": self.failure,
                "policy_version": self.policy_version,
                "log_position": self.log_position,
                "stored": {a: s.highest_contiguous for a, s in self.stored.actors().items()},
                "trained": {a: s.trained for a, s in self.actors.items()},
                "received_since_report": self._received_since_report,
            }
            if for_report:
                self._received_since_report = 0
        finally:
            self._lock.release()
        with self._episodes_lock:
            out["episodes"] = len(self._episodes)
            out["success_rate"] = (sum(e[0] for e in self._episodes) / len(self._episodes)
                                   if self._episodes else float("nan"))
        if latencies:
            out["ack_latency_p50_ms"] = 1e3 * latencies[len(latencies) // 2]
            out["ack_latency_p99_ms"] = 1e3 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        out["fsync_mean_ms"] = 1e3 * self.log.sync_seconds_total / max(self.log.syncs, 1)
        out["fsync_max_ms"] = 1e3 * self.log.sync_seconds_max
        return out

    def _on_report(self) -> None:
        now = time.monotonic()
        elapsed = max(now - self._report_time, 1e-9)
        # Never wait for _lock on the executor thread (a checkpoint save holds it): the intake
        # would wait too. A report that finds it taken is skipped; the next one covers the gap.
        s = self.stats(for_report=True)
        if s is None:
            return
        update_rate = (s["updates"] - self._updates_at_report) / elapsed
        step_rate = s["received_since_report"] / elapsed
        self._updates_at_report, self._report_time = s["updates"], now
        loss = self._last_metrics.get("losses/critic")
        line = (f"updates {s['updates']} ({update_rate:.1f}/s) | steps {s['online_added']} "
                f"({step_rate:.1f}/s) | buffers online {s['online']} demo {s['demo']} | "
                f"weights v{s['policy_version']} | dup {s['duplicates']} gaps {s['gaps']} "
                f"bad {s['rejected']}")
        if loss is not None:
            line += f" | critic loss {loss:.3g}"
        if s["episodes"]:
            line += f" | success {100 * s['success_rate']:.0f}% ({s['episodes']} ep)"
        if self.failure:
            line += f" | FAILED: {self.failure}"
            self.get_logger().error(line)
        else:
            self.get_logger().info(line)
        if self._writer is not None:
            for key, value in (("perf/updates_per_s", update_rate), ("perf/actor_steps_per_s", step_rate),
                               ("buffers/online", s["online"]), ("buffers/demo", s["demo"]),
                               ("perf/fsync_mean_ms", s["fsync_mean_ms"])):
                self._writer.add_scalar(key, value, s["updates"])
            if "ack_latency_p99_ms" in s:
                self._writer.add_scalar("perf/ack_latency_p99_ms", s["ack_latency_p99_ms"], s["updates"])
            self._writer.flush()

    # ------------------------------------------------------------- parameters
    def _validate_parameters(self, params: list[Parameter]) -> SetParametersResult:
        for param in params:
            if param.name == "pacing" and param.value not in PACING_MODES:
                return SetParametersResult(successful=False,
                                           reason=f"pacing must be one of {PACING_MODES}, got {param.value!r}")
        return SetParametersResult(successful=True)

    def _apply_parameters(self, params: list[Parameter]) -> None:
        for param in params:
            if param.name == "pacing":
                with self._lock:
                    self._pacing = param.value
                    self._train_cv.notify_all()
            elif param.name == "publish_every_updates":
                self._publish_every = int(param.value)
            elif param.name == "checkpoint_period_s":
                self._checkpoint_period = float(param.value)
            elif param.name == "report_period_s":
                self._report_period = float(param.value)
                self._report_timer.timer_period_ns = int(self._report_period * 1e9)
                self._report_timer.reset()

    # --------------------------------------------------------------- shutdown
    def shutdown(self, checkpoint: bool | None = None) -> None:
        """Stop the threads, make the log durable, optionally checkpoint; idempotent."""
        if self._stop.is_set():
            return
        self._stop.set()
        with self._log_cv:
            self._log_cv.notify_all()
        with self._lock:
            self._train_cv.notify_all()
        for thread in self._threads:
            thread.join(timeout=30.0)
        with self._log_cv:
            durable = self.log.sync()
            items = [(r.position, *self._pending.pop(r.position)) for r in durable]
        states: list[np.ndarray] = []
        with self._lock:
            for position, actor, sequence, data in items:
                self._store_record(position, actor, sequence, data, states)
        if checkpoint if checkpoint is not None else self._p["checkpoint_on_exit"]:
            self.save()
        self.log.close()
        if self._writer is not None:
            self._writer.close()

    def destroy_node(self) -> None:
        self.shutdown()
        super().destroy_node()


def main(args=None) -> int:
    rclpy.init(args=args)
    node = None
    try:
        node = LearnerNode()
        # One executor thread: on a 2-core machine a MultiThreadedExecutor took 70-1500 ms per
        # publish/subscribe round trip (docs/networking.md). Updates, log syncs and periodic
        # checkpoints run on their own threads, so the intake is never held up by them.
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ValueError, OSError, CheckpointError, TransitionLogError) as error:
        # Bad parameters, demo file, checkpoint or log: one clear line, before anything runs.
        print(f"learner: {error}", file=sys.stderr)
        return 2
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The policy actor: acts on every frame, records what was executed, streams transitions.

One step, frame-driven (the same in lock-step and realtime driver modes):

1. The driver's frame completes (its ``hilserl/reward`` arrives last, with the stamp of
   joint_states, ee_pose and task_state): the actor builds the observation
   (``hilserl_policy.observation`` layout) and publishes ``hilserl/policy_action``
   stamped with the frame's stamp.
2. The intervention mux chooses between it and a human action: ``hilserl/executed_action``
   (same stamp, with the source and the intervention flag) is what was executed; the
   safety limiter then clamps it into ``hilserl/command`` for the driver. The clamp is part
   of the environment (as the simulator's own limits are in process), so the transition
   stores the mux's action, not the clamped one.
3. The next frame completes: the actor records ``Transition(observation, executed
   action, reward, next observation, terminated = success, truncated = time limit)``,
   numbers it (``actor_id``, ``sequence`` from 0) and streams it to the learner.

Nothing is dropped: every transition stays in a bounded resend queue until the learner
acknowledges it as durable; when the acknowledgements stall (learner restarting) the
queue is resent in order; when it is full the actor pauses and says so. On SIGINT/SIGTERM
the actor acts no more and waits (at most ``STOP_DRAIN_S``) until the learner has
acknowledged every transition sent, then exits. New
``PolicyParams`` are checked (digest, format, observation spec, increasing version)
and swapped between steps; without a learner the actor keeps acting on its last good
weights. ``paced: true`` makes the actor wait, before each step, until the learner has
done the updates owed to every transition sent (``TransitionAck.highest_trained``):
figures then do not depend on machine speed.

Evaluation: every ``eval_every_steps`` env steps (at an episode boundary) and at the
end (``max_env_steps``), ``eval_episodes`` deterministic episodes on fixed seeds, not
streamed; the learning curve goes to ``results_dir`` (JSON and PNG). ``mode: eval``
only evaluates, then exits.

Recording demonstrations (``mode: record``): no policy and no learner. The actor proposes
"hold" actions so that a person (or the simulated expert) acts through the intervention mux,
runs the episodes (reset, time limit, success) and publishes their ``EpisodeStatus``, the
labels that the demo recorder writes into the bag beside the frames and the executed
commands, until ``record_successes`` episodes have succeeded; then it exits. With
``wait_for_recorder`` it starts the first episode only once that node subscribes.
"""

from __future__ import annotations

import json
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from geometry_msgs.msg import PoseStamped
from hilserl_msgs.msg import (
    Action,
    EpisodeStatus,
    Observation,
    PolicyParams,
    Reward,
    Topics,
    Transition,
    TransitionAck,
)
from hilserl_msgs.srv import ResetEpisode
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import QoSDurabilityPolicy, QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import JointState

from hilserl_drivers.node_main import declare_parameters, run_node
from hilserl_policy.actor_core import EpisodeTracker, FrameAssembler, ResendQueue
from hilserl_policy.learning_curve import write_learning_curve
from hilserl_policy.observation import (
    LAYOUT_NAMES,
    GripperCalibration,
    ObservationLayout,
    state_from_messages,
)

VECTOR_LAYOUT = "state"
MODES = ("train", "eval", "record")
ACTOR_LAYOUTS = (*LAYOUT_NAMES, VECTOR_LAYOUT)
ACTION_FIELDS = (("linear", "x"), ("linear", "y"), ("linear", "z"), ("angular", "x"), ("angular", "y"),
                 ("angular", "z"))


def set_action_fields(msg: Action, action) -> None:
    """Write a continuous action into an Action: linear x, y, z, then angular x, y, z."""
    if len(action) > len(ACTION_FIELDS):
        raise ValueError(f"an Action carries at most {len(ACTION_FIELDS)} continuous values, got {len(action)}")
    for (group, axis), value in zip(ACTION_FIELDS, action):
        setattr(getattr(msg, group), axis, float(value))


def action_fields(msg: Action) -> np.ndarray:
    """The six continuous values of an Action, in ``set_action_fields`` order."""
    return np.array([getattr(getattr(msg, group), axis) for group, axis in ACTION_FIELDS], dtype=np.float32)
from hilserl_policy.policy_export import InferencePolicy, PolicyFormatError

EXIT_ACK_S = 2.0  # the last episode status: how long to wait for its acknowledgement before exiting
STOP_DRAIN_S = 3.0  # SIGINT / SIGTERM: how long to wait for the learner to acknowledge what was sent
RELIABLE = QoSProfile(depth=100, reliability=QoSReliabilityPolicy.RELIABLE,
                      durability=QoSDurabilityPolicy.VOLATILE)
STREAM = QoSProfile(history=QoSHistoryPolicy.KEEP_ALL, reliability=QoSReliabilityPolicy.RELIABLE)
LATEST_PARAMS = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE,
                           durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)


def stamp_ns(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def _fixed(description: str, **kw) -> ParameterDescriptor:
    return ParameterDescriptor(description=description + " Read-only.", read_only=True, **kw)


def _runtime(description: str, **kw) -> ParameterDescriptor:
    return ParameterDescriptor(description=description + " Applied when set.", **kw)


def _float_range(low: float, high: float) -> list[FloatingPointRange]:
    return [FloatingPointRange(from_value=low, to_value=high)]


def _int_range(low: int, high: int) -> list[IntegerRange]:
    return [IntegerRange(from_value=low, to_value=high)]


PARAMETERS = {
    "actor_id": ("actor_0", _fixed("Identifier sent with every transition.")),
    "mode": ("train", _fixed("train: act, stream transitions, evaluate periodically; "
                             "eval: evaluate eval_episodes episodes, then exit; record: hold while a "
                             "person (or the simulated expert) acts, until record_successes episodes "
                             "succeeded, then exit.")),
    "record_successes": (20, _fixed("mode record: successful episodes to record.",
                                    integer_range=_int_range(1, 1_000_000))),
    "record_episodes": (0, _fixed("mode record: stop after this many episodes whatever their outcome "
                                  "(failure demonstrations; 0: count successes, record_successes).",
                                  integer_range=_int_range(0, 1_000_000))),
    "wait_for_recorder": ("", _fixed("mode record: name of the recorder node to wait for before the "
                                     "first episode ('': do not wait).")),
    "record_after_success": (0, _fixed("mode record: steps to go on after the first success frame "
                                       "(success frames for the reward classifier; 0: end at success).",
                                       integer_range=_int_range(0, 10000))),
    "observation_layout": ("relative", _fixed(f"State layout, one of {', '.join(ACTOR_LAYOUTS)}; "
                                              "must match the learner's. 'state': the driver's state "
                                              "vector as published in joint_states positions (a hosted "
                                              "gymnasium task), no gripper.")),
    "observation_dynamics": (False, _fixed("Append every joint's velocity and effort (arm joints, then the "
                                           "gripper; joint_states velocity and effort) to the layout's "
                                           "state; must match the learner's. Not with 'state'.")),
    "num_joints": (7, _fixed("Arm joints (gripper excluded) in joint_states, first in order.",
                             integer_range=_int_range(1, 32))),
    "gripper_joint": ("right_driver_joint", _fixed("Name of the gripper joint in joint_states.")),
    "gripper_closed_position": (0.8, _fixed("Gripper joint position when closed (opening 0).")),
    "gripper_open_position": (0.0, _fixed("Gripper joint position when open (opening 1).")),
    "max_episode_steps": (100, _runtime("Steps before an episode is truncated (time limit; "
                                        "from the next episode).", integer_range=_int_range(1, 100000))),
    "paced": (False, _runtime("Wait before each step until the learner has done the updates owed to "
                              "every transition sent (lock-stepped, machine-independent figures).")),
    "resend_after_s": (2.0, _runtime("Resend every unacknowledged transition when acknowledgements "
                                     "stalled this long.", floating_point_range=_float_range(0.1, 600.0))),
    "max_unacked": (100000, _fixed("Unacknowledged transitions kept; when full the actor pauses.",
                                   integer_range=_int_range(1, 10_000_000))),
    "max_env_steps": (0, _fixed("Training env steps; then a final evaluation and exit (0: run until "
                                "stopped).", integer_range=_int_range(0, 1_000_000_000))),
    "eval_every_steps": (0, _runtime("Evaluate every this many training env steps, at an episode "
                                     "boundary (0: only at the end).", integer_range=_int_range(0, 10**9))),
    "eval_episodes": (20, _runtime("Deterministic episodes per evaluation.", integer_range=_int_range(1, 10000))),
    "eval_seed": (100000, _fixed("Seed of the first evaluation episode (then +1 each); training "
                                 "episodes use seed + episode number.", integer_range=_int_range(0, 2**31 - 1))),
    "seed": (0, _fixed("Base seed of training episodes (episode k: seed + k; an aborted episode is "
                       "retried with its seed).", integer_range=_int_range(0, 2**31 - 1))),
    "max_observation_age_s": (0.0, _runtime("Drop (and count) a frame older than this when acting "
                                            "(0: never; lock-step sim holds still while waiting).",
                                            floating_point_range=_float_range(0.0, 60.0))),
    "step_timeout_s": (10.0, _runtime("Abort the episode when no next frame arrives this long after "
                                      "an action; reset again when no first frame arrives this long "
                                      "after a reset.", floating_point_range=_float_range(0.1, 3600.0))),
    "results_dir": ("", _fixed("Folder for the evaluation curve (curve.json, curve.png); '' = none.")),
    "report_period_s": (5.0, _runtime("Seconds between progress lines.",
                                      floating_point_range=_float_range(0.5, 3600.0))),
}


class PolicyActorNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("policy_actor", **kwargs)
        p = declare_parameters(self, PARAMETERS)
        if p["mode"] not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {p['mode']!r}")
        if p["observation_layout"] not in ACTOR_LAYOUTS:
            raise ValueError(f"observation_layout must be one of {ACTOR_LAYOUTS}, got {p['observation_layout']!r}")
        if p["gripper_closed_position"] == p["gripper_open_position"]:
            raise ValueError("gripper_closed_position and gripper_open_position must differ")
        if p["observation_dynamics"] and p["observation_layout"] == VECTOR_LAYOUT:
            raise ValueError(f"observation_dynamics needs a layout of {LAYOUT_NAMES}, not "
                             f"{VECTOR_LAYOUT!r} (the driver's vector is taken as it is)")
        self.p = p
        self.gripper = GripperCalibration(p["gripper_joint"], p["gripper_closed_position"],
                                          p["gripper_open_position"])
        # Sequences restart at 0 in every actor process: the stream this process sends is its
        # own (actor_id plus a random suffix), so a restarted actor is never taken for a
        # duplicate of its predecessor (R6) and a learner resumed from a checkpoint keeps
        # every new transition.
        self.stream_id = f"{p['actor_id']}-{secrets.token_hex(4)}"
        self.vector_state = p["observation_layout"] == VECTOR_LAYOUT
        self.layout = None if self.vector_state else ObservationLayout(
            p["observation_layout"], num_joints=p["num_joints"], dynamics=p["observation_dynamics"])
        self.tracker = EpisodeTracker(max_steps=p["max_episode_steps"])
        self.queue = ResendQueue(p["max_unacked"], p["resend_after_s"])
        # A frame is complete with what the layout reads: no task_state without a cube in the
        # state (a real arm has no object tracking; "proprio" with cameras needs none).
        parts = ("joints",) if self.vector_state else ("joints", "ee") + (("task",) if self.layout.uses_cube else ())
        self.assembler = FrameAssembler(parts)
        self.policy: InferencePolicy | None = None
        self.evaluating = p["mode"] == "eval"
        self.recording = p["mode"] == "record"
        self.stopping = False
        self.recorded = {"success": 0, "other": 0}  # mode record: finished episodes by outcome
        self._succeeded_at: int | None = None  # mode record: step of the first success frame
        self.state = "need_reset"
        self.sequence = 0                # next transition sequence
        self.trained = -1                # learner's highest_trained for this actor
        self.env_steps = 0               # training steps executed
        self.episodes = 0                # training episodes started
        self.episodes_done = 0           # training episodes ended (not aborted): the next seed's offset
        self.eval_results: list[tuple[bool, int, float]] = []
        self.eval_index = 0
        self.curve: list[dict] = []
        self.last_eval_at = 0
        self.counters = {"stale_frames": 0, "rejected_params": 0, "aborted": 0, "paused_full": 0,
                         "reset_retries": 0}
        self._current = None             # (observation vector, frame) the next action is for
        self._acted = None               # (observation vector, frame, stamp) awaiting its result
        self._next_frame = None
        self._commands: dict[int, Action] = {}
        self._reset_mark, self._reset_at = -1, 0.0
        self._first_frame = None
        self._acted_at = 0.0
        self._report_state = (time.monotonic(), 0)

        self._action_pub = self.create_publisher(Action, Topics.POLICY_ACTION, RELIABLE)
        self._transition_pub = self.create_publisher(Transition, Topics.TRANSITIONS, STREAM)
        self._status_pub = self.create_publisher(EpisodeStatus, Topics.EPISODE_STATUS, RELIABLE)
        self.create_subscription(JointState, Topics.JOINT_STATES, self._on_joint_states, RELIABLE)
        self.create_subscription(PoseStamped, Topics.EE_POSE, self._on_ee_pose, RELIABLE)
        self.create_subscription(PoseStamped, Topics.TASK_STATE, self._on_task_state, RELIABLE)
        self.create_subscription(Reward, Topics.REWARD, self._on_reward, RELIABLE)
        # What the mux executed (policy or human, with source and intervention flag), before the
        # safety limiter: the limiter's clamps are part of the environment, as the simulator's
        # own limits are in process. Recording the clamped command instead made the critic
        # blind to out-of-bounds proposals (never stored) and the policy drift into the walls.
        self.create_subscription(Action, Topics.EXECUTED_ACTION, self._on_command, RELIABLE)
        self.create_subscription(TransitionAck, Topics.TRANSITION_ACKS, self._on_transition_acks, RELIABLE)
        self.create_subscription(PolicyParams, Topics.POLICY_PARAMS, self._on_policy_params, LATEST_PARAMS)
        self._reset_client = self.create_client(ResetEpisode, Topics.RESET_EPISODE)
        self._pending_policy: InferencePolicy | None = None
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="weights")
        self._policy_ready = self.create_guard_condition(self._swap_policy)
        self.create_timer(0.05, self._on_timer)
        self.add_post_set_parameters_callback(self._on_parameters_set)
        shape = "the driver's state vector" if self.vector_state else f"{self.layout.dim} values"
        waiting = "the driver" if self.recording else "weights and the driver"
        dynamics = "+dynamics" if p["observation_dynamics"] else ""
        self.get_logger().info(f"actor {self.stream_id} in {p['mode']} mode, layout {p['observation_layout']}"
                               f"{dynamics} ({shape}), waiting for {waiting}")

    # ------------------------------------------------------------ parameters
    def _on_parameters_set(self, parameters) -> None:
        for param in parameters:
            self.p[param.name] = param.value
            if param.name == "resend_after_s":
                self.queue.resend_after_s = param.value
            self.get_logger().info(f"{param.name} set to {param.value}")
        self._try_act()

    # ---------------------------------------------------------------- frames
    def _on_joint_states(self, msg: JointState) -> None:
        self._frame_part("joints", msg)

    def _on_ee_pose(self, msg: PoseStamped) -> None:
        self._frame_part("ee", msg)

    def _on_task_state(self, msg: PoseStamped) -> None:
        self._frame_part("task", msg)

    def _on_reward(self, msg: Reward) -> None:
        self._frame_part("reward", msg)

    def _frame_part(self, part: str, msg) -> None:
        frame = self.assembler.add(part, stamp_ns(msg.header), msg)
        if frame is not None:
            self._on_frame(frame)

    def observation(self, frame) -> np.ndarray:
        if self.vector_state:
            return np.asarray(frame["joints"].position, dtype=np.float32)
        return state_from_messages(self.layout, self.gripper, frame["joints"], frame["ee"], frame.get("task"))

    def _on_frame(self, frame) -> None:
        if self.state == "resetting":
            if frame["stamp_ns"] > self._reset_mark:
                self._first_frame = frame
        elif self.state == "await_first_frame":
            if frame["stamp_ns"] > self._reset_mark:
                self._begin(frame)
        elif self.state == "ready":  # still waiting to act (weights, pacing): act on the newest frame
            self.counters["stale_frames"] += 1
            self._current = (self.observation(frame), frame)
            self._try_act()
        elif self.state == "acting" and frame["stamp_ns"] > self._acted[1]["stamp_ns"]:
            self._next_frame = frame
            self._finish_step()

    def _on_command(self, msg: Action) -> None:
        self._commands[stamp_ns(msg.header)] = msg
        while len(self._commands) > 64:
            self._commands.pop(next(iter(self._commands)))
        if self.state == "acting" and self._next_frame is not None:
            self._finish_step()

    # ------------------------------------------------------------- episodes
    def _recorder_ready(self) -> bool:
        """mode record: the recorder node subscribes to the executed commands and the labels."""
        name = self.p["wait_for_recorder"]
        if not self.recording or not name or self.tracker.episode_id > 0:
            return True
        return all(any(info.node_name == name for info in self.get_subscriptions_info_by_topic(
            self.resolve_topic_name(topic))) for topic in (Topics.EXECUTED_ACTION, Topics.EPISODE_STATUS))

    def _request_reset(self) -> None:
        if not self._reset_client.service_is_ready() or not self._recorder_ready():
            return  # the timer retries
        if self.evaluating:
            seed = self.p["eval_seed"] + self.eval_index
        else:
            # An aborted episode (no result: e.g. a command lost while the graph was still
            # connecting) does not use up its seed: the next attempt starts the same episode.
            seed = self.p["seed"] + self.episodes_done
        # Announce the kind of episode before it starts: a simulated human must not take over
        # an evaluation episode, and it decides on the reset's first frame.
        self.tracker.start(self.tracker.episode_id + 1)  # the driver numbers episodes 1, 2, ...
        self._publish_status(EpisodeStatus.END_RUNNING, detail="reset requested")
        self.state, self._first_frame = "resetting", None
        self._reset_mark, self._reset_at = self.assembler.newest_complete, time.monotonic()
        future = self._reset_client.call_async(ResetEpisode.Request(use_seed=True, seed=int(seed)))
        future.add_done_callback(self._on_reset_done)

    def _on_reset_done(self, future) -> None:
        response = future.result()
        if response is None or not response.success:
            self.get_logger().error(f"reset refused: {getattr(response, 'message', 'no answer')}; retrying")
            self.state = "need_reset"
            return
        self.tracker.max_steps = self.p["max_episode_steps"]
        self.tracker.start(int(response.episode_id))
        if not self.evaluating:
            self.episodes += 1
        self._publish_status(EpisodeStatus.END_RUNNING)  # step 0: who listens knows the episode began
        if self._first_frame is not None:
            self._begin(self._first_frame)
        else:
            self.state = "await_first_frame"

    def _begin(self, frame) -> None:
        self._current = (self.observation(frame), frame)
        self.state = "ready"
        self._try_act()

    # ----------------------------------------------------------------- acting
    def _try_act(self) -> None:
        if self.stopping or self.state != "ready" or (self.policy is None and not self.recording):
            return
        if self.recording:
            self._propose(np.zeros(len(ACTION_FIELDS)), None)
            return
        if not self.evaluating:
            if self.p["paced"] and self.trained < self.sequence - 1:
                return  # the learner still owes updates for what was sent
            if self.queue.full:
                self.counters["paused_full"] += 1
                self.get_logger().warning(
                    f"paused: {len(self.queue)} transitions unacknowledged (max_unacked); "
                    "waiting for the learner", throttle_duration_sec=5.0)
                return
        observation, frame = self._current
        age = time.time() - frame["stamp_ns"] * 1e-9
        if self.p["max_observation_age_s"] > 0 and age > self.p["max_observation_age_s"]:
            self.counters["stale_frames"] += 1
            return  # the next frame replaces it
        if observation.shape != (self.policy.spec.state_dim,):
            raise ValueError(f"the driver's state has {observation.size} values, the policy (weights "
                             f"v{self.policy.version}) takes {self.policy.spec.state_dim}: learner and driver "
                             "describe different tasks")
        action, gripper = self.policy.act({"state": observation}, deterministic=self.evaluating,
                                          env_step=self.env_steps)
        self._propose(action, gripper)

    def _propose(self, action, gripper) -> None:
        """Publish the policy's action for the current frame and wait for its result."""
        observation, frame = self._current
        msg = Action(source=Action.SOURCE_POLICY, intervention=False,
                     gripper=int(gripper if gripper is not None else Action.GRIPPER_STAY))
        msg.header.stamp = frame["reward"].header.stamp
        set_action_fields(msg, action)
        self._acted = (observation, frame)
        self._next_frame = None
        self._acted_at = time.monotonic()
        self.state = "acting"
        self._action_pub.publish(msg)

    def _finish_step(self) -> None:
        observation, frame = self._acted
        command = self._commands.pop(frame["stamp_ns"], None)
        if command is None:
            return  # the executed command is still on its way
        next_frame = self._next_frame
        next_observation = self.observation(next_frame)
        reward_msg = next_frame["reward"]
        terminated, truncated, penalty = self.tracker.record(
            reward_msg.reward, reward_msg.success, int(command.gripper), bool(command.intervention),
            env_terminated=reward_msg.terminated, env_truncated=reward_msg.truncated)
        if self.recording:
            self.env_steps += 1  # the bag holds the frames and commands; nothing is streamed
        elif not self.evaluating:
            self.env_steps += 1
            executed = action_fields(command)[:self.policy.spec.action_dim]
            self._send(Transition(
                actor_id=self.stream_id, sequence=self.sequence, episode_id=self.tracker.episode_id,
                step=self.tracker.step - 1, observation=Observation(state=observation.tolist()),
                next_observation=Observation(state=next_observation.tolist()), action=executed.tolist(),
                gripper_action=int(command.gripper), action_source=int(command.source),
                reward=float(reward_msg.reward), terminated=terminated, truncated=truncated,
                intervened=bool(command.intervention), gripper_penalty=float(penalty)))
        if self.recording and self.p["record_after_success"]:
            terminated, truncated = self._record_after_success(terminated, truncated)
        done = terminated or truncated
        if not done:
            end = EpisodeStatus.END_RUNNING
        elif terminated:
            succeeded = reward_msg.success or self._succeeded_at is not None
            end = EpisodeStatus.END_SUCCESS if succeeded else EpisodeStatus.END_FAILURE
        else:
            end = EpisodeStatus.END_TIMEOUT
        success = bool(reward_msg.success) or self._succeeded_at is not None
        self._publish_status(end, success=success)
        if done:
            self._succeeded_at = None
            self._end_episode(success)
        else:
            self._current = (next_observation, next_frame)
            self.state = "ready"
            self._try_act()

    def _record_after_success(self, terminated: bool, truncated: bool) -> tuple[bool, bool]:
        """mode record: go on for record_after_success steps past the first success frame."""
        if self._succeeded_at is None:
            if not terminated:
                return terminated, truncated
            self._succeeded_at = self.tracker.step
        if self.tracker.step >= self._succeeded_at + self.p["record_after_success"]:
            return True, False
        return False, False

    def _send(self, msg: Transition) -> None:
        self.queue.add(self.sequence, msg, time.monotonic())
        self.sequence += 1
        self._transition_pub.publish(msg)

    def _publish_status(self, end_reason: int, success: bool = False, detail: str = "") -> None:
        t = self.tracker
        msg = EpisodeStatus(actor_id=self.p["actor_id"], episode_id=t.episode_id, step=t.step,
                            episode_return=float(t.episode_return), success=success,
                            intervention_steps=t.intervention_steps, end_reason=end_reason,
                            evaluation=self.evaluating, detail=detail)
        msg.header.stamp = self.get_clock().now().to_msg()
        self._status_pub.publish(msg)

    def _end_episode(self, success: bool) -> None:
        self.state = "need_reset"
        if not self.evaluating:
            self.episodes_done += 1
        if self.recording:
            self.recorded["success" if success else "other"] += 1
            if self.p["record_episodes"]:
                done, goal = self.recorded["success"] + self.recorded["other"], self.p["record_episodes"]
                counted, finished = "episodes", "episodes"
            else:
                done, goal = self.recorded["success"], self.p["record_successes"]
                counted, finished = "successful", "successful demonstrations"
            self.get_logger().info(f"demo episode {self.tracker.episode_id}: "
                                   f"{'success' if success else 'no success'}; {done}/{goal} {counted} "
                                   f"recorded ({self.recorded['success']} successful, "
                                   f"{self.recorded['other']} others)")
            if done >= goal:
                self.state = "done"
                self.get_logger().info(f"done: {done} {finished} recorded")
                self._exit()
            return
        if self.evaluating:
            self.eval_results.append((success, self.tracker.step, float(self.tracker.episode_return)))
            self.eval_index += 1
            if len(self.eval_results) >= self.p["eval_episodes"]:
                self._finish_evaluation()
            return
        budget = self.p["max_env_steps"]
        every = self.p["eval_every_steps"]
        if (budget and self.env_steps >= budget) or (every and self.env_steps - self.last_eval_at >= every):
            self._start_evaluation()

    def _start_evaluation(self) -> None:
        self.evaluating, self.eval_results, self.eval_index = True, [], 0
        self.last_eval_at = self.env_steps
        self.get_logger().info(f"evaluating: {self.p['eval_episodes']} deterministic episodes "
                               f"after {self.env_steps} env steps")

    def _finish_evaluation(self) -> None:
        successes = [s for s, _, _ in self.eval_results]
        rate = float(np.mean(successes))
        length = float(np.mean([n for _, n, _ in self.eval_results]))
        mean_return = float(np.mean([r for _, _, r in self.eval_results]))
        point = {"env_steps": self.env_steps, "success_rate": rate, "mean_length": length,
                 "mean_return": mean_return, "episodes": len(self.eval_results),
                 "policy_version": self.policy.version}
        self.curve.append(point)
        self.get_logger().info(f"evaluation after {self.env_steps} env steps: success {rate:.0%} "
                               f"({sum(successes)}/{len(successes)}), mean length {length:.1f} steps, "
                               f"mean return {mean_return:.2f}")
        self._write_results()
        finished = self.p["mode"] == "eval" or (self.p["max_env_steps"] and
                                                self.env_steps >= self.p["max_env_steps"])
        if finished:
            self.state = "done"
            self.get_logger().info(f"done: final success rate {rate:.0%} over {len(successes)} episodes")
            self._exit()
        self.evaluating = False

    def _exit(self) -> None:
        """Done: exit once the last label has reached its subscribers (a recorder writes it; the
        composition stops the moment this process exits)."""
        if not self._status_pub.wait_for_all_acked(Duration(seconds=EXIT_ACK_S)):
            self.get_logger().warning(f"the last episode status was not acknowledged within {EXIT_ACK_S} s")
        raise SystemExit(0)

    def _abort(self, counter: str, message: str, detail: str) -> None:
        """End the episode as END_ABORTED (its seed is used again) and reset."""
        self.counters[counter] += 1
        self.get_logger().error(message.format(self.p["step_timeout_s"]))
        self._publish_status(EpisodeStatus.END_ABORTED, detail=detail)
        self.state = "need_reset"

    def _write_results(self) -> None:
        if not self.p["results_dir"]:
            return
        folder = Path(self.p["results_dir"])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "curve.json").write_text(json.dumps({"actor_id": self.p["actor_id"], "curve": self.curve},
                                                      indent=2))
        if self.curve:
            task = "hosted task" if self.vector_state else "pick-cube"
            write_learning_curve(folder / "curve.png", self.curve, title=f"{task}, actor {self.p['actor_id']}",
                                 metric="return" if self.vector_state else "success")

    # --------------------------------------------------------------- learner
    def _on_transition_acks(self, msg: TransitionAck) -> None:
        if msg.actor_id != self.stream_id:
            return
        self.queue.ack(int(msg.highest_contiguous), time.monotonic())
        self.trained = max(self.trained, int(msg.highest_trained))
        self._try_act()

    def _on_policy_params(self, msg: PolicyParams) -> None:
        """Hand new weights to the loader thread: decoding takes 10-200 ms and must not hold up
        acting (measured in bench/control_loop.py: every push cost control deadlines)."""
        newest = self._pending_policy.version if self._pending_policy else (
            self.policy.version if self.policy else -1)
        if msg.version <= newest:
            return
        self._loader.submit(self._load_policy, bytes(msg.data), msg.sha256, int(msg.version))

    def _load_policy(self, data: bytes, sha256: str, version: int) -> None:
        """Loader thread: check and build the policy; the executor swaps it in between steps."""
        try:
            policy = InferencePolicy.from_bytes(data, sha256)
            if policy.spec.action_dim > len(ACTION_FIELDS):
                raise PolicyFormatError(f"action_dim {policy.spec.action_dim}: an Action carries at most "
                                        f"{len(ACTION_FIELDS)}")
            # A hosted task's state vector is checked against each frame instead (_try_act).
            if not self.vector_state and policy.spec.state_dim != self.layout.dim:
                raise PolicyFormatError(f"state_dim {policy.spec.state_dim}, this actor's layout has "
                                        f"{self.layout.dim}")
        except (PolicyFormatError, ValueError) as error:
            self.counters["rejected_params"] += 1
            self.get_logger().error(f"policy params version {version} refused, keeping the last good "
                                    f"weights: {error}")
            return
        self._pending_policy = policy
        self._policy_ready.trigger()

    def _swap_policy(self) -> None:
        """Executor thread, between steps: take the newest loaded policy."""
        policy, self._pending_policy = self._pending_policy, None
        if policy is None or (self.policy is not None and policy.version <= self.policy.version):
            return
        first = self.policy is None
        self.policy = policy
        if first:
            self.get_logger().info(f"weights version {policy.version} received")
        self._try_act()

    def on_stop_requested(self) -> None:
        """SIGINT / SIGTERM: act no more; ``run_node`` then spins until ``drained`` (bounded)."""
        self.stopping = True
        self.get_logger().info(f"stopping: waiting (at most {STOP_DRAIN_S} s) for the learner to acknowledge "
                               f"{len(self.queue)} transitions")

    def drained(self) -> bool:
        """Every transition sent is acknowledged (durable at the learner), or no learner listens."""
        return len(self.queue) == 0 or self._transition_pub.get_subscription_count() == 0

    def destroy_node(self) -> None:
        self._loader.shutdown(wait=True, cancel_futures=True)
        super().destroy_node()

    # ------------------------------------------------------------------ timer
    def _on_timer(self) -> None:
        now = time.monotonic()
        for msg in self.queue.due(now):
            self._transition_pub.publish(msg)
        if self.stopping:  # only resends: no reset, no abort while the process goes
            return
        if self.state == "need_reset":
            self._request_reset()
        elif self.state == "acting" and now - self._acted_at > self.p["step_timeout_s"]:
            self._abort("aborted", "no result {} s after an action: episode aborted, resetting",
                        "no frame after the action")
        elif self.state == "await_first_frame" and now - self._reset_at > self.p["step_timeout_s"]:
            # The reset's frame did not come complete (e.g. a node between the driver and the
            # reward was still connecting): in lock-step no other frame comes, so reset again.
            self._abort("reset_retries", "no complete first frame {} s after the reset: resetting again",
                        "no first frame after the reset")
        last, steps = self._report_state
        if now - last >= self.p["report_period_s"]:
            rate = (self.env_steps - steps) / (now - last)
            self._report_state = (now, self.env_steps)
            weights = (f"weights v{self.policy.version}" if self.policy else
                       f"demos {self.recorded['success']}/{self.p['record_successes']} successful"
                       if self.recording else "no weights yet")
            self.get_logger().info(
                f"{self.env_steps} env steps ({rate:.1f}/s), {self.episodes} episodes, {weights}, "
                f"{len(self.queue)} unacknowledged (acked {self.queue.acked}, trained {self.trained}), "
                f"state {self.state}" + "".join(f", {k} {v}" for k, v in self.counters.items() if v))


def main(args=None) -> None:
    # run_node's own signal handlers: rclpy's invalidated the context under the spin, which then
    # raised instead of stopping (a SIGTERM exited 1 in a clean-clone run). A SystemExit from
    # the node (done recording or evaluating) passes through with its code.
    # After the signal: no more actions, and the transitions already sent get their
    # acknowledgement before the process goes (a clean stop loses nothing the actor counted).
    run_node(PolicyActorNode, args, drain_s=STOP_DRAIN_S)


if __name__ == "__main__":
    main()

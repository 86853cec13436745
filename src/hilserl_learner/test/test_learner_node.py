"""The learner node over real DDS: durable acks, dedup, weights, checkpoints, parameters, R5.

In-process tests run ``LearnerNode`` in the test's private rclpy context with a
test publisher of Transitions. The R5 test runs the learner as a real process
(``python -m hilserl_learner.learner_node --ros-args ...``), kills it with
SIGKILL mid-stream, restarts it, and checks the buffers hold every sequence
exactly once. Each transition carries its sequence number in ``state[0]`` so
the buffers can be checked for loss and duplication.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hilserl_testing import isolated_environment, wait_for

rclpy = pytest.importorskip("rclpy")

from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy  # noqa: E402

from hilserl_learner.buffers import DemoOnlineReplay  # noqa: E402
from hilserl_learner.checkpoint import latest_checkpoint, load_checkpoint  # noqa: E402
from hilserl_learner.transition_log import read_log  # noqa: E402
from hilserl_msgs.msg import (  # noqa: E402
    Action,
    EpisodeStatus,
    Observation,
    PolicyParams,
    Topics,
    Transition,
    TransitionAck,
)
from hilserl_msgs.srv import SaveCheckpoint  # noqa: E402
from hilserl_policy.policy_export import InferencePolicy  # noqa: E402

STATE_DIM = 4
RELIABLE = QoSProfile(depth=1000, reliability=QoSReliabilityPolicy.RELIABLE,
                      durability=QoSDurabilityPolicy.VOLATILE)
LATEST = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE,
                    durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)


def learner_parameters(tmp_path: Path, **overrides) -> dict:
    values = dict(state_dim=STATE_DIM, action_dim=3, has_gripper=True, observation_layout="",
                  hidden_dims=[16, 16], batch_size=8, learning_starts=4, seed=0,
                  online_capacity=5000, demo_capacity=1000, checkpoint_dir=str(tmp_path / "ckpt"),
                  publish_every_updates=5, checkpoint_period_s=0.0, report_period_s=1.0,
                  checkpoint_on_exit=False)
    values.update(overrides)
    return values


def make_learner(ros, tmp_path, **overrides):
    from hilserl_learner.learner_node import LearnerNode

    values = learner_parameters(tmp_path, **overrides)
    node = LearnerNode(context=ros.context,
                       parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
    return ros.add(node)


def transition(sequence: int, actor: str = "actor_0", intervened: bool = False,
               episode_length: int = 20) -> Transition:
    """Transition whose state[0] is its sequence number (so buffers can be audited)."""
    step = sequence % episode_length
    rng = np.random.default_rng(sequence)
    state = [float(sequence), *rng.normal(size=STATE_DIM - 1).astype(float)]
    next_state = [float(sequence) + 0.5, *rng.normal(size=STATE_DIM - 1).astype(float)]
    last = step == episode_length - 1
    return Transition(actor_id=actor, sequence=sequence, episode_id=sequence // episode_length,
                      step=step, observation=Observation(state=state),
                      next_observation=Observation(state=next_state),
                      action=[float(v) for v in rng.uniform(-1, 1, 3)],
                      gripper_action=Action.GRIPPER_STAY,
                      action_source=Action.SOURCE_HUMAN if intervened else Action.SOURCE_POLICY,
                      reward=float(last), terminated=last, truncated=False, intervened=intervened,
                      gripper_penalty=0.0)


class TransitionSender:
    """Publishes transitions, keeps the unacknowledged ones and resends them (like the real actor)."""

    def __init__(self, ros, actor_id: str = "actor_0", log_dir: Path | None = None):
        self.node = ros.node(f"test_actor_{actor_id}")
        self.actor_id = actor_id
        self.pub = self.node.create_publisher(Transition, Topics.TRANSITIONS, RELIABLE)
        self.acks: list[TransitionAck] = []
        self.acked = -1
        self.trained = -1
        self.log_dir = log_dir
        self.ack_violations: list[str] = []
        self.node.create_subscription(TransitionAck, Topics.TRANSITION_ACKS, self._on_ack, RELIABLE)

    def _on_ack(self, msg: TransitionAck) -> None:
        if msg.actor_id != self.actor_id:
            return
        if self.log_dir is not None and msg.highest_contiguous >= 0:
            on_disk = {r.sequence for r in read_log(self.log_dir) if r.actor_id == self.actor_id}
            missing = set(range(msg.highest_contiguous + 1)) - on_disk
            if missing:
                self.ack_violations.append(f"ack {msg.highest_contiguous}, not on disk: {sorted(missing)[:5]}")
        self.acks.append(msg)
        self.acked = max(self.acked, msg.highest_contiguous)
        self.trained = max(self.trained, msg.highest_trained)

    def send(self, sequences) -> None:
        for sequence in sequences:
            self.pub.publish(transition(sequence, self.actor_id))

    def wait_connected(self, timeout: float = 10.0) -> bool:
        """True once the learner's subscription matched; a second subscriber (a process
        outside this test on the leased domain) fails the test with that diagnosis."""
        if not wait_for(lambda: self.pub.get_subscription_count() > 0, timeout):
            return False
        time.sleep(0.3)
        count = self.pub.get_subscription_count()
        assert count == 1, (f"{count} subscribers of {Topics.TRANSITIONS} on domain "
                            f"{self.node.context.get_domain_id()}: another learner outside this test")
        return True


def online_sequences(replay: DemoOnlineReplay) -> list[int]:
    """state[0] of every valid online transition, in insertion order."""
    buffer = replay.online
    slots = np.arange(buffer.oldest, buffer.num_added) % buffer.capacity
    return [int(v) for v in buffer.frame_state[buffer.obs_frame[slots], 0]]


# ------------------------------------------------------------ in-process tests
def test_acks_only_what_is_on_disk_and_trains_at_the_utd_ratio(ros, tmp_path):
    learner = make_learner(ros, tmp_path, sync_every=16, tensorboard_dir=str(tmp_path / "tb"),
                           metrics_every_updates=10)
    actor = TransitionSender(ros, log_dir=tmp_path / "ckpt" / "transition_log")
    assert actor.wait_connected()
    sent_at = time.monotonic()
    for start in range(0, 300, 30):
        actor.send(range(start, start + 30))
        time.sleep(0.01)
    assert wait_for(lambda: actor.acked == 299, 30.0), f"acked {actor.acked}"
    elapsed = time.monotonic() - sent_at
    assert actor.ack_violations == [], actor.ack_violations[:3]
    acks = [a.highest_contiguous for a in actor.acks]
    assert acks == sorted(acks), "acks never go backwards"
    trained = [a.highest_trained for a in actor.acks]
    assert trained == sorted(trained), "highest_trained never goes backwards"
    # utd 1 and learning_starts 4: 300 transitions -> 297 updates, then highest_trained = 299.
    assert wait_for(lambda: actor.trained == 299, 60.0), f"trained {actor.trained}"
    stats = learner.stats()
    assert stats["updates"] == 297
    assert all(a.highest_trained <= a.highest_contiguous for a in actor.acks)
    assert online_sequences(learner.replay) == list(range(300))
    # TensorBoard: update metrics and the periodic figures are in the event file.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert wait_for(lambda: learner.stats()["updates"] == 297, 5.0)
    time.sleep(1.2)  # one report period: rates and buffer sizes are written and flushed
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for tag in ("losses/critic", "losses/actor", "charts/temperature", "values/q_mean",
                "perf/updates_per_s", "perf/actor_steps_per_s", "buffers/online"):
        assert tag in tags, f"{tag} missing from {sorted(tags)}"
    assert events.Scalars("losses/critic")[-1].step == 290
    print(f"\n300 transitions acked in {elapsed:.2f} s; ack latency p50 "
          f"{stats['ack_latency_p50_ms']:.1f} ms, p99 {stats['ack_latency_p99_ms']:.1f} ms; "
          f"fsync mean {stats['fsync_mean_ms']:.2f} ms, max {stats['fsync_max_ms']:.2f} ms")


def test_a_slow_disk_makes_larger_fsync_batches_not_a_slower_intake(ros, tmp_path, monkeypatch):
    """Group commit: transitions keep arriving while an fsync runs, so a slow disk (here 0.2 s per
    fsync) gives fewer, larger batches. CI once acked 125 of 300 in 30 s: the intake waited for
    every fsync, and each batch held only sync_every records."""
    from hilserl_learner import transition_log

    real_fsync = transition_log.os.fsync

    def slow_fsync(fd):
        time.sleep(0.2)
        real_fsync(fd)

    learner = make_learner(ros, tmp_path, sync_every=16, learning_starts=1000)
    actor = TransitionSender(ros, log_dir=tmp_path / "ckpt" / "transition_log")
    assert actor.wait_connected()
    monkeypatch.setattr(transition_log.os, "fsync", slow_fsync)
    syncs_before = learner.log.syncs
    actor.send(range(300))
    assert wait_for(lambda: actor.acked == 299, 30.0), f"acked {actor.acked}"
    syncs = learner.log.syncs - syncs_before
    print(f"\n300 transitions over a 0.2 s fsync: {syncs} fsyncs")
    # one record per fsync would be 300, sync_every per fsync 19; the intake never waits: a few
    assert syncs <= 10, syncs
    assert actor.ack_violations == [], actor.ack_violations[:3]
    assert online_sequences(learner.replay) == list(range(300))


def test_duplicates_and_gaps_are_dropped_and_counted(ros, tmp_path):
    learner = make_learner(ros, tmp_path, learning_starts=1000)
    actor = TransitionSender(ros)
    assert actor.wait_connected()
    actor.send(range(50))
    assert wait_for(lambda: actor.acked == 49, 20.0)
    actor.send(range(20, 40))  # resent: already stored
    assert wait_for(lambda: learner.stats()["duplicates"] == 20, 10.0), learner.stats()
    actor.send([55])  # 50..54 missing: dropped until the resend
    assert wait_for(lambda: learner.stats()["gaps"] == 1, 10.0)
    actor.send(range(50, 56))
    assert wait_for(lambda: actor.acked == 55, 10.0)
    stats = learner.stats()
    assert stats["online"] == 56 and stats["duplicates"] == 20 and stats["gaps"] == 1
    assert online_sequences(learner.replay) == list(range(56))
    # A second actor has its own numbering.
    other = TransitionSender(ros, "actor_1")
    assert other.wait_connected()
    other.send(range(5))
    assert wait_for(lambda: other.acked == 4, 10.0)
    assert learner.stats()["stored"] == {"actor_0": 55, "actor_1": 4}


def test_interventions_go_to_both_buffers_and_bad_transitions_are_refused(ros, tmp_path):
    learner = make_learner(ros, tmp_path, learning_starts=1000)
    actor = TransitionSender(ros)
    assert actor.wait_connected()
    for sequence in range(10):
        actor.pub.publish(transition(sequence, intervened=sequence >= 6))
    bad = transition(10)
    bad.action = [5.0, 0.0, 0.0]
    actor.pub.publish(bad)
    actor.send([11])
    assert wait_for(lambda: actor.acked == 11, 10.0)
    stats = learner.stats()
    assert stats["online"] == 11 and stats["demo"] == 4 and stats["rejected"] == 1


def test_weights_at_start_for_a_late_subscriber_and_version_increases(ros, tmp_path):
    learner = make_learner(ros, tmp_path)
    late = ros.node("late_actor")
    received: list[PolicyParams] = []
    late.create_subscription(PolicyParams, Topics.POLICY_PARAMS, received.append, LATEST)
    assert wait_for(lambda: received, 10.0), "TRANSIENT_LOCAL weights reach a late subscriber"
    first = received[-1]
    assert first.version >= 1 and first.format == "safetensors"
    policy = InferencePolicy.from_bytes(bytes(first.data), sha256=first.sha256, expect_spec=learner.spec)
    action, gripper = policy.act({"state": np.zeros(STATE_DIM, np.float32)}, deterministic=True)
    assert action.shape == (3,) and gripper in (-1, 0, 1)
    actor = TransitionSender(ros)
    assert actor.wait_connected()
    actor.send(range(40))  # 37 updates -> publications every 5 updates
    assert wait_for(lambda: received[-1].version >= first.version + 7, 60.0), received[-1].version
    versions = [m.version for m in received]
    assert versions == sorted(set(versions)), "versions strictly increase"
    newest = received[-1]
    InferencePolicy.from_bytes(bytes(newest.data), sha256=newest.sha256)
    assert bytes(newest.data) != bytes(first.data)


def test_save_checkpoint_service_writes_a_loadable_checkpoint(ros, tmp_path):
    learner = make_learner(ros, tmp_path)
    actor = TransitionSender(ros)
    assert actor.wait_connected()
    actor.send(range(60))
    assert wait_for(lambda: actor.trained == 59, 60.0)
    client_node = ros.node("checkpoint_client")
    client = client_node.create_client(SaveCheckpoint, Topics.SAVE_CHECKPOINT)
    assert client.wait_for_service(timeout_sec=10.0)
    future = client.call_async(SaveCheckpoint.Request(directory=""))
    assert wait_for(future.done, 30.0)
    response = future.result()
    assert response.success, response.message
    assert response.step == 57 and Path(response.path).is_dir()
    assert latest_checkpoint(tmp_path / "ckpt") == Path(response.path)
    # Loads into a fresh agent and replay of the same configuration.
    from hilserl_learner.rlpd import RLPDAgent

    agent = RLPDAgent(learner.config)
    replay = DemoOnlineReplay.from_config(learner.spec, learner.config.replay)
    counters = load_checkpoint(response.path, agent, replay)
    assert agent.num_critic_updates == 57
    assert online_sequences(replay) == list(range(60))
    assert counters["stored/actor_0"] == 59 and counters["log_position"] == 59
    # Another directory works too and does not retire the log.
    other = tmp_path / "elsewhere"
    future = client.call_async(SaveCheckpoint.Request(directory=str(other)))
    assert wait_for(future.done, 30.0) and future.result().success
    assert latest_checkpoint(other) is not None


def test_runtime_parameters_take_effect_through_the_parameter_service(ros, tmp_path):
    from rcl_interfaces.msg import Parameter as ParameterMsg
    from rcl_interfaces.msg import ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    learner = make_learner(ros, tmp_path, learning_starts=10)
    actor = TransitionSender(ros)
    assert actor.wait_connected()
    actor.send(range(20))
    assert wait_for(lambda: learner.stats()["updates"] == 11, 30.0)
    time.sleep(0.5)
    assert learner.stats()["updates"] == 11, "utd pacing: no data, no updates"

    client_node = ros.node("rqt_like")
    client = client_node.create_client(SetParameters, "/learner/set_parameters")
    assert client.wait_for_service(timeout_sec=10.0)

    def set_param(name, value, kind):
        field = {ParameterType.PARAMETER_STRING: "string_value",
                 ParameterType.PARAMETER_INTEGER: "integer_value"}[kind]
        request = SetParameters.Request(parameters=[ParameterMsg(
            name=name, value=ParameterValue(type=kind, **{field: value}))])
        future = client.call_async(request)
        assert wait_for(future.done, 10.0)
        return future.result().results[0]

    def set_param_float(name, value):
        request = SetParameters.Request(parameters=[ParameterMsg(
            name=name, value=ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value))])
        future = client.call_async(request)
        assert wait_for(future.done, 10.0)
        return future.result().results[0]

    result = set_param("pacing", "free", ParameterType.PARAMETER_STRING)
    assert result.successful, result.reason
    assert wait_for(lambda: learner.stats()["updates"] > 40, 30.0), "free pacing trains without new data"
    result = set_param("pacing", "sometimes", ParameterType.PARAMETER_STRING)
    assert not result.successful and "pacing must be one of" in result.reason
    result = set_param("state_dim", 7, ParameterType.PARAMETER_INTEGER)
    assert not result.successful, "read-only parameters refuse changes"
    # publish_every_updates: no publication for 1000 updates, then every 5 again.
    assert set_param("publish_every_updates", 1000, ParameterType.PARAMETER_INTEGER).successful
    time.sleep(0.2)
    version, updates = learner.stats()["policy_version"], learner.stats()["updates"]
    assert wait_for(lambda: learner.stats()["updates"] >= updates + 30, 30.0)
    assert learner.stats()["policy_version"] <= version + 1
    assert set_param("publish_every_updates", 5, ParameterType.PARAMETER_INTEGER).successful
    version = learner.stats()["policy_version"]
    assert wait_for(lambda: learner.stats()["policy_version"] >= version + 3, 30.0)
    # checkpoint_period_s: periodic checkpoints start.
    assert latest_checkpoint(tmp_path / "ckpt") is None
    assert set_param_float("checkpoint_period_s", 0.5).successful
    assert wait_for(lambda: latest_checkpoint(tmp_path / "ckpt") is not None, 10.0)
    assert set_param_float("report_period_s", 2.0).successful
    assert learner._report_timer.timer_period_ns == 2_000_000_000
    # Back to utd pacing: training waits for data again.
    assert set_param("pacing", "utd", ParameterType.PARAMETER_STRING).successful
    time.sleep(0.3)
    frozen = learner.stats()
    time.sleep(0.5)
    assert learner.stats()["updates"] == frozen["updates"], "back to utd pacing: training waits"


def test_episode_status_feeds_success_rate(ros, tmp_path):
    learner = make_learner(ros, tmp_path)
    node = ros.node("episodes")
    pub = node.create_publisher(EpisodeStatus, Topics.EPISODE_STATUS, RELIABLE)
    assert wait_for(lambda: pub.get_subscription_count() > 0, 10.0)
    for i in range(4):
        pub.publish(EpisodeStatus(actor_id="a", episode_id=i, step=10, episode_return=float(i),
                                  success=i % 2 == 0, intervention_steps=2,
                                  end_reason=EpisodeStatus.END_SUCCESS if i % 2 == 0
                                  else EpisodeStatus.END_TIMEOUT))
        pub.publish(EpisodeStatus(actor_id="a", episode_id=i + 1, step=0,
                                  end_reason=EpisodeStatus.END_RUNNING))
    assert wait_for(lambda: learner.stats()["episodes"] == 4, 10.0)
    assert learner.stats()["success_rate"] == 0.5


def test_demo_file_fills_the_demo_buffer_and_a_wrong_one_is_refused(ros, tmp_path):
    from hilserl_learner.demo_file import DemoDatasetBuilder, write_demo_file
    from hilserl_policy.config import ObservationSpec

    spec = ObservationSpec(state_dim=STATE_DIM, action_dim=3, has_gripper=True)
    builder = DemoDatasetBuilder(spec, layout={"name": "relative"})
    for step in range(12):
        builder.add({"state": np.full(STATE_DIM, step, np.float32)}, np.zeros(3), 1, 0.0,
                    {"state": np.full(STATE_DIM, step + 1, np.float32)}, False, step == 11)
    builder.end_episode(False)
    path = write_demo_file(tmp_path / "demos.safetensors", builder.build())
    learner = make_learner(ros, tmp_path, demo_file=str(path))
    assert learner.stats()["demo"] == 12
    from hilserl_learner.learner_node import LearnerNode

    with pytest.raises(ValueError, match="observation layout 'relative'"):
        LearnerNode(context=ros.context, parameter_overrides=[
            Parameter(k, value=v) for k, v in learner_parameters(
                tmp_path, demo_file=str(path), observation_layout="raw",
                checkpoint_dir=str(tmp_path / "other")).items()])
    with pytest.raises(ValueError, match="state_dim=4 \\(learner: 5\\)"):
        LearnerNode(context=ros.context, parameter_overrides=[
            Parameter(k, value=v) for k, v in learner_parameters(
                tmp_path, demo_file=str(path), state_dim=5,
                checkpoint_dir=str(tmp_path / "third")).items()])
    with pytest.raises(ValueError, match="observation dynamics False, parameter observation_dynamics is True"):
        LearnerNode(context=ros.context, parameter_overrides=[
            Parameter(k, value=v) for k, v in learner_parameters(
                tmp_path, demo_file=str(path), observation_layout="relative", observation_dynamics=True,
                checkpoint_dir=str(tmp_path / "fourth")).items()])


# --------------------------------------------------------------------- R5
def _learner_process(tmp_path: Path, domain_id: int, output) -> subprocess.Popen:
    values = learner_parameters(tmp_path, checkpoint_period_s=1.0, publish_every_updates=20,
                                checkpoint_on_exit=True)
    args = []
    for key, value in values.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, list):
            text = "[" + ",".join(str(v) for v in value) + "]"
        elif isinstance(value, str) and value == "":
            text = "''"
        else:
            text = str(value)
        args += ["-p", f"{key}:={text}"]
    env = isolated_environment(domain_id)
    env["PYTHONUNBUFFERED"] = "1"
    return subprocess.Popen([sys.executable, "-m", "hilserl_learner.learner_node", "--ros-args", *args],
                            env=env, stdout=output, stderr=subprocess.STDOUT)


class ResendingActor(TransitionSender):
    """Streams at a steady rate; resends everything above the last ack after a timeout."""

    def __init__(self, ros):
        super().__init__(ros, "actor_0")
        self.versions: list[int] = []
        self.node.create_subscription(PolicyParams, Topics.POLICY_PARAMS,
                                      lambda m: self.versions.append(m.version), LATEST)
        self.next = 0
        self.last_progress = time.monotonic()
        self._stop = threading.Event()
        self.limit = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        seen = -1
        while not self._stop.is_set():
            if self.next < self.limit:
                self.send([self.next])
                self.next += 1
            if self.acked != seen:
                seen, self.last_progress = self.acked, time.monotonic()
            elif time.monotonic() - self.last_progress > 1.0 and self.acked < self.next - 1:
                self.send(range(self.acked + 1, self.next))  # go back: resend the unacked
                self.last_progress = time.monotonic()
            time.sleep(0.005)

    def stop(self):
        self._stop.set()
        self.thread.join(timeout=5.0)


def test_r5_learner_killed_mid_stream_loses_and_duplicates_nothing(ros, tmp_path):
    logs = [tmp_path / "learner-1.log", tmp_path / "learner-2.log"]
    actor = ResendingActor(ros)
    with open(logs[0], "w") as output:
        proc = _learner_process(tmp_path, ros.domain_id, output)
    try:
        assert actor.wait_connected(60.0), "learner process started"
        actor.limit = 400
        actor.thread.start()
        assert wait_for(lambda: actor.acked >= 250, 90.0), f"acked {actor.acked}"
        assert wait_for(lambda: latest_checkpoint(tmp_path / "ckpt") is not None, 30.0)
        acked_before_kill = actor.acked
        proc.send_signal(signal.SIGKILL)  # mid-stream: the actor keeps sending
        proc.wait(timeout=10.0)
        checkpoint_at_kill = latest_checkpoint(tmp_path / "ckpt")
        time.sleep(0.5)
        actor.limit = 600
        with open(logs[1], "w") as output:
            proc = _learner_process(tmp_path, ros.domain_id, output)
        if not wait_for(lambda: actor.acked == 599, 120.0):
            pytest.fail(f"acked {actor.acked} after the restart (learner exit code {proc.poll()}); "
                        f"learner output:\n{logs[0].read_text()[-2000:]}\n---\n{logs[1].read_text()[-2000:]}")
        assert wait_for(lambda: actor.trained == 599, 120.0), f"trained {actor.trained}"
        proc.send_signal(signal.SIGINT)  # clean stop: final checkpoint
        assert proc.wait(timeout=60.0) == 0
    finally:
        actor.stop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = logs[1].read_text()
    assert f"resumed from {checkpoint_at_kill}" in output, output[-3000:]

    from hilserl_learner.config import LearnerConfig
    from hilserl_learner.rlpd import RLPDAgent

    folder = latest_checkpoint(tmp_path / "ckpt")
    config = LearnerConfig.load_json(folder / "config.json")
    agent = RLPDAgent(config)
    replay = DemoOnlineReplay.from_config(config.spec, config.replay)
    counters = load_checkpoint(folder, agent, replay)
    sequences = online_sequences(replay)
    lost = sorted(set(range(600)) - set(sequences))
    duplicated = len(sequences) - len(set(sequences))
    print(f"\nR5: acked {acked_before_kill} before SIGKILL; after restart {len(sequences)} stored, "
          f"lost {len(lost)}, duplicated {duplicated}; updates {agent.num_critic_updates}")
    assert lost == [] and duplicated == 0
    assert sequences == list(range(600)), "contiguous, in order"
    assert counters["stored/actor_0"] == 599
    assert agent.num_critic_updates == 600 - 4 + 1, "training resumed at the same ratio"
    assert actor.versions == sorted(set(actor.versions)), "weight versions increase across the crash"
    assert len(actor.versions) > 10


def test_config_file_starts_a_learner_with_its_values(ros, tmp_path):
    """config/learner.yaml is a valid parameter file for this node (every key declared)."""
    import yaml

    from hilserl_learner.learner_node import PARAMETERS, LearnerNode

    path = Path(__file__).resolve().parents[3] / "config" / "learner.yaml"
    values = yaml.safe_load(path.read_text())["learner"]["ros__parameters"]
    assert set(values) <= set(PARAMETERS), sorted(set(values) - set(PARAMETERS))
    values.update(checkpoint_dir=str(tmp_path / "ckpt"), tensorboard_dir="",
                  online_capacity=1000, demo_capacity=1000)
    node = ros.add(LearnerNode(context=ros.context,
                               parameter_overrides=[Parameter(k, value=v) for k, v in values.items()]))
    assert node.spec.state_dim == 10 and node.config.rlpd.batch_size == 256
    assert node.get_parameter("pacing").value == "utd"
    assert node.stats()["policy_version"] == 1


def test_running_normalisation_sees_each_stored_frame_once(ros, tmp_path):
    learner = make_learner(ros, tmp_path, state_normalization="running", learning_starts=1000)
    actor = TransitionSender(ros)
    assert actor.wait_connected()
    actor.send(range(60))  # 3 episodes of 20 steps: 63 distinct frames
    assert wait_for(lambda: actor.acked == 59, 20.0)
    normalizer = learner.agent.encoder.state_normalizer
    assert wait_for(lambda: int(normalizer.count) == 63, 5.0), int(normalizer.count)
    # state[0] is the sequence number: frames 0..59 and their next frames (+0.5).
    firsts = [0.0, 20.0, 40.0] + [s + 0.5 for s in range(60)]
    assert float(normalizer.mean[0]) == pytest.approx(np.mean(firsts), rel=1e-6)
    from hilserl_policy.policy_export import export_policy, sha256_hex

    data = export_policy(learner.agent, 99)
    policy = InferencePolicy.from_bytes(data, sha256_hex(data))
    assert float(policy.encoder.state_normalizer.shift[0]) == pytest.approx(np.mean(firsts), rel=1e-5)


def test_unreadable_newest_checkpoint_falls_back_to_an_older_one_and_the_log(ros, tmp_path):
    first = make_learner(ros, tmp_path, learning_starts=1000)
    actor = TransitionSender(ros)
    assert actor.wait_connected()
    actor.send(range(30))
    assert wait_for(lambda: actor.acked == 29, 20.0)
    older = first.save()
    actor.send(range(30, 70))
    assert wait_for(lambda: actor.acked == 69, 20.0)
    newest = first.save()
    actor.send(range(70, 80))
    assert wait_for(lambda: actor.acked == 79, 20.0)
    assert older != newest and first.log.first_position <= 30, "log kept from the oldest checkpoint"
    first.shutdown(checkpoint=False)
    ros.executor.remove_node(first)
    first.destroy_node()
    ros._nodes.remove(first)
    data = bytearray((newest / "networks.safetensors").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (newest / "networks.safetensors").write_bytes(bytes(data))

    second = make_learner(ros, tmp_path, learning_starts=1000)
    assert second.resumed_from == older
    assert second.log_replayed == 50
    assert online_sequences(second.replay) == list(range(80))
    assert second.stats()["stored"] == {"actor_0": 79}


def test_image_transitions_convert_and_bad_images_are_named():
    from hilserl_learner.learner_node import replay_args_from_transition
    from hilserl_msgs.msg import NamedImage
    from hilserl_policy.config import ObservationSpec
    from sensor_msgs.msg import Image

    spec = ObservationSpec(state_dim=2, action_dim=3, camera_names=("front",), image_size=8,
                           has_gripper=True)
    pixels = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)

    def image(encoding="rgb8", size=8, name="front"):
        return NamedImage(name=name, image=Image(height=size, width=size, encoding=encoding,
                                                 step=size * 3, data=pixels[:size, :size].tobytes()))

    def message(img):
        obs = Observation(state=[0.5, -0.5], images=[img])
        return Transition(actor_id="a", sequence=0, observation=obs, next_observation=obs,
                          action=[0.1, 0.2, 0.3], gripper_action=Action.GRIPPER_CLOSE,
                          reward=1.0, terminated=True, intervened=True)

    args = replay_args_from_transition(message(image()), spec)
    np.testing.assert_array_equal(args["observation"]["front"], pixels)
    assert args["gripper_action"] == 0 and args["terminated"] and args["episode_start"]
    assert int(args["source"]) == 2  # TransitionSource.INTERVENTION
    with pytest.raises(ValueError, match="image 'front' is bgr8"):
        replay_args_from_transition(message(image(encoding="bgr8")), spec)
    with pytest.raises(ValueError, match="expected rgb8 8x8"):
        replay_args_from_transition(message(image(size=4)), spec)
    with pytest.raises(ValueError, match="missing image 'front'"):
        replay_args_from_transition(message(image(name="wrist")), spec)


@pytest.mark.parametrize("overrides,message", [
    ({"pacing": "sometimes"}, "parameter pacing: must be one of"),
    ({"state_normalization": "bounds"}, "ObservationSpec.state_low: needs state_dim=4 values"),
    ({"demo_file": "/nonexistent/demos.safetensors"}, "demos.safetensors: demo file not found"),
    ({"target_subset_size": 3}, "CriticConfig.target_subset_size: 3 exceeds num_critics=2"),
])
def test_bad_parameters_fail_at_start_naming_them(ros, tmp_path, overrides, message):
    from hilserl_learner.learner_node import LearnerNode

    values = learner_parameters(tmp_path, **overrides)
    with pytest.raises(ValueError, match=message):
        LearnerNode(context=ros.context, parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])


def test_the_learner_process_refuses_a_missing_demo_file_in_one_line(tmp_path, ros_domain_id):
    env = isolated_environment(ros_domain_id)
    proc = subprocess.run([sys.executable, "-m", "hilserl_learner.learner_node", "--ros-args",
                           "-p", f"checkpoint_dir:={tmp_path / 'ckpt'}",
                           "-p", "demo_file:=/nonexistent/demos.safetensors"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == \
        "learner: /nonexistent/demos.safetensors: demo file not found"


_DYING_ACTOR = """
import os, signal, sys, time
sys.path[:0] = [{test_dir!r}, {shared_test_dir!r}]
import rclpy
from test_learner_node import RELIABLE, transition
from hilserl_msgs.msg import Topics, Transition
rclpy.init()
node = rclpy.create_node("dying_actor")
pub = node.create_publisher(Transition, Topics.TRANSITIONS, RELIABLE)
while pub.get_subscription_count() == 0:
    time.sleep(0.01)
for sequence in range(40):
    pub.publish(transition(sequence, "dying"))
    time.sleep(0.01)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_r6_an_actor_killed_mid_stream_does_not_stall_the_learner(ros, tmp_path):
    learner = make_learner(ros, tmp_path)
    code = _DYING_ACTOR.format(test_dir=str(Path(__file__).parent),
                               shared_test_dir=str(Path(__file__).resolve().parents[3] / "test"))
    proc = subprocess.run([sys.executable, "-c", code], env=isolated_environment(ros.domain_id),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert wait_for(lambda: learner.stats()["stored"].get("dying", -1) >= 30, 20.0), learner.stats()
    # A new actor: current weights at once, its transitions stored and trained, services answer.
    received: list[PolicyParams] = []
    # the learner may still be running updates it owes the dead actor's transitions and publish
    # newer weights meanwhile: the new actor gets at least the version current when it subscribed
    current = learner.stats()["policy_version"]
    node = ros.node("new_actor")
    node.create_subscription(PolicyParams, Topics.POLICY_PARAMS, received.append, LATEST)
    started = time.monotonic()
    assert wait_for(lambda: received, 10.0)
    print(f"\nnew actor got weights v{received[-1].version} after {time.monotonic() - started:.3f} s")
    assert current <= received[0].version <= learner.stats()["policy_version"]
    actor = TransitionSender(ros, "fresh")
    assert actor.wait_connected()
    actor.send(range(30))
    assert wait_for(lambda: actor.trained == 29, 60.0)
    client = node.create_client(SaveCheckpoint, Topics.SAVE_CHECKPOINT)
    assert client.wait_for_service(timeout_sec=10.0)
    future = client.call_async(SaveCheckpoint.Request())
    assert wait_for(future.done, 30.0) and future.result().success


def test_camera_transitions_are_stored_trained_and_the_weights_act_on_images(ros, tmp_path):
    from hilserl_msgs.msg import NamedImage
    from sensor_msgs.msg import Image

    learner = make_learner(ros, tmp_path, camera_names="front", image_size=16)
    actor = TransitionSender(ros)
    assert actor.wait_connected()
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (31, 16, 16, 3), dtype=np.uint8)

    def named(k):
        return [NamedImage(name="front", image=Image(height=16, width=16, encoding="rgb8", step=48,
                                                     data=frames[k].tobytes()))]

    for sequence in range(30):
        msg = transition(sequence)
        msg.observation.images = named(sequence)
        msg.next_observation.images = named(sequence + 1)
        actor.pub.publish(msg)
    assert wait_for(lambda: actor.trained == 29, 60.0), (actor.acked, actor.trained)
    buffer = learner.replay.online
    slots = np.arange(30)
    np.testing.assert_array_equal(buffer.frame_images["front"][buffer.obs_frame[slots]], frames[:30])
    np.testing.assert_array_equal(buffer.frame_images["front"][buffer.next_frame[slots]], frames[1:])
    from hilserl_policy.policy_export import export_policy, sha256_hex

    data = export_policy(learner.agent, 1)
    policy = InferencePolicy.from_bytes(data, sha256_hex(data), expect_spec=learner.spec)
    action, gripper = policy.act({"state": np.zeros(STATE_DIM, np.float32), "front": frames[0]}, True)
    assert action.shape == (3,) and np.all(np.abs(action) <= 1.0)


def test_sigint_stops_cleanly_with_a_final_checkpoint(ros, tmp_path):
    """Ctrl-C while training and receiving: exit 0, no FATAL line, a final checkpoint."""
    from hilserl_learner.checkpoint import read_json

    output = open(tmp_path / "learner.log", "w+")
    proc = _learner_process(tmp_path, ros.domain_id, output)
    try:
        actor = TransitionSender(ros)
        assert actor.wait_connected(60.0)
        actor.send(range(100))
        assert wait_for(lambda: actor.acked == 99, 30.0)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60.0) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output.seek(0)
    text = output.read()
    assert "FATAL" not in text and "Traceback" not in text, text[-2000:]
    folder = latest_checkpoint(tmp_path / "ckpt")
    assert read_json(folder / "state.json")["counters"]["stored/actor_0"] == 99


def test_no_silent_fresh_start_over_an_earlier_run(ros, tmp_path):
    from hilserl_learner.checkpoint import CheckpointError
    from hilserl_learner.learner_node import LearnerNode

    first = make_learner(ros, tmp_path, learning_starts=1000)
    actor = TransitionSender(ros)
    assert actor.wait_connected()
    actor.send(range(10))
    assert wait_for(lambda: actor.acked == 9, 20.0)
    first.save()

    def start(**overrides):
        values = learner_parameters(tmp_path, learning_starts=1000, **overrides)
        return LearnerNode(context=ros.context,
                           parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])

    with pytest.raises(ValueError, match="resume is false but the transition log .* holds 10 records"):
        start(resume=False)
    with pytest.raises(CheckpointError, match="no loadable checkpoint .*differ"):
        start(hidden_dims=[32, 32])  # another network than the checkpoints were written with

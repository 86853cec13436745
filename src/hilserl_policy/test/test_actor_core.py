"""The actor's ROS-free bookkeeping: frames by stamp, episode counters, the resend queue."""

import pytest

from hilserl_policy.actor_core import EpisodeTracker, FrameAssembler, ResendQueue


def test_frame_completes_when_reward_and_every_part_of_its_stamp_arrived():
    frames = FrameAssembler(("joints", "ee"))
    assert frames.add("joints", 10, "j10") is None
    assert frames.add("reward", 10, "r10") is None  # ee of stamp 10 still missing
    frame = frames.add("ee", 10, "e10")
    assert frame == {"joints": "j10", "reward": "r10", "ee": "e10", "stamp_ns": 10}
    assert frames.add("ee", 10, "late") is None  # a part of a delivered frame is ignored
    # parts of two stamps interleaved; the newer completes first, the older one is dropped
    frames.add("joints", 20, "j20")
    frames.add("joints", 30, "j30")
    frames.add("ee", 30, "e30")
    assert frames.add("reward", 30, "r30")["stamp_ns"] == 30
    assert frames.incomplete_dropped == 1
    assert frames.add("reward", 20, "r20") is None  # older than the newest complete frame


def test_episode_tracker_counts_penalty_termination_and_truncation():
    t = EpisodeTracker(max_steps=3, gripper_penalty=-0.02)
    t.start(7)
    assert t.record(0.0, False, gripper_command=-1, intervened=False) == (False, False, -0.02)  # closes
    assert t.record(0.0, False, gripper_command=-1, intervened=True) == (False, False, 0.0)  # stays closed
    assert t.record(0.0, False, gripper_command=1, intervened=True) == (False, True, -0.02)  # opens; time limit
    assert (t.episode_id, t.step, t.intervention_steps, t.gripper_closed) == (7, 3, 2, False)
    t.start(8)
    assert t.record(1.0, True, gripper_command=0, intervened=False) == (True, False, 0.0)  # success terminates
    assert t.episode_return == 1.0
    t.start(9)  # a hosted task ends its own episodes: failure terminates, its time limit truncates
    assert t.record(1.0, False, 0, False, env_terminated=True) == (True, False, 0.0)
    t.start(10)
    assert t.record(1.0, False, 0, False, env_truncated=True) == (False, True, 0.0)
    assert t.record(1.0, True, 0, False, env_truncated=True) == (True, False, 0.0)  # success wins


def test_resend_queue_drops_acknowledged_and_resends_the_rest_when_acks_stall():
    q = ResendQueue(capacity=4, resend_after_s=1.0)
    for seq in range(4):
        q.add(seq, f"t{seq}", now=0.0)
    assert q.full
    with pytest.raises(OverflowError, match="4 transitions unacknowledged"):
        q.add(4, "t4", now=0.0)
    assert q.due(now=0.5) == []
    assert q.ack(1, now=0.6) and len(q) == 2 and not q.full
    assert not q.ack(0, now=0.7)  # an older acknowledgement changes nothing
    assert q.due(now=1.5) == []  # acks moved at 0.6
    assert q.due(now=1.7) == ["t2", "t3"]  # stalled for 1.1 s: go back to the oldest
    assert q.due(now=1.8) == []  # and wait again
    assert q.resent == 2
    q.ack(3, now=2.0)
    assert len(q) == 0 and q.due(now=10.0) == []

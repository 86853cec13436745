"""Intervention mux core: who is in control, take-over countdown, pause, input filter, segments."""

import numpy as np
import pytest

from hilserl_teleop.intervention_mux import (
    SOURCE_HUMAN,
    SOURCE_POLICY,
    SOURCE_SCRIPTED,
    Command,
    HumanInput,
    InterventionMux,
    MuxConfig,
)

POLICY = Command(np.array([0.1, 0.2, 0.3]), 1)


def _human(active=True, source=SOURCE_SCRIPTED, device=""):
    return HumanInput(np.array([-0.5, 0.0, 0.5]), -1, source, active, device)


def test_policy_drives_until_a_fresh_active_human_takes_over():
    mux = InterventionMux(MuxConfig(handback_hold_steps=0))
    d = mux.decide(POLICY, stamp=1, human=_human(active=False), human_age_s=0.0)
    assert (d.source, d.intervention, d.reason) == (SOURCE_POLICY, False, "policy")
    np.testing.assert_allclose(d.deltas, [0.1, 0.2, 0.3, 0, 0, 0])
    assert d.gripper == 1
    d = mux.decide(POLICY, stamp=2, human=_human(active=True), human_age_s=0.01)
    assert (d.source, d.intervention, d.reason, d.gripper) == (SOURCE_SCRIPTED, True, "human", -1)
    np.testing.assert_allclose(d.deltas, [-0.5, 0.0, 0.5, 0, 0, 0])
    # an active human input that is too old does not count
    d = mux.decide(POLICY, stamp=3, human=_human(active=True), human_age_s=0.6)
    assert (d.source, d.intervention) == (SOURCE_POLICY, False)


def test_toggle_takes_over_and_holds_when_the_human_is_silent():
    mux = InterventionMux(MuxConfig(handback_hold_steps=0))
    mux.set_intervention(True)
    d = mux.decide(POLICY, stamp=1, human=_human(active=False), human_age_s=0.0)
    assert (d.source, d.intervention, d.reason) == (SOURCE_SCRIPTED, True, "human")
    d = mux.decide(POLICY, stamp=2, human=None, human_age_s=None)
    assert (d.source, d.intervention, d.reason, d.gripper) == (SOURCE_HUMAN, True, "human_silent", 0)
    np.testing.assert_array_equal(d.deltas, np.zeros(6))
    mux.set_intervention(False)
    assert mux.decide(POLICY, stamp=3, human=None, human_age_s=None).reason == "policy"


def test_handback_holds_for_the_countdown_then_the_policy_resumes():
    mux = InterventionMux(MuxConfig(handback_hold_steps=3))
    reasons = []
    for step in range(10):
        active = 2 <= step <= 4
        reasons.append(mux.decide(POLICY, stamp=100 + step, human=_human(active=active), human_age_s=0.0).reason)
    assert reasons == ["policy", "policy", "human", "human", "human", "handback", "handback", "handback",
                       "policy", "policy"]
    assert mux.counts == {"policy": 4, "human": 3, "human_silent": 0, "handback": 3, "paused": 0}


def test_pause_holds_without_a_human_and_the_human_still_overrides():
    mux = InterventionMux(MuxConfig(handback_hold_steps=0), paused=True)
    d = mux.decide(POLICY, stamp=1, human=None, human_age_s=None)
    assert (d.reason, d.source, d.intervention, d.gripper) == ("paused", SOURCE_POLICY, False, 0)
    np.testing.assert_array_equal(d.deltas, np.zeros(6))
    assert mux.decide(POLICY, stamp=2, human=_human(), human_age_s=0.0).reason == "human"
    mux.set_pause(False)
    assert mux.decide(POLICY, stamp=3, human=None, human_age_s=None).reason == "policy"


@pytest.mark.parametrize(
    ("input_source", "human", "accepted"),
    [
        ("any", _human(source=SOURCE_SCRIPTED), True),
        ("any", _human(source=SOURCE_HUMAN, device="keyboard"), True),
        ("simulated", _human(source=SOURCE_SCRIPTED), True),
        ("simulated", _human(source=SOURCE_HUMAN), False),
        ("spacemouse", _human(source=SOURCE_HUMAN, device="spacemouse"), True),
        ("spacemouse", _human(source=SOURCE_HUMAN, device="keyboard"), False),
        ("spacemouse", _human(source=SOURCE_SCRIPTED, device="spacemouse"), False),
    ],
)
def test_input_source_filters_human_inputs(input_source, human, accepted):
    mux = InterventionMux(MuxConfig(input_source=input_source))
    assert (mux.decide(POLICY, stamp=1, human=human, human_age_s=0.0).reason == "human") == accepted


def test_segments_record_first_and_last_step_and_stamp():
    mux = InterventionMux(MuxConfig(handback_hold_steps=1))
    pattern = [0, 1, 1, 0, 0, 0, 1, 0, 0, 1, 1, 1]
    for step, active in enumerate(pattern):
        mux.decide(POLICY, stamp=1000 + step, human=_human(active=bool(active)), human_age_s=0.0)
    assert [(s.first_step, s.last_step, s.first_stamp, s.last_stamp) for s in mux.segments] == [
        (1, 2, 1001, 1002), (6, 6, 1006, 1006)]
    assert mux.open_segment is not None and (mux.open_segment.first_step, mux.open_segment.last_step) == (9, 11)
    assert [s.steps for s in mux.all_segments()] == [2, 1, 3]
    assert mux.step == len(pattern)


def test_bad_configuration_names_the_field():
    with pytest.raises(ValueError, match="input_source"):
        InterventionMux(MuxConfig(input_source="joystick"))
    with pytest.raises(ValueError, match="human_timeout_s"):
        InterventionMux(MuxConfig(human_timeout_s=0.0))
    with pytest.raises(ValueError, match="handback_hold_steps"):
        InterventionMux(MuxConfig(handback_hold_steps=-1))

"""Simulated human: intervention rules (probabilities at given steps), takeovers, expert output."""

import numpy as np
import pytest

from hilserl_sim.simulated_human import InterventionRule, SimulatedHuman

EE = np.array([0.5, 0.0, 0.2])
CUBE = np.array([0.5, 0.1, 0.02])


def test_episode_probability_decays_linearly_to_zero():
    rule = InterventionRule("episode_probability", start_probability=0.5, decay_steps=5000)
    assert [rule.episode_probability(s) for s in (0, 1000, 2500, 5000, 9000)] == \
        pytest.approx([0.5, 0.4, 0.25, 0.0, 0.0])


def test_success_rate_rule_falls_with_the_measured_rate():
    rule = InterventionRule("success_rate", start_probability=0.6, target_success_rate=0.8)
    assert [rule.episode_probability(0, r) for r in (0.0, 0.4, 0.8, 1.0)] == pytest.approx([0.6, 0.3, 0, 0])
    human = SimulatedHuman(rule, seed=0)
    for outcome in (True, False, True, True):  # policy-only episodes
        human.taking_over = False
        human.end_episode(outcome)
    human.taking_over = True
    human.end_episode(True)  # an episode the human took over does not count
    assert human.success_rate == pytest.approx(0.75)
    human.observe_success_rate(0.2)
    assert human.success_rate == 0.2


def test_episode_takeover_frequency_matches_the_probability():
    human = SimulatedHuman(InterventionRule("episode_probability", 0.5, decay_steps=10 ** 9), seed=3)
    takes = [human.reset(episode) for episode in range(2000)]
    assert abs(np.mean(takes) - 0.5) < 0.04
    never = SimulatedHuman(InterventionRule("never"), seed=3)
    assert not any(never.reset(e) for e in range(100))


def test_takeover_covers_the_whole_episode_and_returns_expert_commands():
    human = SimulatedHuman(InterventionRule("always"), seed=0)
    human.reset(0)
    intervening, deltas, command = human.decide(0, EE, CUBE, 1.0)
    assert intervening and deltas.shape == (3,) and np.all(np.abs(deltas) <= 1.0)
    assert deltas[1] > 0.5  # the cube is 10 cm away along +y: move there
    assert command in (-1, 0, 1)
    assert all(human.decide(k, EE, CUBE, 1.0)[0] for k in range(1, 20))
    assert human.env_steps == 20 and human.intervention_steps == 20


def test_decay_counts_the_frames_it_was_asked_about():
    human = SimulatedHuman(InterventionRule("episode_probability", 1.0, decay_steps=10), seed=0)
    assert human.reset(0)  # p = 1 at frame 0
    for k in range(10):
        human.decide(k, EE, CUBE, 1.0)
    assert human.rule.episode_probability(human.env_steps) == 0.0
    assert not human.reset(1)
    assert not human.decide(0, EE, CUBE, 1.0)[0]


def test_no_progress_takes_over_after_patience_frames_without_getting_closer():
    human = SimulatedHuman(InterventionRule("no_progress", patience=3, min_progress=0.005,
                                            decay_steps=0), seed=0)
    human.reset(0)
    ee = EE.copy()
    decisions = []
    for k in range(3):  # getting 1 cm closer each frame: progress
        ee[1] += 0.01
        decisions.append(human.decide(k, ee, CUBE, 1.0)[0])
    for k in range(3, 7):  # standing still
        decisions.append(human.decide(k, ee, CUBE, 1.0)[0])
    assert decisions == [False, False, False, False, False, True, True]
    human.reset(1)  # a new episode starts with the policy in control
    assert not human.decide(0, ee, CUBE, 1.0)[0]


def test_rule_validation_names_the_field():
    with pytest.raises(ValueError, match="kind"):
        InterventionRule("sometimes")
    with pytest.raises(ValueError, match="start_probability"):
        InterventionRule(start_probability=1.5)
    with pytest.raises(ValueError, match="decay_steps"):
        InterventionRule("episode_probability", decay_steps=0)

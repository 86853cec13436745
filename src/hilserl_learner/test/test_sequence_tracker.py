from hilserl_learner.sequence_tracker import SequenceTracker
import pytest


def test_in_order_sequences_advance_the_frontier():
    t = SequenceTracker()
    assert [t.accept("a", s) for s in range(5)] == [True] * 5
    assert t.highest_contiguous("a") == 4
    assert t.highest_contiguous("other") == -1


def test_gap_holds_the_frontier_until_filled_and_duplicates_are_dropped():
    t = SequenceTracker()
    for s in (0, 1, 3, 4):
        assert t.accept("a", s)
    assert t.highest_contiguous("a") == 1
    assert t.actors()["a"].missing == 1
    assert t.accept("a", 2)
    assert t.highest_contiguous("a") == 4 and t.actors()["a"].missing == 0
    assert not t.accept("a", 3) and not t.accept("a", 0)
    assert t.actors()["a"].duplicates == 2 and t.actors()["a"].received == 5


def test_actors_are_independent_and_restore_resumes():
    t = SequenceTracker()
    t.accept("a", 0)
    t.restore("b", 9)
    assert not t.accept("b", 9) and t.accept("b", 10)
    assert t.highest_contiguous("a") == 0 and t.highest_contiguous("b") == 10


def test_negative_sequence_is_refused_with_the_actor_named():
    with pytest.raises(ValueError, match="actor 'x'"):
        SequenceTracker().accept("x", -1)

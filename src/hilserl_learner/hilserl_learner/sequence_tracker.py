"""Per-actor bookkeeping of transition sequence numbers (ROS-free).

Actors number their transitions 0, 1, 2, ... and resend what is not yet
acknowledged. The learner stores each (actor, sequence) once and acknowledges
the highest sequence below which nothing is missing, so that after any restart
nothing is lost and nothing is stored twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ActorSequence:
    """What has been received from one actor."""

    highest_contiguous: int = -1          # every sequence <= this was received
    ahead: set[int] = field(default_factory=set)   # received sequences above the frontier
    received: int = 0                     # distinct transitions accepted
    duplicates: int = 0                   # transitions received again and dropped

    @property
    def missing(self) -> int:
        """Sequences skipped below the highest one received (waiting for a resend)."""
        if not self.ahead:
            return 0
        return max(self.ahead) - self.highest_contiguous - len(self.ahead)


class SequenceTracker:
    """Accepts each (actor_id, sequence) once; reports the contiguous frontier per actor."""

    def __init__(self) -> None:
        self._actors: dict[str, ActorSequence] = {}

    def accept(self, actor_id: str, sequence: int) -> bool:
        """Record a transition; False if it was already received (drop it)."""
        if sequence < 0:
            raise ValueError(f"sequence must be >= 0, got {sequence} from actor {actor_id!r}")
        state = self._actors.setdefault(actor_id, ActorSequence())
        if sequence <= state.highest_contiguous or sequence in state.ahead:
            state.duplicates += 1
            return False
        state.received += 1
        if sequence == state.highest_contiguous + 1:
            state.highest_contiguous = sequence
            while state.highest_contiguous + 1 in state.ahead:
                state.highest_contiguous += 1
                state.ahead.remove(state.highest_contiguous)
        else:
            state.ahead.add(sequence)
        return True

    def highest_contiguous(self, actor_id: str) -> int:
        state = self._actors.get(actor_id)
        return -1 if state is None else state.highest_contiguous

    def actors(self) -> dict[str, ActorSequence]:
        return dict(self._actors)

    def restore(self, actor_id: str, highest_contiguous: int) -> None:
        """Start from a checkpointed frontier (everything <= it is stored)."""
        self._actors[actor_id] = ActorSequence(highest_contiguous=highest_contiguous)

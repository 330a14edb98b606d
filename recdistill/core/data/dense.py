"""Dense black-box labels: extra candidates put into the teacher's call for a labelled example, so that it
says what it knows about this user's own items (its long history) and about popular ones. They carry no
observed label and train the student only through its teacher head.

They are chosen from what the request holds (the user's history before it) and the popular items, seeded by
the example: never from its label or feedback (the real item is picked exactly as often as any other earlier
item of the user), so the same example gets the same candidates in the batch window and on the stream.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
from msgspec import Struct


class DenseCandidates(Struct, frozen=True, forbid_unknown_fields=True):
    """How many dense candidates an example gets: `own` distinct earlier items of its user (all when fewer),
    and `popular` items drawn from the `popular_pool` most bought ones (not already chosen)."""

    own: int = 30
    popular: int = 10
    popular_pool: int = 200

    def __post_init__(self) -> None:
        if min(self.own, self.popular, self.popular_pool) < 0:
            raise ValueError(f"dense candidates must not be negative: {self}")

    @property
    def size(self) -> int:
        """The most an example can get."""
        return self.own + self.popular

    def choose(self, history: Sequence[str], popular: Sequence[str], seed: int | str) -> list[str]:
        """The dense candidates of an example whose request holds `history` (item ids, oldest first), among
        `popular` (most bought first); seeded by the example (a string id is hashed)."""
        key = seed if isinstance(seed, int) else zlib.crc32(str(seed).encode())
        rng = np.random.default_rng(key)
        earlier = list(dict.fromkeys(history))
        picked = [earlier[i] for i in sorted(rng.choice(len(earlier), min(self.own, len(earlier)), replace=False))] \
            if self.own and earlier else []
        chosen = set(picked)
        pool = [item for item in popular[: self.popular_pool] if item not in chosen]
        if self.popular and pool:
            picked += [pool[i] for i in sorted(rng.choice(len(pool), min(self.popular, len(pool)), replace=False))]
        return picked

"""Where the generators' choices come from: hypothesis, a seeded random.Random, or atheris.

The generators in :mod:`tests.fuzz.gen_spec` and :mod:`tests.fuzz.gen_xml` take a
:class:`Chooser` and ask it for every decision, so one generator serves three drivers:
hypothesis (``HypothesisChooser``: every choice is a draw, so failures shrink to few
mutations), a plain seeded ``random.Random`` for the long run
(``benchmarks/fuzz_long.py``), and atheris' ``FuzzedDataProvider`` (coverage-guided,
``benchmarks/fuzz_atheris.py``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["Chooser", "RandomChooser", "HypothesisChooser", "AtherisChooser"]


class Chooser:
    """The decisions a generator asks for; subclasses supply :meth:`integer`."""

    def integer(self, lo: int, hi: int) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def choice(self, items: Sequence[T]) -> T:
        return items[self.integer(0, len(items) - 1)]

    def boolean(self, p_true: float = 0.5) -> bool:
        return self.integer(0, 999) < int(p_true * 1000)

    def sample(self, items: Sequence[T], k: int) -> list[T]:
        pool = list(items)
        return [pool.pop(self.integer(0, len(pool) - 1)) for _ in range(min(k, len(pool)))]

    def weighted(self, pairs: Sequence[tuple[int, Any]]) -> Any:
        total = sum(w for w, _ in pairs)
        n = self.integer(0, total - 1)
        for w, item in pairs:
            if n < w:
                return item
            n -= w
        return pairs[-1][1]

    def raw_bytes(self, n: int) -> bytes:
        return bytes(self.integer(0, 255) for _ in range(n))


class RandomChooser(Chooser):
    def __init__(self, seed: int | random.Random):
        self.rnd = seed if isinstance(seed, random.Random) else random.Random(seed)

    def integer(self, lo: int, hi: int) -> int:
        return self.rnd.randint(lo, hi)


class HypothesisChooser(Chooser):
    """Draws from hypothesis' ``data`` object (``st.data()``)."""

    def __init__(self, data):
        from hypothesis import strategies as st

        self.data, self.st = data, st

    def integer(self, lo: int, hi: int) -> int:
        return self.data.draw(self.st.integers(lo, hi))


class AtherisChooser(Chooser):
    """Draws from atheris' ``FuzzedDataProvider``; when its bytes run out every answer is the lowest."""

    def __init__(self, provider):
        self.fdp = provider

    def integer(self, lo: int, hi: int) -> int:
        if lo == hi:
            return lo
        return self.fdp.ConsumeIntInRange(lo, hi)

"""Retry policy: exponential backoff with jitter between a floor and a cap, bounded by a
message lifetime (the profile's ``[retry]`` section; defaults follow Postfix)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..profile import RetryConfig


@dataclass(frozen=True)
class RetryPolicy:
    """When to try a message again after a temporary failure."""

    config: RetryConfig

    def delay(
        self, attempts: int, *, hint: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt (1-based).

        A transport's hint (``retry_after``) wins when given. Otherwise the delay doubles
        from ``floor`` per attempt up to ``cap``, and is then spread over its upper half
        so that many failed messages do not all come back at the same moment."""
        if hint is not None and hint >= 0:
            return float(hint)
        floor, cap = self.config.floor, self.config.cap
        base = min(cap, floor * 2.0 ** max(0, attempts - 1))
        if base <= floor:
            return float(base)
        jitter = (rng or random).uniform(0.5, 1.0)
        return float(max(floor, base * jitter))

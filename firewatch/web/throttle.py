"""Failed logins counted per account and per client address, so passwords cannot be guessed
at the speed of the hashing pool.

In memory, per web process: a replica counts its own attempts (an attacker spread over N
replicas gets N times the budget, still a few guesses a minute).  Behind a reverse proxy the
client address is the proxy's unless uvicorn is told to trust its forwarded headers.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque

#: keys remembered at most (the oldest are forgotten first), so random names cannot fill memory
MAX_KEYS = 100_000
#: longer keys are cut: no account name is longer
MAX_KEY_CHARS = 64


class FailureWindow:
    """Failures of each key within the last ``window_s`` seconds."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.get(key[:MAX_KEY_CHARS], deque())
        while times and times[0] <= now - self.window_s:
            times.popleft()
        return times

    def wait_s(self, key: str, now: float) -> float:
        """Seconds until ``key`` may try again (0: now)."""
        times = self._recent(key, now)
        if len(times) < self.limit:
            return 0.0
        return times[-self.limit] + self.window_s - now

    def record(self, key: str, now: float) -> None:
        key = key[:MAX_KEY_CHARS]
        times = self._recent(key, now)
        times.append(now)
        while len(times) > self.limit:
            times.popleft()
        self._failures[key] = times
        self._failures.move_to_end(key)
        while len(self._failures) > MAX_KEYS:
            self._failures.popitem(last=False)

    def forget(self, key: str) -> None:
        self._failures.pop(key[:MAX_KEY_CHARS], None)


class LoginThrottle:
    """Refuses a login attempt once its account or its address failed too often lately."""

    def __init__(self, per_account: int, per_address: int, window_s: float) -> None:
        self.accounts = FailureWindow(per_account, window_s)
        self.addresses = FailureWindow(per_address, window_s)

    def retry_after_s(self, username: str, address: str) -> int:
        """Whole seconds to wait before this attempt may be checked (0: check it now)."""
        now = time.monotonic()
        wait = max(self.accounts.wait_s(username, now), self.addresses.wait_s(address, now))
        return math.ceil(wait)

    def failed(self, username: str, address: str) -> None:
        now = time.monotonic()
        self.accounts.record(username, now)
        self.addresses.record(address, now)

    def succeeded(self, username: str) -> None:
        """The account's count starts over; the address's does not (one right password
        must not buy a guesser another round on other accounts)."""
        self.accounts.forget(username)

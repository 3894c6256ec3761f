"""Repeat reads: a car waiting at a barrier is often reported twice, with
different trigger types (PROTOCOL.md section 2.1). The second read is recorded
but must not pulse the barrier or the display again."""

from __future__ import annotations

from collections import OrderedDict

import attrs


@attrs.frozen
class RepeatVerdict:
    repeat: bool  # the same plate was read on this lane within the window
    act: bool  # the barrier/display should act on this read


class RepeatFilter:
    """Remembers the last read of each plate per lane for ``window`` seconds.

    A read of the same plate on the same lane within the window is a repeat:
    it does not act again, unless the first read was denied and this one is
    allowed (the whitelist changed, or the cloud answered this time).
    Memory is bounded: only reads within the window are kept, at most
    ``max_entries`` of them.
    """

    def __init__(self, window: float, max_entries: int = 10_000) -> None:
        self.window = window
        self._max = max_entries
        # (lane key, plate) -> (time of the first read, whether it opened)
        self._seen: OrderedDict[tuple[str, str], tuple[float, bool]] = OrderedDict()

    def check(self, lane: str, plate: str, opened: bool, now: float) -> RepeatVerdict:
        """Judge a live read of ``plate`` on ``lane`` at ``now`` (seconds)
        and remember it (:meth:`judge`, then :meth:`remember`)."""
        verdict = self.judge(lane, plate, opened, now)
        self.remember(lane, plate, opened, now, verdict)
        return verdict

    def judge(self, lane: str, plate: str, opened: bool, now: float) -> RepeatVerdict:
        """Judge a read without remembering it: a read whose event could not
        be kept must not make the camera's re-send of it look like a repeat."""
        self._expire(now)
        if self.window <= 0 or not plate:
            return RepeatVerdict(repeat=False, act=True)
        previous = self._seen.get((lane, plate))
        if previous is None:
            return RepeatVerdict(repeat=False, act=True)
        _, previously_opened = previous
        if opened and not previously_opened:
            # Denied a moment ago, allowed now: open.
            return RepeatVerdict(repeat=True, act=True)
        return RepeatVerdict(repeat=True, act=False)

    def remember(
        self, lane: str, plate: str, opened: bool, now: float, verdict: RepeatVerdict
    ) -> None:
        """Record a kept read that was judged ``verdict``."""
        if self.window <= 0 or not plate or not verdict.act:
            return
        # A first read, or a denial turned into an opening.
        self._remember((lane, plate), now, opened)

    def _remember(self, key: tuple[str, str], now: float, opened: bool) -> None:
        self._seen.pop(key, None)
        self._seen[key] = (now, opened)
        while len(self._seen) > self._max:
            self._seen.popitem(last=False)

    def _expire(self, now: float) -> None:
        while self._seen:
            key, (at, _) = next(iter(self._seen.items()))
            if now - at < self.window:
                break
            del self._seen[key]

    def __len__(self) -> int:
        return len(self._seen)

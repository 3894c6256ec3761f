"""The site's lanes as the plate list knows them: a small value, no config.

Lane names are unique regardless of case (the configuration refuses two lanes
that differ only in case), so a name written ``entrance`` in a spreadsheet is
the lane ``Entrance``. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

__all__ = ["Lanes"]


def _names(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(names)


@attrs.frozen
class Lanes:
    """The configured lane names, in configuration order."""

    names: tuple[str, ...] = attrs.field(default=(), converter=_names)
    _by_folded: dict[str, str] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_by_folded", {name.casefold(): name for name in self.names})

    def canonical(self, name: str) -> str | None:
        """The configured spelling of lane ``name`` (matched without regard
        to case or surrounding spaces), or None when no lane has that name."""
        return self._by_folded.get(name.strip().casefold())

    def describe(self) -> str:
        """The lane names for an error message."""
        return ", ".join(self.names) or "none configured"

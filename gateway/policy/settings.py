"""The ``[policy]`` settings: the gate decision when the cloud does not answer.
Pure: no Twisted."""

from __future__ import annotations

from typing import Literal

import attrs

from gateway.schema import Section, existing_file, integer, number, one_of, optional, setting

__all__ = ["POLICY", "PolicySettings", "UNKNOWN_PLATE", "UnknownPlate"]

UnknownPlate = Literal["deny", "allow"]
UNKNOWN_PLATE = one_of("deny", "allow")


@attrs.frozen
class PolicySettings:
    """``unknown_plate`` is what an unlisted plate gets (a lane may say otherwise);
    a repeat of a plate within ``duplicate_window_seconds`` at one lane is
    answered as before; ``max_plate_distance`` is how many misread characters
    still match a listed plate; ``whitelist_csv`` (absolute) is a watched file
    of plate entries."""

    unknown_plate: UnknownPlate = setting(UNKNOWN_PLATE, default="deny")
    duplicate_window_seconds: float = setting(number(0, 300), default=10.0)
    # Two edits match most random reads against a large list (and cost
    # several times the memory): one is the most that stays safe.
    max_plate_distance: int = setting(integer(0, 1), default=0)
    whitelist_csv: str | None = setting(optional(existing_file), default=None)


POLICY = Section(PolicySettings)

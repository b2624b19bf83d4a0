"""Parsing of the size arguments several commands share (``--input CxHxW``, ``--size H[xW]``)."""

from __future__ import annotations

from vislab.errors import UserError


def parse_input_size(text: str) -> tuple[int, int, int]:
    """``'3x224x224'`` -> ``(3, 224, 224)``."""
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise UserError(f"--input {text!r} is not CxHxW with positive integers: "
                        "write it like 3x224x224")
    return tuple(int(p) for p in parts)


def parse_size(text: str, flag: str = "--size") -> tuple[int, int]:
    """``'128'`` -> ``(128, 128)``, ``'96x160'`` -> ``(96, 160)``."""
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise UserError(f"{flag} {text!r}: give H or HxW in pixels, e.g. 128 or 96x160")
    return (int(parts[0]), int(parts[-1]))

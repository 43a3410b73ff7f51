"""Seeds: every random draw of a run derives from the run seed by name, never from global state.

``stable_seed(run_seed, audit_id, set_name, ...)`` hashes its parts with SHA-256, so the same
parts give the same seed on every run, process and platform (Python's ``hash`` is salted per
process); audits draw from ``torch.Generator`` objects seeded this way, so the same seed gives
the same report, and adding an audit or a set never shifts another's random numbers.
"""

from __future__ import annotations

import hashlib

import torch

__all__ = ["generator", "stable_seed"]


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from any parts, stable across runs and platforms (unlike ``hash``)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generator(*parts: object) -> torch.Generator:
    """A fresh CPU generator seeded with ``stable_seed(*parts)``."""
    return torch.Generator(device="cpu").manual_seed(stable_seed(*parts))

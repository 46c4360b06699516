"""Each backbone family's tiny fixture for the conformance test, declared beside its other fixtures.

A ``tests/models/<family>_fixtures.py`` module declares ``CONFORMANCE = {'<registered
name>': Family(build, sizes)}``; :func:`family_fixtures` collects them, so adding a family
adds its own fixtures file and edits no shared test.
"""

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mmseg_sam.models.backbones.base import SAMBackboneBase


@dataclass(frozen=True)
class Family:
    """A backbone family's tiny fixture: how to build it and the input sizes it takes (the first square)."""

    build: Callable[..., SAMBackboneBase]
    sizes: tuple[tuple[int, int], ...]


def family_fixtures() -> dict[str, Family]:
    """Registered family name -> fixture, from every ``tests/models/*_fixtures.py``'s ``CONFORMANCE``."""
    found: dict[str, Family] = {}
    for path in sorted(Path(__file__).parent.glob('*_fixtures.py')):
        module = importlib.import_module(f'tests.models.{path.stem}')
        found.update(getattr(module, 'CONFORMANCE', {}))
    return found

"""YAML as researchers write it. PyYAML follows YAML 1.1, which reads ``1e-4`` (no dot) as a
string; YAML 1.2 and every other tool read it as a number. This loader does too."""

from __future__ import annotations

import re
from typing import Any

import yaml


class Loader(yaml.SafeLoader):
    """SafeLoader (no Python objects) plus YAML 1.2 floats such as ``1e-4`` and ``5E3``."""


Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


class Required(str):
    """``!required "what to give"``: a value a config cannot know (a checkpoint, a dataset on your
    cluster). The config loads, and every scale is checked, but running with it unfilled is refused,
    naming the key and what it needs (fill it with ``--set``)."""


Loader.add_constructor("!required", lambda loader, node: Required(loader.construct_scalar(node)))


def load(text: str) -> Any:
    return yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass

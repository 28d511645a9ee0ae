"""A constitution: named principles, each a critique request, a revision request and the question
an AI judge answers when it compares two replies (Bai et al. 2022, arXiv:2212.08073).

    principles:
      - name: harm
        critique_request: Point out every way your last answer could help someone cause harm ...
        revision_request: Rewrite your last answer so it gives no help with causing harm ...
        preference_question: Which answer is less likely to help someone cause harm?

`load_constitution("default")` reads the one shipped in `lmforge/cai/constitutions/`; any other
value is a path to a YAML file of that shape. Errors name the file and the offending entry.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from lmforge.cai.records import resolve_packaged

PACKAGED_DIR = Path(__file__).parent / "constitutions"


@dataclass(frozen=True)
class Principle:
    name: str
    critique_request: str
    revision_request: str
    preference_question: str


@dataclass(frozen=True)
class Constitution:
    name: str
    principles: tuple[Principle, ...]
    path: str
    sha256: str  # of the file's bytes: records and manifests name exactly which text was used

    def by_name(self, name: str) -> Principle:
        for principle in self.principles:
            if principle.name == name:
                return principle
        raise KeyError(f"constitution {self.path} has no principle {name!r}; it has {self.names()}")

    def names(self) -> list[str]:
        return [p.name for p in self.principles]

    def sample(self, rng: random.Random) -> Principle:
        return rng.choice(self.principles)


class ConstitutionError(ValueError):
    """The constitution file is not YAML, or an entry lacks a field."""


def load_constitution(name_or_path: str | Path = "default") -> Constitution:
    path = resolve_packaged(name_or_path, PACKAGED_DIR, ".yaml", "constitution")
    raw = path.read_bytes()
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ConstitutionError(f"{path}: not valid YAML ({err})") from err
    entries = data.get("principles") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ConstitutionError(f"{path}: expected a non-empty list under 'principles'")
    required = [f.name for f in fields(Principle)]
    principles, seen = [], set()
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ConstitutionError(f"{path}: principles[{index}] is not a mapping")
        missing = [k for k in required if not str(entry.get(k) or "").strip()]
        if missing:
            raise ConstitutionError(f"{path}: principles[{index}] ({entry.get('name', '?')}) lacks {missing}")
        unknown = sorted(set(entry) - set(required))
        if unknown:
            raise ConstitutionError(f"{path}: principles[{index}] ({entry['name']}) has unknown keys {unknown}")
        if entry["name"] in seen:
            raise ConstitutionError(f"{path}: principle name {entry['name']!r} appears twice")
        seen.add(entry["name"])
        principles.append(Principle(**{k: " ".join(str(entry[k]).split()) for k in required}))
    return Constitution(
        name=str(data.get("name", path.stem)),
        principles=tuple(principles),
        path=str(path),
        sha256=hashlib.sha256(raw).hexdigest(),
    )

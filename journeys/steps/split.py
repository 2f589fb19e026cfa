"""`{id, type: "split", variants: [{percent, next}]}`: A/B/n, the same variant every time.

2-10 variants of whole percents (1-99) summing to 100. The variant is a deterministic bucket
of (journey, run key, step) from SHA-256, never Python's `hash()` (salted per process): a run
replayed on another worker, or re-entering later with the same key, lands in the same variant.
The worker passes the journey id and a run key naming the user and the entry key
(`RunFacts.journey_id`, `RunFacts.run_key`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from journeys.steps.base import MISSING, Go, Outcome, Problems, Step, StepInput, is_whole

MIN_VARIANTS = 2
MAX_VARIANTS = 10
BUCKETS = 10_000


def split_bucket(journey_id: str, run_key: str, step: str) -> int:
    """The run's bucket (0..9999) at this split step."""
    text = f"{journey_id}\x1f{run_key}\x1f{step}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "big") % BUCKETS


@dataclass(frozen=True)
class Variant:
    """A share of the runs and where it leads."""

    percent: int
    next: str


@dataclass(frozen=True, kw_only=True)
class Split(Step):
    """Send each run down one variant, by percent."""

    variants: tuple[Variant, ...]
    type_name: ClassVar[str] = "split"
    fields: ClassVar[tuple[str, ...]] = ("variants",)

    @classmethod
    def check(cls, raw: Mapping[str, Any], problems: Problems) -> Self:
        items = problems.take(raw, "variants")
        variants: list[Variant] = []
        if items is MISSING:
            pass
        elif not isinstance(items, list) or not MIN_VARIANTS <= len(items) <= MAX_VARIANTS:
            problems.add("variants", f"variants must be a list of {MIN_VARIANTS}-{MAX_VARIANTS}")
        else:
            for index, item in enumerate(items):
                sub = f"variants[{index}]"
                if not isinstance(item, Mapping):
                    problems.add(sub, "a variant must be an object {percent, next}")
                    continue
                problems.known(item, ("percent", "next"), sub)
                percent = problems.take(item, "percent", sub)
                whole = 0
                if percent is not MISSING:
                    if is_whole(percent) and 1 <= percent <= 99:
                        whole = int(percent)
                    else:
                        problems.add(f"{sub}.percent", "percent must be a whole number, 1-99")
                target = problems.edge(problems.take(item, "next", sub), f"{sub}.next")
                variants.append(Variant(whole, target))
            total = sum(v.percent for v in variants)
            if len(variants) == len(items) and all(v.percent for v in variants) and total != 100:
                problems.add("variants", f"percents must sum to 100, not {total}")
        return cls(id=problems.step_id, variants=tuple(variants))

    def edge_fields(self) -> list[tuple[str, str]]:
        return [(f"variants[{i}].next", v.next) for i, v in enumerate(self.variants)]

    def config_json(self) -> dict[str, Any]:
        return {"variants": [{"percent": v.percent, "next": v.next} for v in self.variants]}

    def advance(self, run: StepInput) -> Outcome:
        bucket = split_bucket(run.journey_id, run.run_key, run.step)
        bound = 0
        for variant in self.variants:
            bound += variant.percent * (BUCKETS // 100)
            if bucket < bound:
                return Go(variant.next)
        return Go(self.variants[-1].next)

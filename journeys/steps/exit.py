"""`{id, type: "exit"}`: the run ends here (status "exited", the step named as the reason)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from journeys.steps.base import End, Outcome, Problems, Step, StepInput

EXIT_STEP = 'exit step "{step}"'


@dataclass(frozen=True, kw_only=True)
class Exit(Step):
    """The end of a path through the journey."""

    type_name: ClassVar[str] = "exit"

    @classmethod
    def check(cls, raw: Mapping[str, Any], problems: Problems) -> Self:
        return cls(id=problems.step_id)

    def advance(self, run: StepInput) -> Outcome:
        return End(EXIT_STEP.format(step=run.step))

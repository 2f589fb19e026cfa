"""Rules: `when` a trigger happens to a user, `if` they match a filter, `then` apply actions.

This package does no I/O and touches no globals: `definition` validates and normalizes a rule
body, `engine` matches causes to rules and runs the chain of causes their actions make. The
worker (`workers.events`) applies the actions.
"""

from journeys.rules.definition import (
    ACTION_KINDS,
    TRIGGER_KINDS,
    RuleError,
    RuleSpec,
    parse_rule,
    set_reference,
)
from journeys.rules.engine import (
    MAX_DEPTH,
    STOPPED_DEPTH,
    STOPPED_ONCE,
    Cause,
    CompiledRule,
    Firing,
    RuleIndex,
    admission,
    run_chain,
    trigger_matches,
)

__all__ = [
    "ACTION_KINDS",
    "MAX_DEPTH",
    "STOPPED_DEPTH",
    "STOPPED_ONCE",
    "TRIGGER_KINDS",
    "Cause",
    "CompiledRule",
    "Firing",
    "RuleError",
    "RuleIndex",
    "RuleSpec",
    "admission",
    "parse_rule",
    "run_chain",
    "set_reference",
    "trigger_matches",
]

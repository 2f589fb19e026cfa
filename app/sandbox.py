"""The Jinja2 sandbox that templates render in, and the caps that bound one render's work.

The stock `ImmutableSandboxedEnvironment` blocks attribute escapes but not work:
`[[1]*20000]*20000`, repeated `~` or a big `%` format allocate gigabytes inside one Python
operation, long before an output-size cap is looked at, and a loop over a list never calls
back into the sandbox at all. Here each cap is checked *before* the operation that would break
it runs. This module does no I/O and knows nothing of channels or Cairn's data: the render
pipeline (`app.rendering`) builds environments from `Sandbox` and runs each render inside
`limited(limits)`.

**Values.** Every value a template makes weighs at most `max_value_size` (1,000,000). A
value's weight approximates the size of its text: a string's length, an int's digits, for a
container 8 per item plus its items' weights (an item shared N times counts N times, since that
is what `str()`, a comparison or a hash would walk), a namespace's attributes, 64 for any other
object. It is checked where values are made: the intercepted operators `*` `+` `%` `**`, `~`
(compiled to a checked join), list/tuple/dict literals, the results of calls and filters, and
`{{ }}` output. Where one call could blow up by itself, its arguments are checked first:
repetition and concatenation, `%` and `str.format` (widths up to `max_width`, and the number of
fields times the arguments' weight), `join`, `replace`, `indent`, `center`, `tojson(indent)`,
`wordwrap`, `urlize` and `pprint` (at most `max_slow_filter_input`: they work word by word or
item by item in Python), `**` and `*` on ints (`max_int_bits`), `sum` (numbers only: summing
lists is quadratic). The str/bytes methods that pad or translate (`ljust`, `zfill`,
`expandtabs`, `translate`...) and `int.to_bytes` are blocked (templates have the filters).
Text made by `{{ }}` in one render (macros, `{% set %}` blocks and `caller()` included) is at
most `max_output_total` characters, and buffered blocks are joined only under the value cap.
Values from the context are not checked: their size is the API's to bound.

**Work.** A render has `max_ops` steps (100,000) and `max_seconds` of its thread's CPU time
(200 ms), both checked at every step. CPU time, not wall clock: a worker process runs several
threads, and on a busy machine a render can wait longer than its whole budget for the
interpreter lock or a core while doing almost nothing (an ordinary campaign template failed
"rendering took over 200 ms" that way in CI). What starves the server is work, and waiting is
not work. Nor is the garbage collector's: a full collection that happens to start inside a
render walks the whole heap of a busy worker (over 200 ms of CPU for a one-line body in a
5,000-message fan-out, in CI), so the time this thread spends collecting is given back (a
`gc.callbacks` hook). The wall clock is read at every step (cheap); the thread's CPU clock, a
system call, only once the wall clock says the budget could be spent, and the next check is
put off by what is left. A step is an attribute or item lookup, a call, a filter or test, an
intercepted operator, a literal, a join, an output value, and each item a `{% for %}` loop takes
(the compiler wraps every loop's iterable, recursive `loop(...)` calls included), so no Python
loop in a compiled template runs without counting. What runs between two steps is one operation
on values within the caps: mostly well under 50 ms, a few hundred ms at worst (`title` on a
1,000,000-character string, `sort` of the longest list allowed). So a hostile render ends
about that long after its time limit, and never holds the interpreter lock longer at a stretch.
Compiling evaluates nothing: the optimizer's constant folding is off and only literals are
output at compile time, so a template costs nothing until it renders under a budget (the
pipeline keeps compile time off the clock with `Budget.exclude`).

**Why checks in the sandbox, not a watchdog.** CPython cannot stop a thread inside one C call
(`str()` of a nested list, a big join), and a process per render costs more than most renders;
checking sizes before each operation is deterministic and testable. Running the workers under a
container or RLIMIT_AS memory limit is still good defence in depth.
"""

from __future__ import annotations

import functools
import gc
import math
import re
import string
import threading
import time
from collections.abc import (
    Callable,
    ItemsView,
    Iterable,
    Iterator,
    KeysView,
    Mapping,
    ValuesView,
)
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, cast

from jinja2 import ChainableUndefined, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.filters import FILTERS
from jinja2.runtime import Context, LoopContext, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace


@dataclass(frozen=True)
class RenderLimits:
    """The caps of one render (see the module docstring)."""

    max_ops: int = 100_000
    max_seconds: float = 0.2
    max_value_size: int = 1_000_000
    max_output_total: int = 2_000_000
    max_field_chars: int = 65_536
    max_width: int = 10_000
    max_int_bits: int = 4096
    max_slow_filter_input: int = 65_536


DEFAULT_LIMITS = RenderLimits()


class CapExceeded(Exception):
    """A cap was hit inside the sandbox; the render pipeline reports it as a limit exceeded."""


# Weights: see the module docstring. An item costs more than a character because per-item
# work (sorting, pprint, unique) runs at Python speed.
_ITEM_WEIGHT = 8
_OBJECT_WEIGHT = 64


class _Collecting(threading.local):
    """CPU time this thread has spent in the garbage collector (see the module docstring)."""

    seconds = 0.0
    started: float | None = None


_COLLECTING = _Collecting()


def _on_collect(phase: str, _info: dict[str, int]) -> None:
    if phase == "start":
        _COLLECTING.started = time.thread_time()
    elif _COLLECTING.started is not None:
        _COLLECTING.seconds += time.thread_time() - _COLLECTING.started
        _COLLECTING.started = None


gc.callbacks.append(_on_collect)


class Budget:
    """Steps, time and output left for the current render, and the weights already known."""

    __slots__ = (
        "_walking",
        "_weights",
        "collected",
        "cpu_deadline",
        "deadline",
        "limits",
        "ops",
        "produced",
    )

    def __init__(self, limits: RenderLimits) -> None:
        self.limits = limits
        self.ops = 0
        self.produced = 0
        # The CPU budget ends at `cpu_deadline` on this thread's CPU clock; the wall clock
        # cannot pass `deadline` before that, so only then is the CPU clock read.
        self.cpu_deadline = time.thread_time() + limits.max_seconds
        self.collected = _COLLECTING.seconds
        self.deadline = time.monotonic() + limits.max_seconds
        # id -> (value, weight); holding the value keeps its id from being reused meanwhile.
        # Sound because templates cannot mutate lists and dicts (the immutable sandbox).
        self._weights: dict[int, tuple[Any, int]] = {}
        self._walking: set[int] = set()

    def tick(self) -> None:
        """Count one step; CapExceeded past the step or time budget."""
        self.ops += 1
        if self.ops > self.limits.max_ops:
            raise CapExceeded(f"more than {self.limits.max_ops} template operations")
        if time.monotonic() > self.deadline:
            collected = _COLLECTING.seconds - self.collected
            left = self.cpu_deadline + collected - time.thread_time()
            if left <= 0:
                spent = self.limits.max_seconds * 1000
                raise CapExceeded(f"rendering took over {spent:.0f} ms of CPU time")
            self.deadline = time.monotonic() + left

    def exclude(self, seconds: float) -> None:
        """Give back `seconds` of CPU time (spent compiling, say) to the budget."""
        self.cpu_deadline += seconds
        self.deadline += seconds

    def produce(self, chars: int) -> None:
        """Count text made by an output expression; CapExceeded past `max_output_total`."""
        self.produced += chars
        if self.produced > self.limits.max_output_total:
            cap = self.limits.max_output_total
            raise CapExceeded(f"the template produced over {cap} characters of output")

    def weigh(self, value: Any) -> int:
        """The weight of `value`, or some number over the cap once it is known to be over."""
        if isinstance(value, str | bytes | bytearray):
            return len(value)
        if value is None or isinstance(value, bool | float):
            return 1
        if isinstance(value, int):
            return value.bit_length() * 3 // 10 + 1
        key = id(value)
        known = self._weights.get(key)
        if known is not None:
            return known[1]
        if isinstance(value, Namespace):
            # Its attributes change with `{% set ns.x %}`: never remembered; a namespace
            # holding itself counts as an object.
            if key in self._walking:
                return _OBJECT_WEIGHT
            self._walking.add(key)
            try:
                return self._weigh_pairs(object.__getattribute__(value, "_Namespace__attrs"))
            finally:
                self._walking.discard(key)
        if isinstance(value, dict | ItemsView):
            total = self._weigh_pairs(value if isinstance(value, dict) else dict(value))
        elif isinstance(value, list | tuple | set | frozenset | KeysView | ValuesView):
            total = self._weigh_items(value)
        else:
            return _OBJECT_WEIGHT
        self._weights[key] = (value, total)
        return total

    def _weigh_items(self, items: Iterable[Any]) -> int:
        cap = self.limits.max_value_size
        total = 0
        for item in items:
            # Each item is weighed against the whole cap, so a remembered weight is exact
            # or over the cap, never a partial count below it.
            total += _ITEM_WEIGHT + self.weigh(item)
            if total > cap:
                break
        return total

    def _weigh_pairs(self, mapping: Mapping[Any, Any]) -> int:
        cap = self.limits.max_value_size
        total = 0
        for key, item in mapping.items():
            total += _ITEM_WEIGHT + self.weigh(key) + self.weigh(item)
            if total > cap:
                break
        return total

    def check(self, value: Any, what: str = "a value") -> Any:
        """`value`, unless it weighs over the value cap."""
        weight = self.weigh(value)
        if weight > self.limits.max_value_size:
            raise CapExceeded(f"{what} over {self.limits.max_value_size} characters or items")
        return value

    def check_estimate(self, estimate: float, what: str) -> None:
        """CapExceeded when an operation would make over the value cap."""
        cap = self.limits.max_value_size
        if estimate > cap:
            raise CapExceeded(f"{what} would make {int(estimate)} characters or items (cap {cap})")

    def check_width(self, width: Any, what: str) -> None:
        """CapExceeded for a width, count or padding over `max_width`."""
        cap = self.limits.max_width
        if isinstance(width, int) and width > cap:
            raise CapExceeded(f"{what} width {width} is over {cap}")


# Set for the duration of a render; the sandbox hooks read it (thread- and task-local).
_BUDGET: ContextVar[Budget | None] = ContextVar("cairn_render_budget", default=None)
# Outside a render (compiling, a filter called by hand) sizes are still capped, work is not.
_UNTIMED = RenderLimits(max_ops=2**62, max_seconds=1e9)


def budget() -> Budget:
    """The current render's budget; outside a render a fresh one with no step or time cap."""
    return _BUDGET.get() or Budget(_UNTIMED)


@contextmanager
def limited(limits: RenderLimits = DEFAULT_LIMITS) -> Iterator[Budget]:
    """Run the block as one render under `limits`."""
    started = Budget(limits)
    token = _BUDGET.set(started)
    try:
        yield started
    finally:
        _BUDGET.reset(token)


_SEQUENCES = (str, bytes, bytearray, list, tuple)
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")
_DIGITS = re.compile(r"\d+")


def _check_percent_format(current: Budget, fmt: str | bytes, args: Any) -> None:
    if isinstance(fmt, bytes):
        fmt = fmt.decode("latin-1")
    for match in _PERCENT_SPEC.finditer(fmt):
        for part in match.groups():
            if part == "*":
                raise CapExceeded("'*' widths are not allowed in % formats")
            if part:
                current.check_width(int(part), "% format")
    # Each field can take all of the arguments (`%(a)s` repeated with a dict).
    current.check_estimate(len(fmt) + fmt.count("%") * current.weigh(args), "% format")


def _check_brace_format(current: Budget, fmt: str, args: Any, kwargs: Any) -> None:
    # Each field can take all of the arguments (`{0}` repeated); counted before parsing.
    weight = current.weigh(list(args)) + current.weigh(dict(kwargs))
    current.check_estimate(len(fmt) + fmt.count("{") * weight, "format")
    try:
        for _literal, _name, spec, _conversion in string.Formatter().parse(fmt):
            if not spec:
                continue
            if "{" in spec:
                raise CapExceeded("nested replacement fields in a format spec are not allowed")
            for digits in _DIGITS.findall(spec):
                current.check_width(int(digits), "format spec")
    except ValueError:
        return  # str.format raises its own error for this string


def _check_join(current: Budget, sep: Any, items: Any) -> None:
    if isinstance(items, list | tuple) and isinstance(sep, str | bytes):
        weight = sum(current.weigh(i) for i in items)
        current.check_estimate(weight + len(sep) * max(0, len(items) - 1), "join")


def _check_replace(current: Budget, value: Any, old: Any, new: Any) -> None:
    if isinstance(value, str | bytes) and type(old) is type(new) and isinstance(old, type(value)):
        count = value.count(old) if old else len(value) + 1  # type: ignore[arg-type]
        current.check_estimate(len(value) + count * max(0, len(new) - len(old)), "replace")


# Methods whose one argument can blow up memory; templates use the filters instead.
_BLOCKED_METHODS: dict[type, frozenset[str]] = {
    str: frozenset({"center", "ljust", "rjust", "zfill", "expandtabs", "translate", "maketrans"}),
    bytes: frozenset({"center", "ljust", "rjust", "zfill", "expandtabs", "translate", "maketrans"}),
    bytearray: frozenset({"center", "ljust", "rjust", "zfill", "expandtabs", "translate"}),
    int: frozenset({"to_bytes"}),
}


class _Counted:
    """A loop's iterable whose every item counts as a step; keeps `len` for `loop.length`."""

    __slots__ = ("_items",)

    def __init__(self, items: Any) -> None:
        self._items = items

    def __iter__(self) -> Iterator[Any]:
        current = budget()
        for item in self._items:
            current.tick()
            yield item

    def __len__(self) -> int:
        return len(self._items)  # TypeError when unsized: LoopContext then counts by itself


class _BoundedCodeGenerator(CodeGenerator):
    """Jinja's code generator with the hooks that plain sandbox compilation lacks."""

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        # `for x in environment.loop_items(<iter>)`: every item ticks the budget.
        iterable = node.iter
        hook = nodes.EnvironmentAttribute("loop_items", lineno=iterable.lineno)
        node.iter = nodes.Call(hook, [iterable], [], None, None, lineno=iterable.lineno)
        try:
            super().visit_For(node, frame)
        finally:
            node.iter = iterable

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        # `a ~ b` is a plain str_join/markup_join call in stock Jinja, never intercepted.
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            join = "markup_join"
        else:
            join = "str_join"
        self.write(f"environment.join_values({join}, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")

    def _literal(self, visit: Callable[[Any, Frame], None], node: Any, frame: Frame) -> None:
        self.write("environment.new_value(")
        visit(node, frame)
        self.write(")")

    def visit_List(self, node: nodes.List, frame: Frame) -> None:
        self._literal(super().visit_List, node, frame)

    def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:
        self._literal(super().visit_Dict, node, frame)

    def visit_Tuple(self, node: nodes.Tuple, frame: Frame) -> None:
        if node.ctx == "load":
            self._literal(super().visit_Tuple, node, frame)
        else:  # an assignment target
            super().visit_Tuple(node, frame)

    def _output_child_to_const(self, node: nodes.Expr, frame: Frame, finalize: Any) -> str:
        # Stock Jinja evaluates constant filters and lookups here, at compile time and so
        # outside any budget; only literals are worth it.
        if not isinstance(node, nodes.TemplateData | nodes.Const):
            raise nodes.Impossible()
        result: str = super()._output_child_to_const(node, frame, finalize)
        return result


class Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox with counted steps and every value-making operation checked."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})
    code_generator_class = _BoundedCodeGenerator

    def __init__(
        self, *, autoescape: bool, filters: Mapping[str, Callable[..., Any]] | None = None
    ) -> None:
        super().__init__(
            autoescape=autoescape,
            undefined=ChainableUndefined,
            optimized=False,
            finalize=self._finalize,
        )
        # lipsum(n) would make output of any size from a one-line template.
        self.globals.pop("lipsum", None)
        self.filters = {name: _counted(f) for name, f in self.filters.items()}
        self.filters.update({name: _counted(f) for name, f in _CHECKED_FILTERS.items()})
        self.filters.update({name: _counted(f) for name, f in (filters or {}).items()})
        tests = cast("dict[str, Callable[..., Any]]", self.tests)
        self.tests = {name: _counted(t) for name, t in tests.items()}

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        """Also refuses the padding and translating methods of str, bytes and int."""
        blocked = _BLOCKED_METHODS.get(type(obj))
        if blocked is None:
            for kind, names in _BLOCKED_METHODS.items():
                if isinstance(obj, kind):
                    blocked = names
                    break
        if blocked and attr in blocked:
            return False
        return super().is_safe_attribute(obj, attr, value)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        """Fail loudly: the stock sandbox's Undefined would render as "" (ChainableUndefined)."""
        raise SecurityError(
            f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe"
        )

    def getattr(self, obj: Any, attribute: str) -> Any:
        """Count the lookup; data first: `params.items` is the parameter, not dict.items."""
        current = budget()
        current.tick()
        if isinstance(obj, dict) and attribute in obj:
            return obj[attribute]
        return _shallow(current, super().getattr(obj, attribute))

    def getitem(self, obj: Any, argument: Any) -> Any:
        """Count the lookup."""
        current = budget()
        current.tick()
        return _shallow(current, super().getitem(obj, argument))

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        """Count the call, check the arguments of the calls that can blow up, weigh the result."""
        current = budget()
        current.tick()
        owner = getattr(obj, "__self__", None)
        if isinstance(owner, str | bytes) and args:
            name = getattr(obj, "__name__", "")
            if name == "join":
                if not isinstance(args[0], list | tuple):
                    args = (list(args[0]), *args[1:])
                _check_join(current, owner, args[0])
            elif name == "replace" and len(args) >= 2:
                _check_replace(current, owner, args[0], args[1])
        elif isinstance(obj, LoopContext) and args:
            # `loop(children)` in a recursive loop iterates outside the compiled `for`.
            args = (_Counted(args[0]), *args[1:])
        return current.check(super().call(context, obj, *args, **kwargs), "a call's result")

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        """`*`, `+`, `%` and `**`, checked before they run."""
        current = budget()
        current.tick()
        if operator == "*":
            _check_repetition(current, left, right)
        elif operator == "**":
            if _is_int(left) and _is_int(right) and abs(left) > 1 and right > 0:
                bits = right * math.log2(abs(left))
                if bits > current.limits.max_int_bits:
                    cap = current.limits.max_int_bits
                    raise CapExceeded(f"a power of about {int(bits)} bits (cap {cap})")
        elif operator == "%" and isinstance(left, str | bytes):
            _check_percent_format(current, left, right)
        elif operator == "+" and isinstance(left, _SEQUENCES) and isinstance(right, _SEQUENCES):
            current.check_estimate(current.weigh(left) + current.weigh(right), "concatenation")
        result = super().call_binop(context, operator, left, right)
        return current.check(result, f"the result of {operator!r}")

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """`str.format` and `format_map`, with widths and output size checked first."""
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt: str = value.__self__
        is_map = value.__name__ == "format_map"

        def checked(*args: Any, **kwargs: Any) -> str:
            current = budget()
            if is_map and args:
                _check_brace_format(current, fmt, (), args[0])
            else:
                _check_brace_format(current, fmt, args, kwargs)
            result: str = current.check(wrapped(*args, **kwargs), "format")
            return result

        return checked

    def loop_items(self, iterable: Any) -> _Counted:
        """What a compiled `{% for %}` iterates over: `iterable`, one step per item."""
        return _Counted(iterable)

    def join_values(self, join: Callable[[Iterable[Any]], str], parts: tuple[Any, ...]) -> str:
        """`a ~ b ~ c`, checked before the text is made."""
        current = budget()
        current.tick()
        current.check_estimate(sum(current.weigh(p) for p in parts), "concatenation with ~")
        return _shallow(current, join(parts))

    def new_value(self, value: Any) -> Any:
        """A list, tuple or dict literal, weighed."""
        current = budget()
        current.tick()
        return current.check(value, "a literal")

    def concat(self, parts: Iterable[str]) -> str:  # type: ignore[override]
        """Join a block's buffered output (macros, `{% set %}` blocks, `caller()`)."""
        chunks = parts if isinstance(parts, list) else list(parts)
        budget().check_estimate(sum(len(c) for c in chunks), "a block's output")
        return "".join(chunks)

    def _finalize(self, value: Any) -> Any:
        # Every `{{ }}` value passes here before Jinja turns it into text.
        current = budget()
        current.tick()
        if isinstance(value, Undefined):
            return value  # "" for ChainableUndefined
        if isinstance(value, str):
            current.produce(len(value))
            return value
        current.check(value, "an output value")
        if hasattr(value, "__html__"):
            return value
        text = str(value)
        current.produce(len(text))
        return text


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_repetition(current: Budget, left: Any, right: Any) -> None:
    if _is_int(left) and _is_int(right):
        bits = left.bit_length() + right.bit_length()
        if bits > current.limits.max_int_bits:
            cap = current.limits.max_int_bits
            raise CapExceeded(f"a product of about {bits} bits (cap {cap})")
        return
    for seq, times in ((left, right), (right, left)):
        if isinstance(seq, _SEQUENCES) and isinstance(times, int):
            current.check_estimate(current.weigh(seq) * times, "repetition")


def _shallow(current: Budget, value: Any) -> Any:
    """`value`, unless it is a string or container longer than the value cap."""
    if isinstance(value, str | bytes | list | tuple | dict | set | frozenset):
        cap = current.limits.max_value_size
        if len(value) > cap:
            raise CapExceeded(f"a value of {len(value)} characters or items (cap {cap})")
    return value


def _counted(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A filter or test that counts as a step and whose result is weighed."""

    @functools.wraps(fn)  # keeps jinja_pass_arg, so context-taking filters still get it
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        current = budget()
        current.tick()
        return current.check(fn(*args, **kwargs), "a filter's result")

    return wrapper


def _checked_center(value: Any, width: int = 80) -> Any:
    budget().check_width(width, "center")
    return FILTERS["center"](value, width)


def _checked_indent(value: Any, width: int | str = 4, *args: Any, **kwargs: Any) -> Any:
    current = budget()
    current.check_width(width, "indent")
    pad = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    text = str(value)
    current.check_estimate(len(text) + pad * (text.count("\n") + 1), "indent")
    return FILTERS["indent"](value, width, *args, **kwargs)


def _checked_format(value: Any, *args: Any, **kwargs: Any) -> Any:
    _check_percent_format(budget(), str(value), [args, kwargs])
    return FILTERS["format"](value, *args, **kwargs)


def _checked_batch(value: Any, linecount: int, fill_with: Any = None) -> Any:
    budget().check_width(linecount, "batch")
    return list(FILTERS["batch"](value, linecount, fill_with))


@functools.wraps(FILTERS["slice"])
def _checked_slice(eval_ctx: Any, value: Any, slices: int, fill_with: Any = None) -> Any:
    budget().check_width(slices, "slice")
    return list(FILTERS["slice"](eval_ctx, value, slices, fill_with))


@functools.wraps(FILTERS["replace"])
def _checked_replace(eval_ctx: Any, s: Any, old: Any, new: Any, count: int | None = None) -> Any:
    _check_replace(budget(), str(s), str(old), str(new))
    return FILTERS["replace"](eval_ctx, s, old, new, count)


@functools.wraps(FILTERS["join"])
def _checked_join(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> Any:
    if attribute is None:
        value = list(value) if not isinstance(value, list | tuple) else value
        _check_join(budget(), d, value)
    return FILTERS["join"](eval_ctx, value, d, attribute)


@functools.wraps(FILTERS["sum"])
def _checked_sum(environment: Any, iterable: Any, attribute: Any = None, start: Any = 0) -> Any:
    if not isinstance(start, int | float):
        raise CapExceeded("sum adds numbers only (use join for text)")
    return FILTERS["sum"](environment, iterable, attribute, start)


@functools.wraps(FILTERS["tojson"])
def _checked_tojson(eval_ctx: Any, value: Any, indent: int | None = None) -> Any:
    current = budget()
    if indent:
        current.check_width(indent, "tojson indent")
        current.check_estimate(current.weigh(value) * (1 + indent), "tojson")
    return FILTERS["tojson"](eval_ctx, value, indent)


def _check_slow_input(current: Budget, name: str, weight: int) -> None:
    cap = current.limits.max_slow_filter_input
    if weight > cap:
        raise CapExceeded(f"{name} takes at most {cap} characters or items")


def _checked_pprint(value: Any) -> Any:
    current = budget()
    _check_slow_input(current, "pprint", current.weigh(value))
    return FILTERS["pprint"](value)


def _wordwise(name: str) -> Callable[..., Any]:
    original = FILTERS[name]

    @functools.wraps(original)
    def checked(ctx: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
        current = budget()
        _check_slow_input(current, name, len(str(value)))
        if name == "wordwrap":
            width = args[0] if args else kwargs.get("width", 79)
            wrap = args[2] if len(args) > 2 else kwargs.get("wrapstring")
            lines = len(str(value)) // max(1, width if isinstance(width, int) else 1) + 1
            current.check_estimate(len(str(value)) + lines * len(wrap or "\n"), "wordwrap")
        return original(ctx, value, *args, **kwargs)

    return checked


_CHECKED_FILTERS: dict[str, Callable[..., Any]] = {
    "center": _checked_center,
    "indent": _checked_indent,
    "format": _checked_format,
    "batch": _checked_batch,
    "slice": _checked_slice,
    "replace": _checked_replace,
    "join": _checked_join,
    "sum": _checked_sum,
    "tojson": _checked_tojson,
    "wordwrap": _wordwise("wordwrap"),
    "urlize": _wordwise("urlize"),
    "pprint": _checked_pprint,
}

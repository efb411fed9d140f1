"""A small, safe evaluator for the ``value_template`` forms devices really publish.

Home Assistant discovery configs carry Jinja templates. Executing them would mean
running arbitrary code from any MQTT client that can publish a retained message, so
tidegate never does: it parses one expression of a small Jinja subset into a tree and
evaluates that tree itself. Everything else is refused when the config arrives
(:class:`~gateway.errors.DiscoveryError`, reported once per entity), never executed.

Supported — the forms Zigbee2MQTT, Tasmota, ESPHome and the Shelly discovery scripts
publish::

    {{ value }}                            the payload text
    {{ value_json.temperature }}           the payload parsed as JSON, then paths:
    {{ value_json['ENERGY']['Power'][0] }}     .name, ['name'], ["name"], [index]
    {{ value | float }}  {{ value | float(0) }}   {{ value_json.x | int }}  {{ … | int(0) }}
    {{ value | float | round(1) }}  {{ … | round(2, 'floor') }}  {{ … | abs }}
    {{ value_json.x | default(0) }}  {{ … | d(0) }}  {{ value_json.x | multiply(0.001) }}
    {{ (value | float / 60 / 1000) | round(2) }}   + - * / // % and parentheses on numbers
    literals: numbers, 'strings', true/false/none

Semantics follow Home Assistant's template environment where it matters: ``float``/``int``
/``round`` convert strings and fail without a default (``| float(0)`` gives 0), ``round``
with precision 0 gives an integer, filters bind tighter than arithmetic
(``value | float * 100 | round`` rounds the 100). A missing key is *undefined*: further
paths stay undefined, ``default`` replaces it, and a result that is undefined means "no
value in this message" (skipped, like ``null``).

Bounds: templates up to :data:`MAX_TEMPLATE_CHARS` characters and :data:`MAX_DEPTH`
levels of nesting; arithmetic only on numbers (no string repetition or concatenation,
no ``**``), round precision within ±15. Evaluation is a walk of a tree of at most a few
hundred nodes: its time and memory are bounded by the template, not by the payload.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from gateway.errors import DiscoveryError, TemplateError

MAX_TEMPLATE_CHARS: Final = 1000
MAX_DEPTH: Final = 24
MAX_PRECISION: Final = 15


class _Undefined:
    """Jinja's undefined: a missing key. Falsy, renders as ``""``."""

    _instance: _Undefined | None = None

    def __new__(cls) -> _Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "Undefined"


UNDEFINED: Final = _Undefined()
"""The value of a path that is not in the payload (and of ``value_json`` when the
payload is not JSON)."""


# --- tokens ----------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<number>(?:\d+\.\d*|\d+)(?:[eE][+-]?\d+)?)
  | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>//|\*\*|[()\[\].,|+\-*/%=])
    """,
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"'}
_CONSTANTS: dict[str, Any] = {
    "true": True,
    "True": True,
    "false": False,
    "False": False,
    "none": None,
    "None": None,
}
_VARIABLES = ("value", "value_json")


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str
    text: str
    pos: int


def _tokens(text: str, offset: int) -> list[_Token]:
    out: list[_Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise DiscoveryError(f"unsupported template syntax at {text[pos : pos + 20]!r}")
        kind = match.lastgroup or ""
        if kind != "ws":
            out.append(_Token(kind, match.group(), offset + pos))
        pos = match.end()
    return out


def _unquote(text: str) -> str:
    body = text[1:-1]
    if "\\" not in body:
        return body
    out: list[str] = []
    index = 0
    while index < len(body):
        char = body[index]
        if char == "\\" and index + 1 < len(body):
            out.append(_ESCAPES.get(body[index + 1], "\\" + body[index + 1]))
            index += 2
        else:
            out.append(char)
            index += 1
    return "".join(out)


# --- the tree --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Const:
    value: Any


@dataclass(frozen=True, slots=True)
class Var:
    name: str


@dataclass(frozen=True, slots=True)
class Item:
    """``node.key`` or ``node[key]``."""

    node: Node
    key: str | int


@dataclass(frozen=True, slots=True)
class Filter:
    node: Node
    name: str
    args: tuple[Node, ...]
    kwargs: tuple[tuple[str, Node], ...]


@dataclass(frozen=True, slots=True)
class BinOp:
    op: str
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class Unary:
    op: str
    node: Node


Node = Const | Var | Item | Filter | BinOp | Unary


# --- filters ---------------------------------------------------------------------------

_NO_DEFAULT: Final = object()


def _to_float(value: Any) -> float:
    """Home Assistant's float conversion: numbers and numeric text; else ValueError."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        return float(value.strip())  # ValueError for non-numbers; "nan"/"inf" pass
    raise ValueError(f"cannot convert {type(value).__name__} to a number")


def _filter_float(value: Any, default: Any = _NO_DEFAULT) -> Any:
    try:
        return _to_float(value)
    except (ValueError, OverflowError):
        if default is _NO_DEFAULT:
            raise TemplateError(f"float got {_shown(value)}, which is not a number") from None
        return default


def _filter_int(value: Any, default: Any = _NO_DEFAULT, base: Any = 10) -> Any:
    try:
        if isinstance(value, str):
            try:
                return int(value.strip(), _int_arg(base, "base"))
            except ValueError:
                return int(float(value))
        return int(_to_float(value))
    except (ValueError, OverflowError):
        if default is _NO_DEFAULT:
            raise TemplateError(f"int got {_shown(value)}, which is not a number") from None
        return default


def _filter_round(
    value: Any, precision: Any = 0, method: Any = "common", default: Any = _NO_DEFAULT
) -> Any:
    digits = _int_arg(precision, "round precision")
    if not -MAX_PRECISION <= digits <= MAX_PRECISION:
        raise TemplateError(f"round precision {digits} is outside ±{MAX_PRECISION}")
    try:
        number = _to_float(value)
        multiplier = 10.0**digits
        if method == "ceil":
            number = math.ceil(number * multiplier) / multiplier
        elif method == "floor":
            number = math.floor(number * multiplier) / multiplier
        elif method == "half":
            number = round(number * 2) / 2
        else:
            number = round(number, digits)
        return int(number) if digits == 0 and math.isfinite(number) else number
    except (ValueError, OverflowError):
        if default is _NO_DEFAULT:
            raise TemplateError(f"round got {_shown(value)}, which is not a number") from None
        return default


def _filter_default(value: Any, default: Any = "", boolean: Any = False) -> Any:
    if value is UNDEFINED or (boolean and not value):
        return default
    return value


def _filter_abs(value: Any) -> Any:
    return abs(_number(value, "abs"))


def _filter_multiply(value: Any, amount: Any, default: Any = _NO_DEFAULT) -> Any:
    try:
        return _to_float(value) * _to_float(amount)
    except (ValueError, OverflowError):
        if default is _NO_DEFAULT:
            raise TemplateError(f"multiply got {_shown(value)}, which is not a number") from None
        return default


FILTERS: dict[str, tuple[Callable[..., Any], tuple[str, ...]]] = {
    "float": (_filter_float, ("default",)),
    "int": (_filter_int, ("default", "base")),
    "round": (_filter_round, ("precision", "method", "default")),
    "default": (_filter_default, ("default_value", "boolean")),
    "d": (_filter_default, ("default_value", "boolean")),
    "abs": (_filter_abs, ()),
    "multiply": (_filter_multiply, ("amount", "default")),
}
"""The supported filters: function and the names of its parameters after the value."""


def _int_arg(value: Any, what: str) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value != int(value)
    ):
        raise TemplateError(f"{what} must be a whole number")
    return int(value)


def _number(value: Any, what: str) -> int | float:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return value
    raise TemplateError(f"{what} needs numbers, got {_shown(value)}")


def _shown(value: Any) -> str:
    if value is UNDEFINED:
        return "nothing (the key is not in the payload)"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# --- parser ----------------------------------------------------------------------------


class _Parser:
    """Recursive descent over one expression, with Jinja's precedence:
    ``+ -`` < ``* / // %`` < unary ``- +`` < filters ``|`` < paths ``.x [x]``."""

    def __init__(self, tokens: list[_Token], source: str) -> None:
        self.tokens = tokens
        self.index = 0
        self.depth = 0
        self.source = source

    def peek(self) -> _Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self, text: str | None = None) -> _Token:
        token = self.peek()
        if token is None:
            raise DiscoveryError("template ends too early")
        if text is not None and token.text != text:
            raise DiscoveryError(f"expected {text!r} at {token.text!r}")
        self.index += 1
        return token

    def at(self, *texts: str) -> bool:
        token = self.peek()
        return token is not None and token.kind == "op" and token.text in texts

    def nested(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise DiscoveryError(f"template nests deeper than {MAX_DEPTH} levels")

    def parse(self) -> Node:
        node = self.additive()
        token = self.peek()
        if token is not None:
            raise DiscoveryError(f"unsupported template syntax at {token.text!r}")
        return node

    def additive(self) -> Node:
        self.nested()
        node = self.multiplicative()
        while self.at("+", "-"):
            op = self.take().text
            node = BinOp(op, node, self.multiplicative())
        self.depth -= 1
        return node

    def multiplicative(self) -> Node:
        node = self.unary(with_filter=True)
        while self.at("*", "/", "//", "%"):
            op = self.take().text
            node = BinOp(op, node, self.unary(with_filter=True))
        if self.at("**"):
            raise DiscoveryError("'**' is not supported")
        return node

    def unary(self, with_filter: bool) -> Node:
        self.nested()
        if self.at("-", "+"):
            op = self.take().text
            node: Node = Unary(op, self.unary(with_filter=False))
        else:
            node = self.postfix(self.primary())
        if with_filter:
            while self.at("|"):
                self.take()
                node = self.filter(node)
        self.depth -= 1
        return node

    def primary(self) -> Node:
        token = self.take()
        if token.kind == "number":
            text = token.text
            if any(c in text for c in ".eE"):
                return Const(float(text))
            if len(text) > 30:
                raise DiscoveryError("number literal too long")
            return Const(int(text))
        if token.kind == "string":
            return Const(_unquote(token.text))
        if token.kind == "name":
            if token.text in _CONSTANTS:
                return Const(_CONSTANTS[token.text])
            if token.text in _VARIABLES:
                return Var(token.text)
            raise DiscoveryError(f"{token.text!r} is not supported (only value and value_json)")
        if token.text == "(":
            node = self.additive()
            self.take(")")
            return node
        raise DiscoveryError(f"unsupported template syntax at {token.text!r}")

    def postfix(self, node: Node) -> Node:
        while self.at(".", "["):
            if not isinstance(node, Var | Item):
                # Paths only ever read the payload: ''.__class__ and friends are refused.
                raise DiscoveryError("paths are only supported on value and value_json")
            if self.take().text == ".":
                name = self.take()
                if name.kind == "number" and name.text.isdigit():
                    node = Item(node, int(name.text))
                elif name.kind != "name":
                    raise DiscoveryError(f"expected a name after '.', got {name.text!r}")
                else:
                    node = Item(node, name.text)
                if self.at("("):
                    raise DiscoveryError(f"calling .{name.text}() is not supported")
            else:
                key = self.take()
                negative = key.text == "-"
                if negative:
                    key = self.take()
                if key.kind == "string" and not negative:
                    node = Item(node, _unquote(key.text))
                elif key.kind == "number" and key.text.isdigit() and len(key.text) < 10:
                    node = Item(node, -int(key.text) if negative else int(key.text))
                else:
                    raise DiscoveryError(f"unsupported subscript {key.text!r}")
                self.take("]")
        return node

    def filter(self, node: Node) -> Node:
        name = self.take()
        if name.kind != "name" or name.text not in FILTERS:
            raise DiscoveryError(
                f"filter {name.text!r} is not supported (supported: {', '.join(sorted(FILTERS))})"
            )
        _fn, params = FILTERS[name.text]
        args: list[Node] = []
        kwargs: list[tuple[str, Node]] = []
        if self.at("("):
            self.take()
            while not self.at(")"):
                token = self.peek()
                following = (
                    self.tokens[self.index + 1] if self.index + 1 < len(self.tokens) else None
                )
                if (
                    token is not None
                    and token.kind == "name"
                    and following is not None
                    and following.text == "="
                ):
                    if token.text not in params:
                        raise DiscoveryError(f"filter {name.text} has no parameter {token.text!r}")
                    self.index += 2
                    kwargs.append((token.text, self.additive()))
                else:
                    if kwargs:
                        raise DiscoveryError("positional argument after a keyword argument")
                    args.append(self.additive())
                if not self.at(")"):
                    self.take(",")
            self.take(")")
        if len(args) + len(kwargs) > len(params):
            raise DiscoveryError(f"filter {name.text} takes at most {len(params)} argument(s)")
        if name.text == "multiply" and not args and not kwargs:
            raise DiscoveryError("filter multiply needs an amount")
        return Filter(node, name.text, tuple(args), tuple(kwargs))


# --- evaluation --------------------------------------------------------------------------


def _item(container: Any, key: str | int) -> Any:
    if container is UNDEFINED:
        return UNDEFINED
    if isinstance(container, dict):
        return container.get(key if isinstance(key, str) else str(key), UNDEFINED)
    if isinstance(container, list) and isinstance(key, int):
        return container[key] if -len(container) <= key < len(container) else UNDEFINED
    return UNDEFINED


def _binop(op: str, left: Any, right: Any) -> Any:
    a = _number(left, f"'{op}'")
    b = _number(right, f"'{op}'")
    try:
        if op == "+":
            result: int | float = a + b
        elif op == "-":
            result = a - b
        elif op == "*":
            result = a * b
        elif op == "/":
            result = a / b
        elif op == "//":
            result = a // b
        else:
            result = a % b
    except ZeroDivisionError:
        raise TemplateError(f"division by zero in '{op}'") from None
    except OverflowError:
        raise TemplateError(f"number too large in '{op}'") from None
    if isinstance(result, int) and result.bit_length() > 1024:
        raise TemplateError(f"number too large in '{op}'")
    return result


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed value_template. :meth:`evaluate` never executes anything."""

    source: str
    tree: Node

    @property
    def uses_json(self) -> bool:
        """Whether the template reads ``value_json`` (the payload must then be JSON)."""
        return _mentions(self.tree, "value_json")

    def evaluate(self, value: str, value_json: Any = UNDEFINED) -> Any:
        """The template's result for one payload: a number, text, bool, None or
        :data:`UNDEFINED`. Raises :class:`TemplateError` when it fails on this payload."""
        return self._eval(self.tree, value, value_json)

    def _eval(self, node: Node, value: str, value_json: Any) -> Any:
        if isinstance(node, Const):
            return node.value
        if isinstance(node, Var):
            return value if node.name == "value" else value_json
        if isinstance(node, Item):
            return _item(self._eval(node.node, value, value_json), node.key)
        if isinstance(node, Filter):
            subject = self._eval(node.node, value, value_json)
            fn, _params = FILTERS[node.name]
            args = [self._eval(a, value, value_json) for a in node.args]
            kwargs = {k: self._eval(v, value, value_json) for k, v in node.kwargs}
            if node.name in ("default", "d") and "default_value" in kwargs:
                kwargs["default"] = kwargs.pop("default_value")
            return fn(subject, *args, **kwargs)
        if isinstance(node, BinOp):
            left = self._eval(node.left, value, value_json)
            right = self._eval(node.right, value, value_json)
            return _binop(node.op, left, right)
        operand = _number(self._eval(node.node, value, value_json), f"unary '{node.op}'")
        return -operand if node.op == "-" else +operand


def _mentions(node: Node, name: str) -> bool:
    if isinstance(node, Var):
        return node.name == name
    if isinstance(node, Item | Unary):
        return _mentions(node.node, name)
    if isinstance(node, BinOp):
        return _mentions(node.left, name) or _mentions(node.right, name)
    if isinstance(node, Filter):
        children: Sequence[Node] = (node.node, *node.args, *(v for _k, v in node.kwargs))
        return any(_mentions(child, name) for child in children)
    return False


_BLOCK = re.compile(r"\A\s*\{\{-?(.*?)-?\}\}\s*\Z", re.DOTALL)


def compile_template(text: str) -> Template:
    """Parse ``text`` (one ``{{ … }}`` expression, whitespace around it allowed).

    Raises :class:`~gateway.errors.DiscoveryError` naming what is not supported:
    statements (``{% … %}``), text around the expression, unknown names or filters,
    method calls, ``**``, deep nesting, a template over :data:`MAX_TEMPLATE_CHARS`.
    """
    if len(text) > MAX_TEMPLATE_CHARS:
        raise DiscoveryError(f"template longer than {MAX_TEMPLATE_CHARS} characters")
    if "{%" in text or "{#" in text:
        raise DiscoveryError("template statements ({% … %}) are not supported")
    match = _BLOCK.match(text)
    if match is None:
        if "{{" not in text:
            raise DiscoveryError("template has no {{ … }} expression")
        raise DiscoveryError("only a single {{ … }} expression is supported")
    body = match.group(1)
    if "{{" in body or "}}" in body:
        raise DiscoveryError("only a single {{ … }} expression is supported")
    tokens = _tokens(body, match.start(1))
    if not tokens:
        raise DiscoveryError("template expression is empty")
    return Template(text, _Parser(tokens, text).parse())


def render(result: Any) -> str:
    """A result as Jinja renders it to text (``True``, ``None``, ``21.5``; undefined is
    ``""``), for comparing with a binary sensor's ``payload_on``/``payload_off``."""
    if result is UNDEFINED:
        return ""
    return str(result)

"""Evaluate and validate RAM policy documents (Alibaba Cloud RAM / AWS IAM style).

This module is pure Python (no Django) so that it can be tested and benchmarked on its own.

Contract
--------
* A policy document is ``{"Version": "1", "Statement": [statement, ...]}``; each statement has
  ``Effect`` ("Allow" or "Deny"), exactly one of ``Action``/``NotAction``, exactly one of
  ``Resource``/``NotResource``, and optionally ``Sid`` and ``Condition``. Lists may be JSON arrays
  (Python lists or tuples); objects may be any ``Mapping``.
* ``validate_policy_document`` is the gate for storing a document: it raises
  ``PolicyValidationError`` whose ``errors`` lists every problem found, each prefixed by its path
  (statement indices are 0-based, e.g. ``Statement[1].Condition.StringEqualz: unknown operator``).
  It also checks condition keys against a vocabulary (``DEFAULT_CONDITION_KEYS`` unless given) and
  the size limit: the compact JSON text (``separators=(",", ":")``, non-ASCII not escaped) may hold
  at most ``MAX_POLICY_DOCUMENT_CHARS`` characters.
* ``compile_policy`` precompiles a document. It re-checks the structure (raising
  ``PolicyValidationError``) but neither the key vocabulary nor the size limit, which are storage
  rules: a document accepted once keeps evaluating if the app later changes them.
* ``evaluate`` takes ``Policy`` or ``CompiledPolicy`` objects. Compilation of a ``Policy`` is
  cached by the document's JSON text, so policies re-read from the database on every
  request are compiled once. It may raise ``PolicyValidationError`` for a malformed document but
  never raises because of the request: odd context values simply fail to match, and a request
  whose action or resource is not a string is denied without looking at any statement.
* Compiled policies are immutable and the caches are ``functools.lru_cache``-based, so one module
  state can serve every thread. To skip even the cache lookup (about one ``json.dumps`` of the
  document per policy and decision), keep ``CompiledPolicy`` objects and pass those.

Matching
--------
* ``*`` matches any run of characters (including none, ``:`` and ``/``) and ``?`` exactly one, in
  actions, resources and ``StringLike``/``StringNotLike`` values. Actions are compared after
  ``str.lower()`` on both sides; resources and ``StringLike`` are case-sensitive. A ``*`` in a
  request is an ordinary character.
* ``NotAction``/``NotResource``: the statement applies when nothing listed matches.
* Condition keys are case-insensitive. Values listed for one key are ORed; keys and operators are
  ANDed. A request value may be a list/tuple/set (multi-valued): a positive operator holds when
  any request value matches any policy value. A negated operator (``StringNotEquals``,
  ``StringNotEqualsIgnoreCase``, ``StringNotLike``, ``NumericNotEquals``, ``DateNotEquals``,
  ``NotIpAddress``) holds when no request value matches any policy value, so a missing key makes
  it true while it makes a positive operator false.
* A request value of the wrong type (a non-numeric string for ``Numeric*``, an unparsable date, a
  bad IP, a float, None, ...) matches no policy value. For a positive operator the test is then
  false; for a negated operator it counts like a missing value (the "matches none" test holds).
* Value kinds. String operators: str, or an int/bool in its text form (``7`` -> ``"7"``, ``True``
  -> ``"true"``). Numeric: int, numeric string, and in requests also a finite ``Decimal``; compared
  as ``Decimal``, floats are refused. Date: ISO 8601 string (``Z`` or an offset; naive means UTC),
  Unix seconds as an int, and in requests also a ``datetime`` (naive means UTC). Bool: true/false
  or the strings "true"/"false" in any case. IpAddress: IPv4/IPv6 address or CIDR strings
  (host bits in a CIDR are ignored); an IPv4-mapped IPv6 address is compared as IPv4.

Decision
--------
Any applying Deny statement gives ``ExplicitDeny``; otherwise any applying Allow gives ``Allow``;
otherwise ``ImplicitDeny`` (also for an empty policy set). ``Decision.matched`` lists the
statements that decided (every applying Deny, or every applying Allow, none for ImplicitDeny),
sorted by policy name and statement index so that the decision does not depend on the order in
which policies are passed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
)
from typing import Any, Final

__all__ = [
    "DECISION_ALLOW",
    "DECISION_EXPLICIT_DENY",
    "DECISION_IMPLICIT_DENY",
    "DEFAULT_CONDITION_KEYS",
    "MAX_POLICY_DOCUMENT_CHARS",
    "AccessRequest",
    "CompiledPolicy",
    "Decision",
    "MatchedStatement",
    "Policy",
    "PolicyValidationError",
    "compile_policy",
    "decision_varies_within",
    "evaluate",
    "validate_policy_document",
]

DECISION_ALLOW: Final = "Allow"
DECISION_IMPLICIT_DENY: Final = "ImplicitDeny"
DECISION_EXPLICIT_DENY: Final = "ExplicitDeny"

DEFAULT_CONDITION_KEYS: Final[frozenset[str]] = frozenset(
    {"acs:SourceIp", "acs:CurrentTime", "acs:SecureTransport", "acs:MFAPresent", "usage:DepartmentId"}
)
MAX_POLICY_DOCUMENT_CHARS: Final = 6144

_EFFECT_ALLOW: Final = "Allow"
_EFFECT_DENY: Final = "Deny"
_TOP_LEVEL_KEYS: Final = frozenset({"Version", "Statement"})
_STATEMENT_KEYS: Final = frozenset({"Sid", "Effect", "Action", "NotAction", "Resource", "NotResource", "Condition"})


class PolicyValidationError(ValueError):
    """A policy document is malformed; ``errors`` holds one "path: problem" message per problem."""

    def __init__(self, errors: Iterable[str]) -> None:
        self.errors: list[str] = list(errors)
        super().__init__("invalid policy document: " + "; ".join(self.errors))


@dataclass(frozen=True, slots=True)
class AccessRequest:
    action: str
    resource: str
    context: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Policy:
    """A named policy document (the name is what ``MatchedStatement.policy`` reports)."""

    name: str
    document: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class MatchedStatement:
    policy: str
    index: int
    sid: str | None
    effect: str


@dataclass(frozen=True, slots=True)
class Decision:
    effect: str
    matched: tuple[MatchedStatement, ...]

    @property
    def allowed(self) -> bool:
        return self.effect == DECISION_ALLOW


# --------------------------------------------------------------------------------------------
# Value kinds. Policy values and request values are normalised to the same representation so
# that a comparison is a plain ==, < or set lookup, and anything unparsable becomes None.

_TEXT: Final = "text"
_FOLDED: Final = "folded"
_NUMBER: Final = "number"
_INSTANT: Final = "instant"
_BOOL: Final = "bool"
_IP: Final = "ip"

_NUMBER_RE: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MICROSECOND: Final = timedelta(microseconds=1)
_MICROS_PER_SECOND: Final = 1_000_000
_IPV4_MAPPED_PREFIX: Final = 96

_Address = IPv4Address | IPv6Address
_Network = IPv4Network | IPv6Network


def _text(value: object) -> str | None:
    if isinstance(value, str):
        # str.__str__ drops any subclass behaviour (e.g. a custom __eq__) from the value.
        return str.__str__(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        try:
            return int.__repr__(value)
        except ValueError:  # beyond sys.get_int_max_str_digits()
            return None
    return None


def _folded(value: object) -> str | None:
    text = _text(value)
    return None if text is None else text.casefold()


def _number(value: object) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(int(value))
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    if isinstance(value, str) and _NUMBER_RE.match(value):
        try:
            return Decimal(value)
        except (InvalidOperation, ValueError):  # exponent beyond what Decimal can represent
            return None
    return None


def _instant(value: object) -> int | None:
    """Microseconds since the Unix epoch: an int keeps comparisons exact and overflow-free."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return int(value) * _MICROS_PER_SECOND
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
    else:
        return None
    try:
        if moment.utcoffset() is None:
            moment = moment.replace(tzinfo=UTC)
        return (moment - _EPOCH) // _ONE_MICROSECOND
    except (ValueError, TypeError, OverflowError):  # a datetime subclass or tzinfo misbehaving
        return None


def _boolean(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.lower()
        if lowered == "true":
            return True
        if lowered == "false":
            return False
    return None


def _address(value: object) -> _Address | None:
    address: _Address
    if isinstance(value, IPv4Address | IPv6Address):
        address = value
    elif isinstance(value, str):
        try:
            address = ip_address(value)
        except ValueError:
            return None
    else:
        return None
    # A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d; policies are written in IPv4.
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _network(value: object) -> _Network | None:
    if not isinstance(value, str):
        return None
    try:
        network = ip_network(value, strict=False)
    except ValueError:
        return None
    mapped = network.network_address.ipv4_mapped if isinstance(network, IPv6Network) else None
    if mapped is not None and network.prefixlen >= _IPV4_MAPPED_PREFIX:
        return IPv4Network((mapped, network.prefixlen - _IPV4_MAPPED_PREFIX))
    return network


_REQUEST_PARSERS: Final[Mapping[str, Callable[[object], Any]]] = {
    _TEXT: _text,
    _FOLDED: _folded,
    _NUMBER: _number,
    _INSTANT: _instant,
    _BOOL: _boolean,
    _IP: _address,
}
_POLICY_PARSERS: Final[Mapping[str, Callable[[object], Any]]] = {**_REQUEST_PARSERS, _IP: _network}
_KIND_PROBLEMS: Final[Mapping[str, str]] = {
    _TEXT: "integer has too many digits to be used as text",
    _FOLDED: "integer has too many digits to be used as text",
    _NUMBER: "not a number",
    _INSTANT: "not an ISO 8601 date-time or integer Unix timestamp",
    _BOOL: "not a boolean (true or false)",
    _IP: "not an IP address or CIDR block",
}


@dataclass(frozen=True, slots=True)
class _Operator:
    kind: str
    test: str  # "eq", "like", "lt", "le", "gt", "ge" or "in"
    negated: bool


_OPERATORS: Final[Mapping[str, _Operator]] = {
    "StringEquals": _Operator(_TEXT, "eq", False),
    "StringNotEquals": _Operator(_TEXT, "eq", True),
    "StringEqualsIgnoreCase": _Operator(_FOLDED, "eq", False),
    "StringNotEqualsIgnoreCase": _Operator(_FOLDED, "eq", True),
    "StringLike": _Operator(_TEXT, "like", False),
    "StringNotLike": _Operator(_TEXT, "like", True),
    "NumericEquals": _Operator(_NUMBER, "eq", False),
    "NumericNotEquals": _Operator(_NUMBER, "eq", True),
    "NumericLessThan": _Operator(_NUMBER, "lt", False),
    "NumericLessThanEquals": _Operator(_NUMBER, "le", False),
    "NumericGreaterThan": _Operator(_NUMBER, "gt", False),
    "NumericGreaterThanEquals": _Operator(_NUMBER, "ge", False),
    "DateEquals": _Operator(_INSTANT, "eq", False),
    "DateNotEquals": _Operator(_INSTANT, "eq", True),
    "DateLessThan": _Operator(_INSTANT, "lt", False),
    "DateLessThanEquals": _Operator(_INSTANT, "le", False),
    "DateGreaterThan": _Operator(_INSTANT, "gt", False),
    "DateGreaterThanEquals": _Operator(_INSTANT, "ge", False),
    "Bool": _Operator(_BOOL, "eq", False),
    "IpAddress": _Operator(_IP, "in", False),
    "NotIpAddress": _Operator(_IP, "in", True),
}


# --------------------------------------------------------------------------------------------
# Wildcard patterns


def _glob_source(pattern: str) -> str:
    def literal(segment: str) -> str:
        return re.escape(segment).replace(r"\?", ".")

    head, *rest = pattern.split("*")
    if not rest:
        return literal(head) + r"\Z"
    *middle, tail = rest
    # Committing to the leftmost occurrence of each fixed-length middle segment (atomic group) is
    # always safe and keeps matching linear instead of backtracking exponentially on many stars.
    inner = "".join(f"(?>.*?{literal(segment)})" for segment in middle if segment)
    return f"{literal(head)}{inner}.*{literal(tail)}\\Z"


# A pattern test returns something truthy when the text matches. Tests are C-level callables
# where possible (str.__eq__, frozenset.__contains__, Pattern.match): evaluate() calls one per
# statement for the action and one for the resource, so this is the hot path.
_PatternTest = Callable[[str], object]


@lru_cache(maxsize=4096)
def _pattern_test(patterns: tuple[str, ...]) -> _PatternTest | None:
    """The test for "matches any of ``patterns``", or None when one of them matches everything."""
    if any(p and not p.strip("*") for p in patterns):
        return None
    unique = sorted(set(patterns))
    if not any("*" in p or "?" in p for p in unique):
        return unique[0].__eq__ if len(unique) == 1 else frozenset(unique).__contains__
    return re.compile("|".join(f"(?:{_glob_source(p)})" for p in unique), re.DOTALL).match


def _never(_text: str) -> bool:
    return False


def _negated_test(test: _PatternTest | None) -> _PatternTest:
    if test is None:  # NotAction/NotResource listing "*" excludes everything
        return _never
    return lambda text: not test(text)


# --------------------------------------------------------------------------------------------
# Compiled form


class _Context:
    """Per-request view of the context: case-insensitive keys, values converted once per kind."""

    __slots__ = ("_by_key", "_converted", "_raw")

    def __init__(self, raw: object) -> None:
        self._raw = raw
        self._by_key: dict[str, tuple[object, ...]] | None = None
        self._converted: dict[tuple[str, str], tuple[Any, ...]] = {}

    def values(self, key: str, kind: str) -> tuple[Any, ...]:
        cache_key = (key, kind)
        converted = self._converted.get(cache_key)
        if converted is None:
            if self._by_key is None:
                self._by_key = self._index(self._raw)
            parse = _REQUEST_PARSERS[kind]
            parsed = (parse(value) for value in self._by_key.get(key, ()))
            converted = tuple(value for value in parsed if value is not None)
            self._converted[cache_key] = converted
        return converted

    @staticmethod
    def _index(raw: object) -> dict[str, tuple[object, ...]]:
        by_key: dict[str, tuple[object, ...]] = {}
        if not isinstance(raw, Mapping):
            return by_key
        for key, value in raw.items():
            if not isinstance(key, str):
                continue
            values = tuple(value) if isinstance(value, list | tuple | set | frozenset) else (value,)
            lowered = key.lower()
            # Keys differing only in case are one key; keep every value rather than pick one.
            by_key[lowered] = by_key.get(lowered, ()) + values
        return by_key


@dataclass(frozen=True, slots=True)
class _Condition:
    key: str
    kind: str
    negated: bool
    # True when some request value matches some policy value; evaluate() compares it with
    # ``negated``. Unparsable request values were dropped, so a missing key and a key with only
    # bad values both reach the test with no values: positive tests fail, negated tests hold.
    test: Callable[[tuple[Any, ...]], bool]


def _build_test(operator: _Operator, raw_values: tuple[object, ...]) -> Callable[[tuple[Any, ...]], bool]:
    if operator.test == "like":
        like = _pattern_test(tuple(_text(value) or "" for value in raw_values))
        if like is None:
            return bool
        return lambda values: any(like(value) for value in values)
    parse = _POLICY_PARSERS[operator.kind]
    parsed = [parse(value) for value in raw_values]
    if operator.test == "eq":
        wanted = frozenset(parsed)
        return lambda values: not wanted.isdisjoint(values)
    if operator.test == "in":
        v4 = tuple(n for n in parsed if isinstance(n, IPv4Network))
        v6 = tuple(n for n in parsed if isinstance(n, IPv6Network))
        return lambda values: any(
            any(value in network for network in (v4 if isinstance(value, IPv4Address) else v6)) for value in values
        )
    # "some request value < some policy value" is "some request value < the largest one", etc.
    if operator.test == "lt":
        upper = max(parsed)
        return lambda values: any(value < upper for value in values)
    if operator.test == "le":
        upper = max(parsed)
        return lambda values: any(value <= upper for value in values)
    lower = min(parsed)
    if operator.test == "gt":
        return lambda values: any(value > lower for value in values)
    return lambda values: any(value >= lower for value in values)


@dataclass(frozen=True, slots=True)
class _Statement:
    index: int
    sid: str | None
    effect: str
    action_test: _PatternTest | None  # None: applies to every action
    resource_test: _PatternTest | None  # None: applies to every resource
    conditions: tuple[_Condition, ...]
    resource_patterns: tuple[str, ...] = ()  # as written (Resource or NotResource), for analysis


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    """A policy ready for ``evaluate``; build it with ``compile_policy`` (fields are internal)."""

    name: str
    denies: tuple[_Statement, ...]
    allows: tuple[_Statement, ...]


def _as_list(value: object) -> tuple[Any, ...]:
    return tuple(value) if isinstance(value, list | tuple) else (value,)


def _compile_statement(index: int, statement: Mapping[str, Any]) -> _Statement:
    action_key = "Action" if "Action" in statement else "NotAction"
    resource_key = "Resource" if "Resource" in statement else "NotResource"
    conditions = []
    for operator_name, block in statement.get("Condition", {}).items():
        operator = _OPERATORS[operator_name]
        for key, values in block.items():
            test = _build_test(operator, _as_list(values))
            conditions.append(_Condition(key.lower(), operator.kind, operator.negated, test))
    action_test = _pattern_test(tuple(p.lower() for p in _as_list(statement[action_key])))
    resource_patterns = tuple(str.__str__(p) for p in _as_list(statement[resource_key]))
    resource_test = _pattern_test(resource_patterns)
    sid = statement.get("Sid")
    return _Statement(
        index=index,
        sid=None if sid is None else str.__str__(sid),
        effect=statement["Effect"],
        action_test=_negated_test(action_test) if action_key == "NotAction" else action_test,
        resource_test=_negated_test(resource_test) if resource_key == "NotResource" else resource_test,
        conditions=tuple(conditions),
        resource_patterns=resource_patterns,
    )


def _compile_document(document: Any) -> tuple[tuple[_Statement, ...], tuple[_Statement, ...]]:
    errors = _collect_errors(document, known_keys=None, check_size=False)
    if errors:
        raise PolicyValidationError(errors)
    statements = [_compile_statement(i, s) for i, s in enumerate(document["Statement"])]
    return (
        tuple(s for s in statements if s.effect == _EFFECT_DENY),
        tuple(s for s in statements if s.effect == _EFFECT_ALLOW),
    )


class _DocumentKey:
    """Cache key: equal when the JSON text is; carries the document only until compiled."""

    __slots__ = ("_hash", "document", "text")

    def __init__(self, text: str, document: Any) -> None:
        self.text = text
        self.document = document
        self._hash = hash(text)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _DocumentKey) and other.text == self.text


@lru_cache(maxsize=1024)
def _compile_cached(key: _DocumentKey) -> tuple[tuple[_Statement, ...], tuple[_Statement, ...]]:
    return _compile_document(key.document)


def _json_default(value: object) -> object:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _cache_text(document: Any) -> str | None:
    # Not sort_keys: it costs a third more per call, and the same policy read twice from the
    # database comes back in the same key order. Another order is merely another cache entry.
    try:
        return json.dumps(document, separators=(",", ":"), ensure_ascii=False, default=_json_default)
    except (TypeError, ValueError, RecursionError):
        return None


def compile_policy(policy: Policy | CompiledPolicy) -> CompiledPolicy:
    """Precompile ``policy``; raises ``PolicyValidationError`` if its structure is malformed."""
    if isinstance(policy, CompiledPolicy):
        return policy
    text = _cache_text(policy.document)
    if text is None:
        denies, allows = _compile_document(policy.document)
    else:
        key = _DocumentKey(text, policy.document)
        try:
            denies, allows = _compile_cached(key)
        finally:
            # The cache keeps the first key it saw; it must not keep the caller's document alive.
            key.document = None
    return CompiledPolicy(name=policy.name, denies=denies, allows=allows)


def _match_order(matched: MatchedStatement) -> tuple[str, int, bool, str]:
    return (matched.policy, matched.index, matched.sid is not None, matched.sid or "")


_IMPLICIT_DENY: Final = Decision(DECISION_IMPLICIT_DENY, ())


def evaluate(policies: Iterable[Policy | CompiledPolicy], request: AccessRequest) -> Decision:
    """Decide ``request`` against every statement of ``policies`` (see the module docstring)."""
    compiled = [compile_policy(policy) for policy in policies]
    action, resource = request.action, request.resource
    if not isinstance(action, str) or not isinstance(resource, str):
        return _IMPLICIT_DENY
    action = action.lower()
    context = _Context(request.context)
    denies = _applying(compiled, True, action, resource, context)
    if denies:
        return Decision(DECISION_EXPLICIT_DENY, tuple(sorted(denies, key=_match_order)))
    allows = _applying(compiled, False, action, resource, context)
    if allows:
        return Decision(DECISION_ALLOW, tuple(sorted(allows, key=_match_order)))
    return _IMPLICIT_DENY


def _applying(
    compiled: list[CompiledPolicy], deny: bool, action: str, resource: str, context: _Context
) -> list[MatchedStatement]:
    # Written as plain loops with the tests inlined: a method call per statement would double
    # the cost of a decision.
    matched: list[MatchedStatement] = []
    for policy in compiled:
        for statement in policy.denies if deny else policy.allows:
            test = statement.action_test
            if test is not None and not test(action):
                continue
            test = statement.resource_test
            if test is not None and not test(resource):
                continue
            for condition in statement.conditions:
                if condition.test(context.values(condition.key, condition.kind)) is condition.negated:
                    break
            else:
                matched.append(MatchedStatement(policy.name, statement.index, statement.sid, statement.effect))
    return matched


def _uniform_after(pattern: str, prefix: str) -> bool:
    """Whether ``pattern`` matches every ``prefix + id`` or none, for ids without ``:`` or ``/``
    (resource ids are numbers or names, never paths).

    Runs the glob as a set of positions in the pattern over the prefix. A position whose rest has
    a literal ``:`` or ``/`` can match no id; a position from which only stars remain matches
    every id. Anything else (``apikey/4*``, ``apikey/17``) depends on the id."""

    def closure(states: set[int]) -> set[int]:
        stack, seen = list(states), set(states)
        while stack:
            position = stack.pop()
            if position < len(pattern) and pattern[position] == "*" and position + 1 not in seen:
                seen.add(position + 1)
                stack.append(position + 1)
        return seen

    states = closure({0})
    for char in prefix:
        states = closure({position + (pattern[position] != "*") for position in states
                          if position < len(pattern) and pattern[position] in ("*", "?", char)})
        if not states:
            return True
    rests = [pattern[position:] for position in states if not {":", "/"} & set(pattern[position:])]
    return not rests or any("*" in rest and not rest.strip("*") for rest in rests)


def decision_varies_within(policies: Iterable[Policy | CompiledPolicy], action: str, prefix: str) -> bool:
    """Whether two resources that both start with ``prefix`` could get different decisions for
    ``action`` because some statement names one of them more narrowly than the prefix.

    False means a decision about ``prefix + "*"`` holds for every resource under the prefix, so a
    list can be narrowed per collection (e.g. per department) instead of per row. Conditions are
    not looked at: they do not depend on the resource."""
    action = action.lower()
    for policy in policies:
        compiled = compile_policy(policy)
        for statement in compiled.denies + compiled.allows:
            if statement.action_test is not None and not statement.action_test(action):
                continue
            if not all(_uniform_after(pattern, prefix) for pattern in statement.resource_patterns):
                return True
    return False


# --------------------------------------------------------------------------------------------
# Validation


def _type_name(value: object) -> str:
    return type(value).__name__


def _show(value: object, limit: int = 60) -> str:
    try:
        text = repr(value)
    except ValueError:  # an int beyond sys.get_int_max_str_digits()
        text = f"<{_type_name(value)}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _key_name(key: object) -> str:
    return key if isinstance(key, str) else _show(key)


def _holds_nul(value: Any, depth: int = 0) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if depth > 64:  # deeper than any valid document; the grammar refuses it anyway
        return False
    if isinstance(value, dict):
        return any(_holds_nul(key) or _holds_nul(item, depth + 1) for key, item in value.items())
    if isinstance(value, list | tuple):
        return any(_holds_nul(item, depth + 1) for item in value)
    return False


def _document_size(document: Any) -> int | None:
    try:
        text = json.dumps(document, separators=(",", ":"), ensure_ascii=False, default=_json_default)
    except (TypeError, ValueError, RecursionError):
        return None
    return len(text)


def _check_patterns(path: str, value: object, errors: list[str]) -> None:
    if isinstance(value, str):
        if not value:
            errors.append(f"{path}: must not be an empty string")
        return
    if not isinstance(value, list | tuple):
        errors.append(f"{path}: must be a string or a list of strings, not {_type_name(value)}")
        return
    if not value:
        errors.append(f"{path}: must not be an empty list")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            errors.append(f"{path}[{i}]: must be a string, not {_type_name(item)}")
        elif not item:
            errors.append(f"{path}[{i}]: must not be an empty string")


def _check_pair(path: str, statement: Mapping[Any, Any], names: tuple[str, str], errors: list[str]) -> None:
    present = [name for name in names if name in statement]
    if len(present) == 2:
        errors.append(f"{path}: has both {names[0]} and {names[1]}; exactly one is allowed")
    elif not present:
        errors.append(f"{path}: needs exactly one of {names[0]} or {names[1]}")
    for name in present:
        _check_patterns(f"{path}.{name}", statement[name], errors)


def _check_condition_values(path: str, operator: _Operator, value: object, errors: list[str]) -> None:
    if isinstance(value, list | tuple):
        if not value:
            errors.append(f"{path}: must not be an empty list")
        items = [(f"{path}[{i}]", item) for i, item in enumerate(value)]
    else:
        items = [(path, value)]
    parse = _POLICY_PARSERS[operator.kind]
    for item_path, item in items:
        if not isinstance(item, str | int):  # bool is an int
            errors.append(f"{item_path}: must be a string, integer or boolean, not {_type_name(item)}")
        elif parse(item) is None:
            errors.append(f"{item_path}: {_KIND_PROBLEMS[operator.kind]}: {_show(item)}")


def _check_condition(path: str, condition: object, known_keys: frozenset[str] | None, errors: list[str]) -> None:
    if not isinstance(condition, Mapping):
        errors.append(f"{path}: must be an object mapping operators to conditions")
        return
    for operator_name, block in condition.items():
        operator_path = f"{path}.{_key_name(operator_name)}"
        operator = _OPERATORS.get(operator_name) if isinstance(operator_name, str) else None
        if operator is None:
            errors.append(f"{operator_path}: unknown operator")
            continue
        if not isinstance(block, Mapping) or not block:
            errors.append(f"{operator_path}: must be a non-empty object mapping condition keys to values")
            continue
        for key, value in block.items():
            key_path = f"{operator_path}.{_key_name(key)}"
            if not isinstance(key, str):
                errors.append(f"{key_path}: condition key must be a string")
                continue
            if known_keys is not None and key.lower() not in known_keys:
                errors.append(f"{key_path}: unknown condition key")
            _check_condition_values(key_path, operator, value, errors)


def _check_statement(path: str, statement: object, known_keys: frozenset[str] | None, errors: list[str]) -> None:
    if not isinstance(statement, Mapping):
        errors.append(f"{path}: must be an object, not {_type_name(statement)}")
        return
    for key in statement:
        if key not in _STATEMENT_KEYS:
            errors.append(f"{path}.{_key_name(key)}: unknown key")
    if "Sid" in statement and not isinstance(statement["Sid"], str):
        errors.append(f"{path}.Sid: must be a string")
    if "Effect" not in statement:
        errors.append(f"{path}.Effect: missing")
    elif not isinstance(statement["Effect"], str) or statement["Effect"] not in (_EFFECT_ALLOW, _EFFECT_DENY):
        errors.append(f'{path}.Effect: must be "Allow" or "Deny", not {_show(statement["Effect"])}')
    _check_pair(path, statement, ("Action", "NotAction"), errors)
    _check_pair(path, statement, ("Resource", "NotResource"), errors)
    if "Condition" in statement:
        _check_condition(f"{path}.Condition", statement["Condition"], known_keys, errors)


def _collect_errors(document: Any, *, known_keys: frozenset[str] | None, check_size: bool) -> list[str]:
    if not isinstance(document, Mapping):
        return [f"document: must be an object, not {_type_name(document)}"]
    errors: list[str] = []
    for key in document:
        if key not in _TOP_LEVEL_KEYS:
            errors.append(f"{_key_name(key)}: unknown top-level key")
    version = document.get("Version")
    if "Version" not in document:
        errors.append("Version: missing")
    elif not (isinstance(version, str) and version == "1"):
        errors.append(f'Version: must be the string "1", not {_show(version)}')
    statements = document.get("Statement")
    if "Statement" not in document:
        errors.append("Statement: missing")
    elif not isinstance(statements, list | tuple):
        errors.append(f"Statement: must be a list of statement objects, not {_type_name(statements)}")
    elif not statements:
        errors.append("Statement: must not be empty")
    else:
        for i, statement in enumerate(statements):
            _check_statement(f"Statement[{i}]", statement, known_keys, errors)
    if _holds_nul(document):
        # No stored text holds NUL (PostgreSQL's jsonb refuses it: a 500, found by tests/fuzz).
        errors.append("document: a key or string holds a NUL character (U+0000)")
    if check_size:
        size = _document_size(document)
        if size is None:
            if not errors:
                errors.append("document: cannot be serialised as JSON")
        elif size > MAX_POLICY_DOCUMENT_CHARS:
            errors.append(
                f"document: is {size} characters as compact JSON, over the limit of {MAX_POLICY_DOCUMENT_CHARS}"
            )
    return errors


def validate_policy_document(document: Any, *, condition_keys: Iterable[str] = DEFAULT_CONDITION_KEYS) -> None:
    """Raise ``PolicyValidationError`` listing every problem in ``document``; return None if valid."""
    if isinstance(condition_keys, str):
        raise TypeError("condition_keys must be an iterable of key names, not a single string")
    known_keys = frozenset(key.lower() for key in condition_keys)
    errors = _collect_errors(document, known_keys=known_keys, check_size=True)
    if errors:
        raise PolicyValidationError(errors)

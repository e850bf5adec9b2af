"""Property tests (hypothesis) for the RAM policy evaluator (portal.ram.evaluator)."""

import itertools
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from portal.ram.evaluator import (
    DECISION_ALLOW,
    DECISION_EXPLICIT_DENY,
    DECISION_IMPLICIT_DENY,
    AccessRequest,
    Decision,
    Policy,
    compile_policy,
    evaluate,
    validate_policy_document,
)

# No example database: the tests must not write a .hypothesis directory into the project tree.
SETTINGS = settings(max_examples=200, deadline=None, database=None)

DEPT, TIME, IP, SECURE, MFA = (
    "usage:DepartmentId",
    "acs:CurrentTime",
    "acs:SourceIp",
    "acs:SecureTransport",
    "acs:MFAPresent",
)

ACTIONS = [
    "keys:CreateKey",
    "keys:ListKeys",
    "keys:DeleteKey",
    "usage:QueryUsage",
    "billing:GetInvoice",
    "aicontent:ModelRouterQueryCostModelDetail",
]
ACTION_PATTERNS = [*ACTIONS, "*", "keys:*", "*Key*", "usage:?ueryUsage", "*:List*", "KEYS:createkey"]
RESOURCES = [
    "acs:keys:*:42:apikey/17",
    "acs:keys:*:42:apikey/7",
    "acs:keys:*:43:apikey/1",
    "acs:usage:*:42:department/*",
    "acs:usage:*:42:department/3",
    "acs:billing:*:42:invoice/2025-01",
]
RESOURCE_PATTERNS = [
    *RESOURCES,
    "*",
    "acs:keys:*",
    "acs:keys:*:42:apikey/1?",
    "acs:*:*:42:*",
    "acs:usage:*:42:department/*",
]
CIDRS = ["10.0.0.0/8", "192.168.0.0/16", "10.1.2.3", "2001:db8::/32", "::1", "0.0.0.0/0"]
ADDRESSES = ["10.1.2.3", "192.168.7.7", "8.8.8.8", "2001:db8::9", "::1", "::ffff:10.0.0.1", "bogus"]
DATES = ["2024-06-01T00:00:00Z", "2025-01-01T08:00:00+08:00", "2025-01-01", 1735689600, 1700000000]
REQUEST_DATES = [*DATES, "2024-12-31T23:59:59Z", datetime(2025, 3, 1, tzinfo=UTC), "not a date"]


def one_or_many(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return values | st.lists(values, min_size=1, max_size=3)


STRING_VALUES = st.sampled_from(["1", "2", "7", "dept-*", "Sales", "sales", "?"])
NUMERIC_VALUES = st.integers(-3, 12) | st.sampled_from(["7", "7.0", "-1.5", "1e1"])
FAMILY_VALUES: dict[str, tuple[list[str], list[Any]]] = {
    "String": ([DEPT], ["1", "7", "dept-*", "Sales", "?", ["1", "2"], ["sales", "d*"]]),
    "Numeric": ([DEPT], [7, "7.0", -1, "1e1", "-1.5", [3, 10]]),
    "Date": ([TIME], [*DATES, [DATES[0], DATES[3]]]),
    "Bool": ([SECURE, MFA], [True, False, "true", "FALSE"]),
    "IpAddress": ([IP], [*CIDRS, ["10.0.0.0/8", "2001:db8::/32"]]),
    "NotIpAddress": ([IP], [*CIDRS, ["10.0.0.0/8", "2001:db8::/32"]]),
}
OPERATORS = [
    "StringEquals", "StringNotEquals", "StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase",
    "StringLike", "StringNotLike", "NumericEquals", "NumericNotEquals", "NumericLessThan",
    "NumericLessThanEquals", "NumericGreaterThan", "NumericGreaterThanEquals", "DateEquals",
    "DateNotEquals", "DateLessThan", "DateLessThanEquals", "DateGreaterThan",
    "DateGreaterThanEquals", "Bool", "IpAddress", "NotIpAddress",
]  # fmt: skip


def _family(operator: str) -> tuple[list[str], list[Any]]:
    return next(spec for family, spec in FAMILY_VALUES.items() if operator.startswith(family))


# Catalogues drawn with one sampled_from each: composing the same shapes from many small draws
# made generation, not evaluation, take most of the run time.
CONDITION_ATOMS = [
    (operator, key, value) for operator in OPERATORS for key in _family(operator)[0] for value in _family(operator)[1]
]


def _pattern_fields(patterns: list[str]) -> list[Any]:
    pairs = [[a, b] for a, b in itertools.combinations(patterns, 2)]
    # Broad patterns often enough that statements overlap and decisions vary.
    return [*patterns, *pairs, [patterns[0]], *["*"] * (len(pairs) // 3)]


def _statement(
    effect: str,
    action_key: str,
    action: Any,
    resource_key: str,
    resource: Any,
    sid: str | None,
    atoms: list[tuple[str, str, Any]],
) -> dict[str, Any]:
    result: dict[str, Any] = {"Effect": effect, action_key: action, resource_key: resource}
    if sid is not None:
        result["Sid"] = sid
    for operator, key, value in atoms:
        result.setdefault("Condition", {}).setdefault(operator, {})[key] = value
    return result


def statements(effect: str | None = None) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(
        _statement,
        st.just(effect) if effect else st.sampled_from(["Allow", "Deny"]),
        st.sampled_from(["Action", "Action", "NotAction"]),
        st.sampled_from(_pattern_fields(ACTION_PATTERNS)),
        st.sampled_from(["Resource", "Resource", "NotResource"]),
        st.sampled_from(_pattern_fields(RESOURCE_PATTERNS)),
        st.sampled_from([None, "A", "B"]),
        # Mostly unconditional: with many conditions almost every request ends in ImplicitDeny.
        st.lists(st.sampled_from(CONDITION_ATOMS), max_size=2) | st.just([]),
    )


def documents(effect: str | None = None) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(
        lambda items: {"Version": "1", "Statement": items},
        st.lists(statements(effect), min_size=1, max_size=3),
    )


POLICY_NAMES = st.sampled_from(["alpha", "beta", "gamma", "delta"])
policies = st.builds(Policy, POLICY_NAMES, documents())
policy_sets = st.lists(policies, max_size=3)


ACTION_SPELLINGS = [spelling for a in ACTIONS for spelling in (a, a.upper(), a.lower(), a.swapcase())]
CONTEXT_VALUES: dict[str, list[Any]] = {
    DEPT: ["1", "7", 7, "7.00", -1, "dept-42", "Sales", "sales", "?", ["1", "2"], [3, "10"], "seven"],
    TIME: REQUEST_DATES,
    IP: [*ADDRESSES, ["8.8.8.8", "10.0.0.1"], []],
    SECURE: [True, False, "true", "False", "yes"],
    MFA: [True, False],
}
CONTEXT_ATOMS = [
    (spelling, value) for key, values in CONTEXT_VALUES.items() for spelling in (key, key.lower()) for value in values
]


def _request(action: str, resource: str, atoms: list[tuple[str, Any]]) -> AccessRequest:
    return AccessRequest(action, resource, dict(atoms))


def requests() -> st.SearchStrategy[AccessRequest]:
    return st.builds(
        _request,
        st.sampled_from(ACTION_SPELLINGS),
        st.sampled_from(RESOURCES),
        st.lists(st.sampled_from(CONTEXT_ATOMS), max_size=8),
    )


def with_statement_added(
    policy_set: list[Policy], added: dict[str, Any], target: int, new_policy: bool
) -> list[Policy]:
    if new_policy or not policy_set:
        return [*policy_set, Policy("added", {"Version": "1", "Statement": [added]})]
    index = target % len(policy_set)
    old = policy_set[index]
    grown = Policy(old.name, {"Version": "1", "Statement": [*old.document["Statement"], added]})
    return [*policy_set[:index], grown, *policy_set[index + 1 :]]


# --------------------------------------------------------------------------------------------
# The four required properties


@SETTINGS
@given(policy_set=policy_sets, request=requests(), deny=statements("Deny"), target=st.integers(0, 9), new=st.booleans())
def test_adding_a_deny_never_grants_and_never_lifts_an_explicit_deny(
    policy_set: list[Policy], request: AccessRequest, deny: dict[str, Any], target: int, new: bool
) -> None:
    before = evaluate(policy_set, request)
    after = evaluate(with_statement_added(policy_set, deny, target, new), request)
    if before.effect != DECISION_ALLOW:
        assert after.effect != DECISION_ALLOW
    if before.effect == DECISION_EXPLICIT_DENY:
        assert after.effect == DECISION_EXPLICIT_DENY
        assert set(before.matched) <= set(after.matched)


@SETTINGS
@given(request=requests())
def test_empty_policy_set_always_denies_implicitly(request: AccessRequest) -> None:
    assert evaluate([], request) == Decision(DECISION_IMPLICIT_DENY, ())


@SETTINGS
@given(
    policy_set=policy_sets, request=requests(), allow=statements("Allow"), target=st.integers(0, 9), new=st.booleans()
)
def test_adding_an_allow_never_lifts_an_explicit_deny(
    policy_set: list[Policy], request: AccessRequest, allow: dict[str, Any], target: int, new: bool
) -> None:
    before = evaluate(policy_set, request)
    after = evaluate(with_statement_added(policy_set, allow, target, new), request)
    if before.effect == DECISION_EXPLICIT_DENY:
        assert after == before
    if before.effect == DECISION_ALLOW:
        assert after.effect == DECISION_ALLOW


@SETTINGS
@given(data=st.data(), policy_set=policy_sets, request=requests())
def test_evaluate_is_independent_of_policy_order(
    data: st.DataObject, policy_set: list[Policy], request: AccessRequest
) -> None:
    shuffled = data.draw(st.permutations(policy_set))
    assert evaluate(shuffled, request) == evaluate(policy_set, request)


# --------------------------------------------------------------------------------------------
# Supporting properties


@SETTINGS
@given(document=documents())
def test_generated_documents_are_valid(document: dict[str, Any]) -> None:
    validate_policy_document(document)


@SETTINGS
@given(policy_set=policy_sets, request=requests())
def test_compiled_and_raw_policies_decide_alike(policy_set: list[Policy], request: AccessRequest) -> None:
    decision = evaluate(policy_set, request)
    assert evaluate([compile_policy(p) for p in policy_set], request) == decision
    assert decision.allowed is (decision.effect == DECISION_ALLOW)
    assert (decision.matched == ()) is (decision.effect == DECISION_IMPLICIT_DENY)
    expected_effect = {DECISION_ALLOW: "Allow", DECISION_EXPLICIT_DENY: "Deny"}.get(decision.effect)
    assert all(m.effect == expected_effect for m in decision.matched)


def reference_glob(pattern: str, text: str) -> bool:
    """Plain dynamic programming: the obviously-correct (and slow) definition of * and ?."""
    reachable = [True] + [False] * len(text)  # pattern[:0] matches text[:0] only
    for symbol in pattern:
        if symbol == "*":
            nxt = [reachable[0]] * (len(text) + 1)
            for j in range(1, len(text) + 1):
                nxt[j] = reachable[j] or nxt[j - 1]
        else:
            nxt = [False] + [
                reachable[j - 1] and (symbol == "?" or symbol == text[j - 1]) for j in range(1, len(text) + 1)
            ]
        reachable = nxt
    return reachable[-1]


# Mostly a tiny alphabet, so that stars and question marks have something to fight over, plus
# regex metacharacters that must stay literal. (st.text would flatten the weighting.)
GLOB_CHARS = st.one_of(
    st.sampled_from("aAb"), st.sampled_from("ab"), st.just("*"), st.just("?"), st.sampled_from(":/.()+[]^$|\\{}\n")
)


def glob_text(max_size: int, min_size: int = 0) -> st.SearchStrategy[str]:
    return st.lists(GLOB_CHARS, min_size=min_size, max_size=max_size).map("".join)


@st.composite
def pattern_and_text(draw: st.DrawFn) -> tuple[str, str]:
    """A pattern and either random text or an instance of the pattern (so that matches are common)."""
    pattern = draw(glob_text(8, min_size=1))
    if draw(st.booleans()):
        return pattern, draw(glob_text(10))
    fillers = {"*": st.text("aAb\n", max_size=3), "?": st.sampled_from("aAb?*\n")}
    return pattern, "".join(draw(fillers[c]) if c in fillers else c for c in pattern)


@settings(SETTINGS, max_examples=500)  # cheap, and the interesting cases are sparse
@given(case=pattern_and_text())
def test_wildcards_agree_with_reference_matcher(case: tuple[str, str]) -> None:
    pattern, text = case
    resource_policy = Policy(
        "r", {"Version": "1", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": pattern}]}
    )
    action_policy = Policy(
        "a", {"Version": "1", "Statement": [{"Effect": "Allow", "Action": pattern, "Resource": "*"}]}
    )
    like_policy = Policy(
        "l",
        {
            "Version": "1",
            "Statement": [
                {"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {"StringLike": {DEPT: pattern}}}
            ],
        },
    )
    assert evaluate([resource_policy], AccessRequest("x:y", text)).allowed is reference_glob(pattern, text)
    assert evaluate([action_policy], AccessRequest(text, "r")).allowed is reference_glob(pattern.lower(), text.lower())
    assert evaluate([like_policy], AccessRequest("x:y", "r", {DEPT: text})).allowed is reference_glob(pattern, text)


COMPLEMENTS = [
    ("StringEquals", "StringNotEquals", DEPT, STRING_VALUES),
    ("StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase", DEPT, STRING_VALUES),
    ("StringLike", "StringNotLike", DEPT, STRING_VALUES),
    ("NumericEquals", "NumericNotEquals", DEPT, NUMERIC_VALUES),
    ("DateEquals", "DateNotEquals", TIME, st.sampled_from(DATES)),
    ("IpAddress", "NotIpAddress", IP, st.sampled_from(CIDRS)),
]

ODD_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=6)
    | st.binary(max_size=4)
    | st.decimals()
    | st.datetimes(timezones=st.none() | st.just(UTC))
    | st.sampled_from([*ADDRESSES, *DATES, "7", "1e5", "NaN", "true"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=2),
    max_leaves=6,
)


@SETTINGS
@given(data=st.data(), pair=st.sampled_from(COMPLEMENTS), present=st.booleans())
def test_negated_operator_is_the_complement_of_its_positive(
    data: st.DataObject, pair: tuple[str, str, str, st.SearchStrategy[Any]], present: bool
) -> None:
    positive, negated, key, values = pair
    policy_value = data.draw(one_or_many(values))
    context = {key: data.draw(ODD_VALUES | one_or_many(values))} if present else {}
    request = AccessRequest("x:y", "r", context)

    def allowed(operator: str) -> bool:
        doc = {
            "Version": "1",
            "Statement": [
                {"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {operator: {key: policy_value}}}
            ],
        }
        return evaluate([Policy(operator, doc)], request).allowed

    assert allowed(positive) is not allowed(negated)


@SETTINGS
@given(
    policy_set=policy_sets,
    context=st.dictionaries(
        st.sampled_from([DEPT, TIME, IP, SECURE, MFA, "ACS:SOURCEIP", "other"]) | st.text(max_size=4), ODD_VALUES
    ),
    action=st.sampled_from(ACTIONS) | st.text(max_size=5) | st.none(),
)
def test_odd_request_values_never_raise(policy_set: list[Policy], context: dict[str, Any], action: Any) -> None:
    decision = evaluate(policy_set, AccessRequest(action, RESOURCES[0], context))
    assert decision.effect in {DECISION_ALLOW, DECISION_IMPLICIT_DENY, DECISION_EXPLICIT_DENY}


COMPARISONS = {
    "Equals": lambda request, policy: request == policy,
    "LessThan": lambda request, policy: request < policy,
    "LessThanEquals": lambda request, policy: request <= policy,
    "GreaterThan": lambda request, policy: request > policy,
    "GreaterThanEquals": lambda request, policy: request >= policy,
}


def oracle(operator: str, request: Any, policy_values: list[Any]) -> bool:
    """Positive operators: some policy value compares true; NotEquals: no policy value is equal."""
    comparison = operator.removeprefix("Numeric").removeprefix("Date")
    if comparison == "NotEquals":
        return not any(request == value for value in policy_values)
    return any(COMPARISONS[comparison](request, value) for value in policy_values)


def single_or_list(values: list[Any]) -> Any:
    return values[0] if len(values) == 1 else values


NUMERIC_OPERATORS = [f"Numeric{name}" for name in [*COMPARISONS, "NotEquals"]]
DATE_OPERATORS = [f"Date{name}" for name in [*COMPARISONS, "NotEquals"]]
finite_decimals = st.decimals(allow_nan=False, allow_infinity=False, min_value=-(10**6), max_value=10**6)
numbers = finite_decimals | st.integers(-(10**6), 10**6).map(Decimal) | st.integers(-3, 3).map(Decimal)


def _render_number(value: Decimal, style: str) -> Any:
    if style == "int" and value == value.to_integral_value():
        return int(value)
    if style == "decimal":
        return value
    return str(value)


@SETTINGS
@given(
    operator=st.sampled_from(NUMERIC_OPERATORS),
    policy_values=st.lists(numbers, min_size=1, max_size=3),
    request_value=numbers,
    policy_styles=st.lists(st.sampled_from(["int", "string"]), min_size=3, max_size=3),
    request_style=st.sampled_from(["decimal", "string", "int"]),
)
def test_numeric_operators_agree_with_decimal_comparison(
    operator: str, policy_values: list[Decimal], request_value: Decimal, policy_styles: list[str], request_style: str
) -> None:
    written = [_render_number(value, style) for value, style in zip(policy_values, policy_styles, strict=False)]
    doc = {
        "Version": "1",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "*",
                "Resource": "*",
                "Condition": {operator: {DEPT: single_or_list(written)}},
            }
        ],
    }
    validate_policy_document(doc)
    sent = _render_number(request_value, request_style)
    decision = evaluate([Policy("n", doc)], AccessRequest("x:y", "r", {DEPT: sent}))
    assert decision.allowed is oracle(operator, request_value, policy_values)


offsets = st.integers(-23 * 60, 23 * 60).map(lambda minutes: timezone(timedelta(minutes=minutes)))
aware_datetimes = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=offsets | st.just(UTC)
)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _render_date(moment: datetime, style: str) -> Any:
    if style == "epoch" and moment.microsecond == 0:
        return (moment - EPOCH) // timedelta(seconds=1)
    if style == "naive-utc":
        return moment.astimezone(UTC).replace(tzinfo=None).isoformat()
    if style == "zulu":
        return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return moment.isoformat()


DATE_STYLES = st.sampled_from(["epoch", "naive-utc", "zulu", "offset"])


@SETTINGS
@given(
    operator=st.sampled_from(DATE_OPERATORS),
    policy_moments=st.lists(aware_datetimes, min_size=1, max_size=2),
    request_moment=aware_datetimes,
    same_moment=st.booleans(),
    policy_style=DATE_STYLES,
    request_style=DATE_STYLES | st.just("datetime"),
)
def test_date_operators_agree_with_datetime_comparison(
    operator: str,
    policy_moments: list[datetime],
    request_moment: datetime,
    same_moment: bool,
    policy_style: str,
    request_style: str,
) -> None:
    if same_moment:  # equal instants written in different offsets must compare equal
        request_moment = policy_moments[-1].astimezone(request_moment.tzinfo)
    written = single_or_list([_render_date(moment, policy_style) for moment in policy_moments])
    request_value = request_moment if request_style == "datetime" else _render_date(request_moment, request_style)
    doc = {
        "Version": "1",
        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {operator: {TIME: written}}}],
    }
    validate_policy_document(doc)
    decision = evaluate([Policy("d", doc)], AccessRequest("x:y", "r", {TIME: request_value}))
    assert decision.allowed is oracle(operator, request_moment, policy_moments)

"""Table-driven tests for the RAM policy evaluator and validator (portal.ram.evaluator)."""

import copy
import ipaddress
import json
import math
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import pytest

from portal.ram.evaluator import (
    DECISION_ALLOW,
    DECISION_EXPLICIT_DENY,
    DECISION_IMPLICIT_DENY,
    DEFAULT_CONDITION_KEYS,
    MAX_POLICY_DOCUMENT_CHARS,
    AccessRequest,
    CompiledPolicy,
    Decision,
    MatchedStatement,
    Policy,
    PolicyValidationError,
    compile_policy,
    evaluate,
    validate_policy_document,
)

ACTION = "keys:CreateKey"
RESOURCE = "acs:keys:*:42:apikey/17"


def document(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "1", "Statement": list(statements)}


def statement(effect: str = "Allow", action: Any = "*", resource: Any = "*", **extra: Any) -> dict[str, Any]:
    return {"Effect": effect, "Action": action, "Resource": resource, **extra}


def decide(
    *statements: dict[str, Any],
    action: Any = ACTION,
    resource: Any = RESOURCE,
    context: Any = None,
) -> str:
    request = AccessRequest(action, resource, {} if context is None else context)
    return evaluate([Policy("p", document(*statements))], request).effect


def decide_condition(condition: dict[str, Any], context: Any) -> str:
    return decide(statement(Condition=condition), context=context)


def validation_errors(doc: Any, **kwargs: Any) -> list[str]:
    with pytest.raises(PolicyValidationError) as caught:
        validate_policy_document(doc, **kwargs)
    return caught.value.errors


ALLOW, IMPLICIT, EXPLICIT = DECISION_ALLOW, DECISION_IMPLICIT_DENY, DECISION_EXPLICIT_DENY
DEPT, TIME, IP, SECURE, MFA = (
    "usage:DepartmentId",
    "acs:CurrentTime",
    "acs:SourceIp",
    "acs:SecureTransport",
    "acs:MFAPresent",
)

# --------------------------------------------------------------------------------------------
# Every operator, true and false

OPERATOR_CASES = [
    # (operator, key, policy value, request value, allowed?)
    ("StringEquals", DEPT, "7", "7", True),
    ("StringEquals", DEPT, "7", "8", False),
    ("StringEquals", DEPT, "Sales", "sales", False),
    ("StringEquals", DEPT, 7, "7", True),
    ("StringEquals", DEPT, "7", 7, True),
    ("StringEquals", SECURE, True, "true", True),
    ("StringNotEquals", DEPT, "7", "8", True),
    ("StringNotEquals", DEPT, "7", "7", False),
    ("StringEqualsIgnoreCase", DEPT, "Sales", "sALES", True),
    ("StringEqualsIgnoreCase", DEPT, "Sales", "Sale", False),
    ("StringNotEqualsIgnoreCase", DEPT, "Sales", "Marketing", True),
    ("StringNotEqualsIgnoreCase", DEPT, "Sales", "SALES", False),
    ("StringLike", DEPT, "dept-*", "dept-42", True),
    ("StringLike", DEPT, "dept-*", "team-42", False),
    ("StringLike", DEPT, "dept-??", "dept-42", True),
    ("StringLike", DEPT, "dept-?", "dept-42", False),
    ("StringLike", DEPT, "Dept-*", "dept-42", False),
    ("StringLike", DEPT, "d.pt", "dept", False),
    ("StringNotLike", DEPT, "dept-*", "team-42", True),
    ("StringNotLike", DEPT, "dept-*", "dept-42", False),
    ("NumericEquals", DEPT, 7, "7", True),
    ("NumericEquals", DEPT, "7.0", 7, True),
    ("NumericEquals", DEPT, "7", Decimal("7.00"), True),
    ("NumericEquals", DEPT, "0.3", "0.30", True),
    ("NumericEquals", DEPT, 7, 8, False),
    ("NumericEquals", DEPT, "1e2", 100, True),
    ("NumericNotEquals", DEPT, 7, 8, True),
    ("NumericNotEquals", DEPT, 7, "7", False),
    ("NumericLessThan", DEPT, 10, 9, True),
    ("NumericLessThan", DEPT, 10, 10, False),
    ("NumericLessThan", DEPT, "0.3", Decimal("0.29999999999999999999"), True),
    ("NumericLessThan", DEPT, "-1", "-2", True),
    ("NumericLessThanEquals", DEPT, 10, "10", True),
    ("NumericLessThanEquals", DEPT, 10, 11, False),
    ("NumericGreaterThan", DEPT, 10, 11, True),
    ("NumericGreaterThan", DEPT, 10, 10, False),
    ("NumericGreaterThanEquals", DEPT, 10, 10, True),
    ("NumericGreaterThanEquals", DEPT, 10, "9.999", False),
    ("DateEquals", TIME, "2025-01-01T00:00:00Z", "2025-01-01T01:00:00+01:00", True),
    ("DateEquals", TIME, "2025-01-01T00:00:00Z", "2025-01-01T00:00:01Z", False),
    ("DateEquals", TIME, "2025-01-01T00:00:00", "2025-01-01T00:00:00Z", True),
    ("DateEquals", TIME, 1735689600, "2025-01-01T00:00:00Z", True),
    ("DateEquals", TIME, "2025-01-01T00:00:00Z", 1735689600, True),
    ("DateNotEquals", TIME, "2025-01-01T00:00:00Z", "2025-01-02T00:00:00Z", True),
    ("DateNotEquals", TIME, "2025-01-01T08:00:00+08:00", "2025-01-01T00:00:00Z", False),
    ("DateLessThan", TIME, "2025-06-01T00:00:00Z", datetime(2025, 5, 31, tzinfo=UTC), True),
    ("DateLessThan", TIME, "2025-06-01T00:00:00Z", "2025-06-01T00:00:00Z", False),
    ("DateLessThan", TIME, "2025-01-01T00:00:00+08:00", "2024-12-31T17:00:00Z", False),
    ("DateLessThan", TIME, "2025-01-01T00:00:00+08:00", "2024-12-31T15:59:59Z", True),
    ("DateLessThan", TIME, 1735689600, "2024-12-31T23:59:59Z", True),
    ("DateLessThan", TIME, 1735689600, datetime(2025, 1, 1, 0, 0, 1, tzinfo=UTC), False),
    (
        "DateLessThan",
        TIME,
        "2025-01-01T00:00:00Z",
        datetime(2025, 1, 1, 7, 0, tzinfo=timezone(timedelta(hours=8))),
        True,
    ),
    ("DateLessThanEquals", TIME, "2025-06-01T00:00:00Z", "2025-06-01T00:00:00Z", True),
    ("DateLessThanEquals", TIME, "2025-06-01T00:00:00Z", "2025-06-01T00:00:00.000001Z", False),
    ("DateGreaterThan", TIME, "2025-06-01T00:00:00Z", "2025-06-01T00:00:01Z", True),
    ("DateGreaterThan", TIME, "2025-06-01T00:00:00Z", "2025-06-01T00:00:00Z", False),
    ("DateGreaterThanEquals", TIME, "2025-06-01T00:00:00Z", "2025-06-01T00:00:00Z", True),
    ("DateGreaterThanEquals", TIME, "2025-06-01T00:00:00Z", "2025-05-31T23:59:59Z", False),
    ("Bool", SECURE, True, True, True),
    ("Bool", SECURE, True, "TRUE", True),
    ("Bool", SECURE, "false", False, True),
    ("Bool", SECURE, True, False, False),
    ("Bool", SECURE, "true", "false", False),
    ("IpAddress", IP, "10.0.0.0/8", "10.1.2.3", True),
    ("IpAddress", IP, "10.0.0.0/8", "11.0.0.1", False),
    ("IpAddress", IP, "192.168.1.10", "192.168.1.10", True),
    ("IpAddress", IP, "192.168.1.10", "192.168.1.11", False),
    ("IpAddress", IP, "10.0.0.0/8", "::ffff:10.0.0.1", True),
    ("IpAddress", IP, "10.0.0.0/8", ipaddress.ip_address("10.9.9.9"), True),
    ("IpAddress", IP, "2001:db8::/32", "2001:db8::1", True),
    ("IpAddress", IP, "2001:db8::/32", "2001:db9::1", False),
    ("IpAddress", IP, "2001:db8::/32", "10.0.0.1", False),
    ("IpAddress", IP, "0.0.0.0/0", "2001:db8::1", False),
    ("NotIpAddress", IP, "10.0.0.0/8", "192.168.0.1", True),
    ("NotIpAddress", IP, "10.0.0.0/8", "10.0.0.1", False),
    ("NotIpAddress", IP, "2001:db8::/32", "2001:db8:ffff::1", False),
]


def _case_id(case: tuple[Any, ...]) -> str:
    operator, _key, policy_value, request_value, expected = case
    verdict = "true" if expected else "false"
    return f"{operator}-{policy_value!s}-vs-{request_value!s}-{verdict}"


@pytest.mark.parametrize(
    ("operator", "key", "policy_value", "request_value", "allowed"),
    OPERATOR_CASES,
    ids=[_case_id(case) for case in OPERATOR_CASES],
)
def test_operator(operator: str, key: str, policy_value: Any, request_value: Any, allowed: bool) -> None:
    effect = decide_condition({operator: {key: policy_value}}, {key: request_value})
    assert effect == (ALLOW if allowed else IMPLICIT)


def test_operator_table_covers_every_operator_both_ways() -> None:
    all_operators = {
        "StringEquals", "StringNotEquals", "StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase",
        "StringLike", "StringNotLike", "NumericEquals", "NumericNotEquals", "NumericLessThan",
        "NumericLessThanEquals", "NumericGreaterThan", "NumericGreaterThanEquals", "DateEquals",
        "DateNotEquals", "DateLessThan", "DateLessThanEquals", "DateGreaterThan",
        "DateGreaterThanEquals", "Bool", "IpAddress", "NotIpAddress",
    }  # fmt: skip
    for expected in (True, False):
        covered = {case[0] for case in OPERATOR_CASES if case[4] is expected}
        assert covered == all_operators


# --------------------------------------------------------------------------------------------
# Missing keys and values of the wrong type

VALID_VALUE = {
    "String": (DEPT, "7"),
    "Numeric": (DEPT, 7),
    "Date": (TIME, "2025-01-01T00:00:00Z"),
    "Bool": (SECURE, True),
    "IpAddress": (IP, "10.0.0.0/8"),
    "NotIpAddress": (IP, "10.0.0.0/8"),
}
NEGATED = {
    "StringNotEquals", "StringNotEqualsIgnoreCase", "StringNotLike", "NumericNotEquals",
    "DateNotEquals", "NotIpAddress",
}  # fmt: skip
ALL_OPERATORS = sorted({case[0] for case in OPERATOR_CASES})


def _valid_condition(operator: str) -> tuple[str, Any]:
    family = next(prefix for prefix in VALID_VALUE if operator.startswith(prefix))
    return VALID_VALUE[family]


@pytest.mark.parametrize("operator", ALL_OPERATORS, ids=ALL_OPERATORS)
def test_missing_key_is_false_for_positive_and_true_for_negated_operators(operator: str) -> None:
    key, value = _valid_condition(operator)
    effect = decide_condition({operator: {key: value}}, {"acs:MFAPresent": True})
    assert effect == (ALLOW if operator in NEGATED else IMPLICIT)


WRONG_TYPE_CASES = [
    # (operator, key, policy value, bad request value, allowed?)
    ("NumericEquals", DEPT, 7, "seven", False),
    ("NumericEquals", DEPT, 7, 7.0, False),
    ("NumericEquals", DEPT, 7, "NaN", False),
    ("NumericEquals", DEPT, 1, True, False),
    ("NumericGreaterThan", DEPT, 0, Decimal("Infinity"), False),
    ("NumericNotEquals", DEPT, 7, "seven", True),
    ("DateLessThan", TIME, "2025-01-01T00:00:00Z", "not-a-date", False),
    ("DateLessThan", TIME, "2025-01-01T00:00:00Z", True, False),
    ("DateNotEquals", TIME, "2025-01-01T00:00:00Z", "yesterday", True),
    ("IpAddress", IP, "0.0.0.0/0", "999.1.1.1", False),
    ("IpAddress", IP, "0.0.0.0/0", 167772161, False),
    ("NotIpAddress", IP, "10.0.0.0/8", "bogus", True),
    ("Bool", SECURE, True, "yes", False),
    ("Bool", SECURE, True, 1, False),
    ("StringEquals", DEPT, "None", None, False),
    ("StringLike", DEPT, "*", b"bytes", False),
    ("StringNotEquals", DEPT, "x", 1.5, True),
]


@pytest.mark.parametrize(
    ("operator", "key", "policy_value", "request_value", "allowed"),
    WRONG_TYPE_CASES,
    ids=[_case_id(case) for case in WRONG_TYPE_CASES],
)
def test_wrong_type_request_value_matches_nothing(
    operator: str, key: str, policy_value: Any, request_value: Any, allowed: bool
) -> None:
    effect = decide_condition({operator: {key: policy_value}}, {key: request_value})
    assert effect == (ALLOW if allowed else IMPLICIT)


# Values that no operator family can use (the strings are text, but never equal to or like "7").
UNUSABLE_CONTEXT_VALUES = [
    None,
    1.5,
    math.nan,
    math.inf,
    b"10.0.0.1",
    object(),
    {"nested": "dict"},
    [[1, 2], {"a": 1}],
    Decimal("NaN"),
    Decimal("sNaN"),
    "",
    "\x00" * 3,
    "1e999999999999999999999",
]


@pytest.mark.parametrize(
    "value",
    UNUSABLE_CONTEXT_VALUES,
    ids=[f"{type(value).__name__}-{i}" for i, value in enumerate(UNUSABLE_CONTEXT_VALUES)],
)
@pytest.mark.parametrize("operator", ALL_OPERATORS, ids=ALL_OPERATORS)
def test_unusable_context_values_match_nothing_and_never_raise(operator: str, value: Any) -> None:
    key, policy_value = _valid_condition(operator)
    effect = decide_condition({operator: {key: policy_value}}, {key: value, key.upper(): [value, value]})
    assert effect == (ALLOW if operator in NEGATED else IMPLICIT)


@pytest.mark.parametrize(
    ("operator", "expected"),
    [
        ("StringEquals", IMPLICIT),
        ("StringNotEquals", ALLOW),
        ("NumericGreaterThan", ALLOW),
        ("NumericEquals", IMPLICIT),
    ],
    ids=["string-equals", "string-not-equals", "numeric-greater", "numeric-equals"],
)
def test_int_too_long_for_text_is_still_a_number(operator: str, expected: str) -> None:
    assert decide_condition({operator: {DEPT: 7}}, {DEPT: 10**5000}) == expected


def test_naive_datetime_in_request_is_taken_as_utc() -> None:
    condition = {"DateEquals": {TIME: "2025-01-01T08:00:00+08:00"}}
    assert decide_condition(condition, {TIME: datetime(2025, 1, 1)}) == ALLOW
    assert decide_condition(condition, {TIME: datetime(2025, 1, 1, 8)}) == IMPLICIT


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        (None, IMPLICIT),
        (["acs:SourceIp", "10.0.0.1"], IMPLICIT),
        ({1: "10.0.0.1"}, IMPLICIT),
        ({"acs:sourceip": "10.0.0.1"}, ALLOW),
        (MappingProxyType({"ACS:SOURCEIP": "10.0.0.1"}), ALLOW),
    ],
    ids=["none", "list-not-mapping", "non-string-key", "lower-case-key", "mapping-proxy-upper-key"],
)
def test_context_shape_and_key_case(context: Any, expected: str) -> None:
    request = AccessRequest(ACTION, RESOURCE, context)
    policy = Policy("p", document(statement(Condition={"IpAddress": {IP: "10.0.0.0/8"}})))
    assert evaluate([policy], request).effect == expected


def test_condition_key_in_policy_is_case_insensitive() -> None:
    condition = {"IpAddress": {"ACS:SOURCEIP": "10.0.0.0/8"}}
    assert decide_condition(condition, {"acs:sourceIp": "10.0.0.1"}) == ALLOW
    assert decide_condition(condition, {"acs:sourceIp": "11.0.0.1"}) == IMPLICIT


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        ({"acs:SourceIp": "10.0.0.1", "acs:sourceip": "11.0.0.1"}, ALLOW),
        ({"acs:SourceIp": "12.0.0.1", "acs:sourceip": "11.0.0.1"}, IMPLICIT),
    ],
    ids=["one-of-case-variants-matches", "no-case-variant-matches"],
)
def test_context_keys_differing_only_in_case_are_merged(context: dict[str, Any], expected: str) -> None:
    assert decide_condition({"IpAddress": {IP: "10.0.0.0/8"}}, context) == expected


# --------------------------------------------------------------------------------------------
# Multiple values: OR over policy values, NOR for negated operators, multi-valued requests

MULTI_VALUE_CASES = [
    # (id, condition, request value, expected)
    ("or-policy-values-hit", {"StringEquals": {DEPT: ["1", "2", "3"]}}, "2", ALLOW),
    ("or-policy-values-miss", {"StringEquals": {DEPT: ["1", "2", "3"]}}, "4", IMPLICIT),
    ("or-cidrs-second", {"IpAddress": {IP: ["10.0.0.0/8", "192.168.0.0/16"]}}, "192.168.3.4", ALLOW),
    ("or-cidrs-mixed-family", {"IpAddress": {IP: ["10.0.0.0/8", "2001:db8::/32"]}}, "2001:db8::5", ALLOW),
    ("or-numeric-lt-any", {"NumericLessThan": {DEPT: [3, 10]}}, 5, ALLOW),
    ("or-numeric-gt-any", {"NumericGreaterThan": {DEPT: [3, 10]}}, 5, ALLOW),
    ("or-numeric-gt-none", {"NumericGreaterThan": {DEPT: [6, 10]}}, 5, IMPLICIT),
    ("nor-none-match", {"StringNotEquals": {DEPT: ["1", "2"]}}, "3", ALLOW),
    ("nor-one-matches", {"StringNotEquals": {DEPT: ["1", "2"]}}, "2", IMPLICIT),
    ("nor-like-one-matches", {"StringNotLike": {DEPT: ["a*", "b*"]}}, "bee", IMPLICIT),
    ("nor-ip-second-matches", {"NotIpAddress": {IP: ["10.0.0.0/8", "172.16.0.0/12"]}}, "172.16.0.9", IMPLICIT),
    ("nor-ip-none-match", {"NotIpAddress": {IP: ["10.0.0.0/8", "172.16.0.0/12"]}}, "8.8.8.8", ALLOW),
    ("nor-numeric", {"NumericNotEquals": {DEPT: [1, 2]}}, "2.0", IMPLICIT),
    ("request-list-any-matches", {"StringEquals": {DEPT: "2"}}, ["1", "2"], ALLOW),
    ("request-list-none-matches", {"StringEquals": {DEPT: "2"}}, ["3", "4"], IMPLICIT),
    ("request-tuple-ip", {"IpAddress": {IP: "10.0.0.0/8"}}, ("8.8.8.8", "10.0.0.1"), ALLOW),
    ("request-set", {"StringEquals": {DEPT: "2"}}, {"2"}, ALLOW),
    ("request-list-numeric", {"NumericLessThan": {DEPT: 5}}, [10, 3], ALLOW),
    ("request-list-bad-and-good", {"NumericEquals": {DEPT: 5}}, ["five", 5], ALLOW),
    ("request-list-vs-negated-one-hit", {"StringNotEquals": {DEPT: "2"}}, ["1", "2"], IMPLICIT),
    ("request-list-vs-negated-no-hit", {"StringNotEquals": {DEPT: "2"}}, ["1", "3"], ALLOW),
    ("request-empty-list-positive", {"StringEquals": {DEPT: "2"}}, [], IMPLICIT),
    ("request-empty-list-negated", {"StringNotEquals": {DEPT: "2"}}, [], ALLOW),
    ("request-list-both-lists", {"StringEquals": {DEPT: ["5", "6"]}}, ["1", "6"], ALLOW),
]


@pytest.mark.parametrize(
    ("condition", "request_value", "expected"),
    [case[1:] for case in MULTI_VALUE_CASES],
    ids=[case[0] for case in MULTI_VALUE_CASES],
)
def test_multiple_values(condition: dict[str, Any], request_value: Any, expected: str) -> None:
    (block,) = condition.values()
    (key,) = block
    assert decide_condition(condition, {key: request_value}) == expected


# --------------------------------------------------------------------------------------------
# AND across keys and across operators

AND_CONDITION = {"StringEquals": {DEPT: "7"}, "Bool": {SECURE: True, MFA: True}}
RANGE_CONDITION = {"NumericGreaterThanEquals": {DEPT: 5}, "NumericLessThan": {DEPT: 10}}


@pytest.mark.parametrize(
    ("condition", "context", "expected"),
    [
        (AND_CONDITION, {DEPT: "7", SECURE: True, MFA: True}, ALLOW),
        (AND_CONDITION, {DEPT: "8", SECURE: True, MFA: True}, IMPLICIT),
        (AND_CONDITION, {DEPT: "7", SECURE: False, MFA: True}, IMPLICIT),
        (AND_CONDITION, {DEPT: "7", SECURE: True, MFA: False}, IMPLICIT),
        (AND_CONDITION, {DEPT: "7", SECURE: True}, IMPLICIT),
        (RANGE_CONDITION, {DEPT: 7}, ALLOW),
        (RANGE_CONDITION, {DEPT: 5}, ALLOW),
        (RANGE_CONDITION, {DEPT: 10}, IMPLICIT),
        (RANGE_CONDITION, {DEPT: 4}, IMPLICIT),
    ],
    ids=[
        "all-true",
        "operator-1-false",
        "operator-2-key-1-false",
        "operator-2-key-2-false",
        "operator-2-key-2-missing",
        "range-inside",
        "range-lower-bound",
        "range-upper-bound-excluded",
        "range-below",
    ],
)
def test_and_across_keys_and_operators(condition: dict[str, Any], context: dict[str, Any], expected: str) -> None:
    assert decide_condition(condition, context) == expected


# --------------------------------------------------------------------------------------------
# Wildcards, case and NotAction / NotResource

ACTION_CASES = [
    # (id, policy action, requested action, matches?)
    ("star-service", "keys:*", "keys:CreateKey", True),
    ("star-service-other", "keys:*", "usage:QueryUsage", False),
    ("star-everything", "*", "aicontent:ModelRouterQueryCostModelDetail", True),
    ("star-empty-run", "keys:Create*Key", "keys:CreateKey", True),
    ("star-crosses-colon", "k*Key", "keys:CreateKey", True),
    ("star-prefix", "*:List*", "keys:ListKeys", True),
    ("question-one-char", "keys:?reateKey", "keys:CreateKey", True),
    ("question-not-zero-chars", "keys:?reateKey", "keys:reateKey", False),
    ("question-not-two-chars", "keys:?reateKey", "keys:XCreateKey", False),
    ("exact", "keys:CreateKey", "keys:CreateKey", True),
    ("exact-is-not-prefix", "keys:Create", "keys:CreateKey", False),
    ("case-insensitive-exact", "keys:CreateKey", "KEYS:createkey", True),
    ("case-insensitive-wildcard", "Keys:Create*", "keys:createKEY", True),
    ("case-insensitive-lower-policy", "keys:listkeys", "keys:ListKeys", True),
    ("dot-is-literal", "keys.CreateKey", "keysXCreateKey", False),
    ("many-stars", "*e*e*e*y", "keys:CreateKey", True),
    ("many-stars-miss", "*e*e*e*e*e*y", "keys:CreateKey", False),
]


@pytest.mark.parametrize(
    ("pattern", "requested", "matches"), [c[1:] for c in ACTION_CASES], ids=[c[0] for c in ACTION_CASES]
)
def test_action_patterns(pattern: str, requested: str, matches: bool) -> None:
    assert decide(statement(action=pattern), action=requested) == (ALLOW if matches else IMPLICIT)


RESOURCE_CASES = [
    ("star-id", "acs:keys:*:42:apikey/*", "acs:keys:*:42:apikey/17", True),
    ("star-id-other-org", "acs:keys:*:42:apikey/*", "acs:keys:*:43:apikey/17", False),
    ("star-crosses-colon-and-slash", "acs:keys:*", "acs:keys:*:42:apikey/17", True),
    ("question", "acs:keys:*:42:apikey/1?", "acs:keys:*:42:apikey/17", True),
    ("question-needs-a-char", "acs:keys:*:42:apikey/1?", "acs:keys:*:42:apikey/1", False),
    ("case-sensitive", "acs:keys:*:42:APIKEY/17", "acs:keys:*:42:apikey/17", False),
    ("case-sensitive-wildcard", "acs:keys:*:42:ApiKey/*", "acs:keys:*:42:apikey/17", False),
    ("request-star-is-literal", "acs:usage:*:42:department/5", "acs:usage:*:42:department/*", False),
    ("request-star-vs-policy-star", "acs:usage:*:42:department/*", "acs:usage:*:42:department/*", True),
    ("regex-chars-literal", "acs:keys:*:42:apikey/(1)", "acs:keys:*:42:apikey/1", False),
    ("regex-chars-exact", "acs:keys:*:42:apikey/(1)+", "acs:keys:*:42:apikey/(1)+", True),
    ("newline-in-request", "acs:keys:*", "acs:keys:*:42:apikey/1\n7", True),
]


@pytest.mark.parametrize(
    ("pattern", "requested", "matches"), [c[1:] for c in RESOURCE_CASES], ids=[c[0] for c in RESOURCE_CASES]
)
def test_resource_patterns(pattern: str, requested: str, matches: bool) -> None:
    assert decide(statement(resource=pattern), resource=requested) == (ALLOW if matches else IMPLICIT)


def test_pattern_lists_are_ored() -> None:
    allow = statement(action=["usage:*", "keys:ListKeys"], resource=["acs:keys:*:1:*", "acs:keys:*:42:*"])
    assert decide(allow, action="keys:listkeys") == ALLOW
    assert decide(allow, action="keys:DeleteKey") == IMPLICIT
    assert decide(allow, action="keys:ListKeys", resource="acs:keys:*:7:apikey/1") == IMPLICIT


NOT_CASES = [
    # (id, statements, action, resource, expected)
    (
        "not-action-other-action-allowed",
        [{"Effect": "Allow", "NotAction": "keys:DeleteKey", "Resource": "*"}],
        "keys:CreateKey",
        RESOURCE,
        ALLOW,
    ),
    (
        "not-action-listed-action-case-insensitive",
        [{"Effect": "Allow", "NotAction": "keys:DeleteKey", "Resource": "*"}],
        "KEYS:deletekey",
        RESOURCE,
        IMPLICIT,
    ),
    (
        "not-action-list-none-match",
        [{"Effect": "Allow", "NotAction": ["keys:*", "billing:*"], "Resource": "*"}],
        "usage:QueryUsage",
        RESOURCE,
        ALLOW,
    ),
    (
        "not-action-list-wildcard-matches",
        [{"Effect": "Allow", "NotAction": ["keys:*", "billing:*"], "Resource": "*"}],
        "billing:GetInvoice",
        RESOURCE,
        IMPLICIT,
    ),
    (
        "not-resource-other-resource",
        [{"Effect": "Allow", "Action": "*", "NotResource": "acs:keys:*:42:apikey/1"}],
        ACTION,
        "acs:keys:*:42:apikey/2",
        ALLOW,
    ),
    (
        "not-resource-listed-resource",
        [{"Effect": "Allow", "Action": "*", "NotResource": "acs:keys:*:42:apikey/1"}],
        ACTION,
        "acs:keys:*:42:apikey/1",
        IMPLICIT,
    ),
    (
        "not-resource-is-case-sensitive",
        [{"Effect": "Allow", "Action": "*", "NotResource": "acs:keys:*:42:apikey/*"}],
        ACTION,
        "acs:keys:*:42:APIKEY/1",
        ALLOW,
    ),
    (
        "deny-not-action-denies-everything-else",
        [statement(), {"Effect": "Deny", "NotAction": "usage:*", "Resource": "*"}],
        "keys:CreateKey",
        RESOURCE,
        EXPLICIT,
    ),
    (
        "deny-not-action-spares-listed",
        [statement(), {"Effect": "Deny", "NotAction": "usage:*", "Resource": "*"}],
        "usage:QueryUsage",
        RESOURCE,
        ALLOW,
    ),
    (
        "not-action-and-not-resource",
        [{"Effect": "Allow", "NotAction": "keys:*", "NotResource": "acs:keys:*"}],
        "usage:QueryUsage",
        "acs:usage:*:42:department/*",
        ALLOW,
    ),
]


@pytest.mark.parametrize(
    ("statements", "action", "resource", "expected"), [c[1:] for c in NOT_CASES], ids=[c[0] for c in NOT_CASES]
)
def test_not_action_and_not_resource(
    statements: list[dict[str, Any]], action: str, resource: str, expected: str
) -> None:
    assert decide(*statements, action=action, resource=resource) == expected


@pytest.mark.parametrize(
    ("action", "resource"),
    [(None, RESOURCE), (ACTION, None), (42, RESOURCE), (ACTION, b"acs:keys")],
    ids=["action-none", "resource-none", "action-int", "resource-bytes"],
)
def test_non_string_action_or_resource_is_denied(action: Any, resource: Any) -> None:
    not_statement = {"Effect": "Allow", "NotAction": "keys:DeleteKey", "NotResource": "acs:nothing"}
    assert decide(statement(), not_statement, action=action, resource=resource) == IMPLICIT


# --------------------------------------------------------------------------------------------
# Decisions and the statements reported

ALLOW_ALL = Policy("allow-all", document(statement(Sid="AllowAll")))
DENY_DELETE = Policy(
    "deny-delete",
    document(
        statement(action="keys:ListKeys", Sid="NotThisOne"),
        statement("Deny", action="keys:DeleteKey", Sid="NoDelete"),
        statement("Deny", action="keys:*", resource="acs:keys:*:42:*"),
    ),
)
ALLOW_KEYS = Policy("allow-keys", document(statement(action="keys:*"), statement(action="*:*Key")))
IP_DENY = Policy(
    "ip-deny",
    document(statement("Deny", Condition={"NotIpAddress": {IP: "10.0.0.0/8"}}, Sid="OfficeOnly")),
)

DECISION_CASES = [
    # (id, policies, request, expected decision)
    ("no-policies", [], AccessRequest(ACTION, RESOURCE), Decision(IMPLICIT, ())),
    (
        "no-matching-statement",
        [ALLOW_KEYS],
        AccessRequest("usage:QueryUsage", RESOURCE),
        Decision(IMPLICIT, ()),
    ),
    (
        "allow-reports-every-matching-allow",
        [ALLOW_KEYS],
        AccessRequest("keys:CreateKey", RESOURCE),
        Decision(
            ALLOW,
            (
                MatchedStatement("allow-keys", 0, None, "Allow"),
                MatchedStatement("allow-keys", 1, None, "Allow"),
            ),
        ),
    ),
    (
        "allow-across-policies-sorted-by-name",
        [ALLOW_KEYS, ALLOW_ALL],
        AccessRequest("keys:ListKeys", "acs:keys:*:7:apikey/1"),
        Decision(
            ALLOW,
            (
                MatchedStatement("allow-all", 0, "AllowAll", "Allow"),
                MatchedStatement("allow-keys", 0, None, "Allow"),
            ),
        ),
    ),
    (
        "deny-in-one-policy-beats-allow-in-another",
        [ALLOW_ALL, DENY_DELETE],
        AccessRequest("keys:DeleteKey", "acs:keys:*:7:apikey/1"),
        Decision(EXPLICIT, (MatchedStatement("deny-delete", 1, "NoDelete", "Deny"),)),
    ),
    (
        "deny-reports-every-matching-deny-and-no-allow",
        [DENY_DELETE, ALLOW_ALL],
        AccessRequest("keys:DeleteKey", "acs:keys:*:42:apikey/1"),
        Decision(
            EXPLICIT,
            (
                MatchedStatement("deny-delete", 1, "NoDelete", "Deny"),
                MatchedStatement("deny-delete", 2, None, "Deny"),
            ),
        ),
    ),
    (
        "deny-beats-allow-in-same-policy",
        [DENY_DELETE],
        AccessRequest("keys:ListKeys", "acs:keys:*:42:apikey/1"),
        Decision(EXPLICIT, (MatchedStatement("deny-delete", 2, None, "Deny"),)),
    ),
    (
        "deny-that-does-not-apply-leaves-allow",
        [DENY_DELETE],
        AccessRequest("keys:ListKeys", "acs:keys:*:7:apikey/1"),
        Decision(ALLOW, (MatchedStatement("deny-delete", 0, "NotThisOne", "Allow"),)),
    ),
    (
        "deny-only-policy-never-allows",
        [IP_DENY],
        AccessRequest(ACTION, RESOURCE, {IP: "10.0.0.1"}),
        Decision(IMPLICIT, ()),
    ),
    (
        "conditional-deny-applies-outside-office",
        [ALLOW_ALL, IP_DENY],
        AccessRequest(ACTION, RESOURCE, {IP: "8.8.8.8"}),
        Decision(EXPLICIT, (MatchedStatement("ip-deny", 0, "OfficeOnly", "Deny"),)),
    ),
    (
        "conditional-deny-applies-without-source-ip",
        [ALLOW_ALL, IP_DENY],
        AccessRequest(ACTION, RESOURCE),
        Decision(EXPLICIT, (MatchedStatement("ip-deny", 0, "OfficeOnly", "Deny"),)),
    ),
    (
        "conditional-deny-spares-office",
        [ALLOW_ALL, IP_DENY],
        AccessRequest(ACTION, RESOURCE, {IP: "10.2.3.4"}),
        Decision(ALLOW, (MatchedStatement("allow-all", 0, "AllowAll", "Allow"),)),
    ),
]


@pytest.mark.parametrize(
    ("policies", "request_", "expected"), [c[1:] for c in DECISION_CASES], ids=[c[0] for c in DECISION_CASES]
)
def test_decisions(policies: list[Policy], request_: AccessRequest, expected: Decision) -> None:
    decision = evaluate(policies, request_)
    assert decision == expected
    assert decision.allowed is (expected.effect == ALLOW)
    compiled = [compile_policy(policy) for policy in policies]
    assert evaluate(compiled, request_) == expected
    assert evaluate(reversed(compiled), request_) == expected


@pytest.mark.parametrize(
    ("effect", "allowed"),
    [(ALLOW, True), (IMPLICIT, False), (EXPLICIT, False)],
    ids=["allow", "implicit-deny", "explicit-deny"],
)
def test_decision_allowed_property(effect: str, allowed: bool) -> None:
    assert Decision(effect, ()).allowed is allowed


# --------------------------------------------------------------------------------------------
# Compilation and caching


def test_compile_policy_returns_compiled_policy_with_the_name() -> None:
    compiled = compile_policy(ALLOW_KEYS)
    assert isinstance(compiled, CompiledPolicy)
    assert compiled.name == "allow-keys"
    assert compile_policy(compiled) is compiled


def test_cache_follows_document_content_not_identity() -> None:
    doc = document(statement(action="keys:ListKeys"))
    request = AccessRequest("keys:ListKeys", RESOURCE)
    assert evaluate([Policy("p", doc)], request).effect == ALLOW
    doc["Statement"][0]["Effect"] = "Deny"
    assert evaluate([Policy("p", doc)], request).effect == EXPLICIT
    assert evaluate([Policy("p", copy.deepcopy(doc))], request).effect == EXPLICIT


def test_same_document_under_two_names_reports_each_name() -> None:
    doc = document(statement())
    decision = evaluate([Policy("b", doc), Policy("a", copy.deepcopy(doc))], AccessRequest(ACTION, RESOURCE))
    assert [m.policy for m in decision.matched] == ["a", "b"]


@pytest.mark.parametrize(
    "bad_document",
    [
        {"Version": "1", "Statement": []},
        {"Version": "1", "Statement": [{"Effect": "Allow", "Action": "*"}]},
        {"Version": "1", "Statement": [statement(Condition={"NumericEquals": {DEPT: "x"}})]},
        {"Version": "1", "Statement": [statement(Condition={"NumericEquals": {DEPT: Decimal(1)}})]},
    ],
    ids=["empty-statement", "missing-resource", "bad-numeric", "non-json-value"],
)
def test_compile_and_evaluate_reject_malformed_documents(bad_document: dict[str, Any]) -> None:
    with pytest.raises(PolicyValidationError):
        compile_policy(Policy("bad", bad_document))
    with pytest.raises(PolicyValidationError):
        evaluate([Policy("bad", bad_document)], AccessRequest(ACTION, RESOURCE))


def test_compile_does_not_check_the_key_vocabulary_or_size() -> None:
    custom = document(statement(Condition={"StringEquals": {"usage:Region": "eu"}}, Sid="x" * 7000))
    policy = Policy("custom", custom)
    assert evaluate([policy], AccessRequest(ACTION, RESOURCE, {"usage:region": "eu"})).effect == ALLOW
    assert evaluate([policy], AccessRequest(ACTION, RESOURCE, {"usage:region": "us"})).effect == IMPLICIT


# --------------------------------------------------------------------------------------------
# Validator: accepted documents

FULL_DOCUMENT = {
    "Version": "1",
    "Statement": [
        {
            "Sid": "ReadUsage",
            "Effect": "Allow",
            "Action": ["usage:QueryUsage", "aicontent:ModelRouterQueryCostModelDetail"],
            "Resource": "acs:usage:*:42:department/*",
            "Condition": {
                "IpAddress": {"acs:SourceIp": ["10.0.0.0/8", "2001:db8::/32", "192.168.1.1"]},
                "DateLessThan": {"acs:CurrentTime": ["2030-01-01T00:00:00Z", 1893456000]},
                "DateGreaterThan": {"ACS:CURRENTTIME": "2024-01-01T00:00:00+08:00"},
                "Bool": {"acs:SecureTransport": True, "acs:MFAPresent": "TRUE"},
                "NumericLessThanEquals": {"usage:DepartmentId": ["10", 20, "-1.5e3"]},
                "StringLike": {"usage:DepartmentId": "1*"},
                "StringEquals": {"usage:DepartmentId": [7, True, ""]},
            },
        },
        {"Effect": "Deny", "NotAction": "keys:*", "NotResource": ["acs:keys:*:42:apikey/?"]},
    ],
}


@pytest.mark.parametrize(
    ("good_document", "kwargs"),
    [
        (document(statement()), {}),
        (FULL_DOCUMENT, {}),
        ({"Version": "1", "Statement": (statement(action=("keys:*",)),)}, {}),
        (MappingProxyType({"Version": "1", "Statement": [MappingProxyType(statement())]}), {}),
        (
            document(statement(Condition={"StringEquals": {"usage:Region": "eu"}})),
            {"condition_keys": DEFAULT_CONDITION_KEYS | {"usage:Region"}},
        ),
        (document(statement(Condition={"StringEquals": {"USAGE:REGION": "eu"}})), {"condition_keys": ["usage:region"]}),
        (document(statement(Condition={})), {}),
        (document(statement(Condition={"NumericEquals": {DEPT: "+.5"}})), {}),
    ],
    ids=[
        "minimal",
        "every-feature",
        "tuples",
        "mapping-proxies",
        "extended-key-vocabulary",
        "custom-key-case-insensitive",
        "empty-condition",
        "numeric-leading-dot",
    ],
)
def test_validator_accepts_good_documents(good_document: Any, kwargs: dict[str, Any]) -> None:
    validate_policy_document(good_document, **kwargs)
    compile_policy(Policy("good", good_document))


def _document_of_size(size: int) -> dict[str, Any]:
    doc = document(statement(Sid=""))
    overhead = len(json.dumps(doc, separators=(",", ":")))
    doc["Statement"][0]["Sid"] = "s" * (size - overhead)
    assert len(json.dumps(doc, separators=(",", ":"))) == size
    return doc


def test_document_at_the_size_limit_is_accepted_and_one_more_character_is_not() -> None:
    validate_policy_document(_document_of_size(MAX_POLICY_DOCUMENT_CHARS))
    errors = validation_errors(_document_of_size(MAX_POLICY_DOCUMENT_CHARS + 1))
    assert errors == [
        f"document: is {MAX_POLICY_DOCUMENT_CHARS + 1} characters as compact JSON, over the limit of 6144"
    ]


def test_size_counts_characters_not_escapes() -> None:
    doc = _document_of_size(MAX_POLICY_DOCUMENT_CHARS)
    doc["Statement"][0]["Sid"] = "é" * len(doc["Statement"][0]["Sid"])
    validate_policy_document(doc)


# --------------------------------------------------------------------------------------------
# Validator: rejected documents, one problem each


def with_statement(**fields: Any) -> dict[str, Any]:
    return document({"Effect": "Allow", "Action": "*", "Resource": "*", **fields})


def with_condition(condition: Any) -> dict[str, Any]:
    return with_statement(Condition=condition)


def without(key: str) -> dict[str, Any]:
    doc = with_statement()
    del doc["Statement"][0][key]
    return doc


S0 = "Statement[0]"
C0 = "Statement[0].Condition"
ALLOW_OR_DENY = 'must be "Allow" or "Deny"'
NOT_SCALAR = "must be a string, integer or boolean"
NOT_DATE = "not an ISO 8601 date-time or integer Unix timestamp"
NOT_IP = "not an IP address or CIDR block"
NOT_BOOL = "not a boolean (true or false)"
NOT_BLOCK = "must be a non-empty object mapping condition keys to values"

BAD_DOCUMENTS = [
    # (id, document, the one expected message)
    ("not-an-object", ["Statement"], "document: must be an object, not list"),
    ("version-wrong", {"Version": "2", "Statement": [statement()]}, "Version: must be the string \"1\", not '2'"),
    ("version-int", {"Version": 1, "Statement": [statement()]}, 'Version: must be the string "1", not 1'),
    ("version-missing", {"Statement": [statement()]}, "Version: missing"),
    ("extra-top-level-key", {**document(statement()), "Id": "x"}, "Id: unknown top-level key"),
    ("statement-missing", {"Version": "1"}, "Statement: missing"),
    (
        "statement-single-object",
        {"Version": "1", "Statement": statement()},
        "Statement: must be a list of statement objects, not dict",
    ),
    ("statement-empty", {"Version": "1", "Statement": []}, "Statement: must not be empty"),
    (
        "statement-not-object",
        {"Version": "1", "Statement": [statement(), "Allow"]},
        "Statement[1]: must be an object, not str",
    ),
    ("effect-lower-case", with_statement(Effect="allow"), f"{S0}.Effect: {ALLOW_OR_DENY}, not 'allow'"),
    ("effect-list", with_statement(Effect=["Allow"]), f"{S0}.Effect: {ALLOW_OR_DENY}, not ['Allow']"),
    ("effect-missing", without("Effect"), f"{S0}.Effect: missing"),
    (
        "action-and-not-action",
        with_statement(NotAction="keys:*"),
        f"{S0}: has both Action and NotAction; exactly one is allowed",
    ),
    ("neither-action", without("Action"), f"{S0}: needs exactly one of Action or NotAction"),
    (
        "resource-and-not-resource",
        with_statement(NotResource="acs:*"),
        f"{S0}: has both Resource and NotResource; exactly one is allowed",
    ),
    ("neither-resource", without("Resource"), f"{S0}: needs exactly one of Resource or NotResource"),
    ("action-non-string-item", with_statement(Action=["keys:*", 5]), f"{S0}.Action[1]: must be a string, not int"),
    (
        "resource-non-string",
        with_statement(Resource=5),
        f"{S0}.Resource: must be a string or a list of strings, not int",
    ),
    (
        "resource-dict",
        with_statement(Resource={"a": 1}),
        f"{S0}.Resource: must be a string or a list of strings, not dict",
    ),
    ("action-empty-list", with_statement(Action=[]), f"{S0}.Action: must not be an empty list"),
    (
        "not-resource-empty-list",
        document({"Effect": "Deny", "Action": "*", "NotResource": []}),
        f"{S0}.NotResource: must not be an empty list",
    ),
    ("action-empty-string", with_statement(Action=""), f"{S0}.Action: must not be an empty string"),
    (
        "resource-empty-string-item",
        with_statement(Resource=["acs:*", ""]),
        f"{S0}.Resource[1]: must not be an empty string",
    ),
    ("sid-not-string", with_statement(Sid=3), f"{S0}.Sid: must be a string"),
    ("unknown-statement-key", with_statement(Principal="*"), f"{S0}.Principal: unknown key"),
    (
        "condition-not-object",
        with_condition(["IpAddress"]),
        f"{C0}: must be an object mapping operators to conditions",
    ),
    (
        "unknown-operator-second-statement",
        document(statement(), statement(Condition={"StringEqualz": {DEPT: "7"}})),
        "Statement[1].Condition.StringEqualz: unknown operator",
    ),
    ("operator-wrong-case", with_condition({"stringequals": {DEPT: "7"}}), f"{C0}.stringequals: unknown operator"),
    (
        "operator-if-exists",
        with_condition({"StringEqualsIfExists": {DEPT: "7"}}),
        f"{C0}.StringEqualsIfExists: unknown operator",
    ),
    ("operator-block-empty", with_condition({"StringEquals": {}}), f"{C0}.StringEquals: {NOT_BLOCK}"),
    ("operator-block-list", with_condition({"StringEquals": [DEPT]}), f"{C0}.StringEquals: {NOT_BLOCK}"),
    (
        "unknown-condition-key",
        with_condition({"StringEquals": {"acs:UserAgent": "curl"}}),
        f"{C0}.StringEquals.acs:UserAgent: unknown condition key",
    ),
    (
        "non-string-condition-key",
        with_condition({"StringEquals": {7: "curl"}}),
        f"{C0}.StringEquals.7: condition key must be a string",
    ),
    (
        "numeric-not-a-number",
        with_condition({"NumericEquals": {DEPT: "abc"}}),
        f"{C0}.NumericEquals.{DEPT}: not a number: 'abc'",
    ),
    (
        "numeric-second-bad",
        with_condition({"NumericEquals": {DEPT: [1, "1_000"]}}),
        f"{C0}.NumericEquals.{DEPT}[1]: not a number: '1_000'",
    ),
    (
        "numeric-nan",
        with_condition({"NumericLessThan": {DEPT: "NaN"}}),
        f"{C0}.NumericLessThan.{DEPT}: not a number: 'NaN'",
    ),
    (
        "numeric-bool",
        with_condition({"NumericEquals": {DEPT: True}}),
        f"{C0}.NumericEquals.{DEPT}: not a number: True",
    ),
    (
        "numeric-float",
        with_condition({"NumericEquals": {DEPT: 1.5}}),
        f"{C0}.NumericEquals.{DEPT}: {NOT_SCALAR}, not float",
    ),
    (
        "date-unparsable",
        with_condition({"DateLessThan": {TIME: "2025-13-01"}}),
        f"{C0}.DateLessThan.{TIME}: {NOT_DATE}: '2025-13-01'",
    ),
    (
        "date-words",
        with_condition({"DateEquals": {TIME: ["2025-01-01", "tomorrow"]}}),
        f"{C0}.DateEquals.{TIME}[1]: {NOT_DATE}: 'tomorrow'",
    ),
    (
        "cidr-prefix-too-long",
        with_condition({"IpAddress": {IP: "10.0.0.0/33"}}),
        f"{C0}.IpAddress.{IP}: {NOT_IP}: '10.0.0.0/33'",
    ),
    (
        "cidr-bad-octet",
        with_condition({"NotIpAddress": {IP: ["10.0.0.0/8", "300.1.1.0/24"]}}),
        f"{C0}.NotIpAddress.{IP}[1]: {NOT_IP}: '300.1.1.0/24'",
    ),
    ("ip-as-int", with_condition({"IpAddress": {IP: 167772160}}), f"{C0}.IpAddress.{IP}: {NOT_IP}: 167772160"),
    (
        "ipv6-prefix-too-long",
        with_condition({"IpAddress": {IP: "2001:db8::/129"}}),
        f"{C0}.IpAddress.{IP}: {NOT_IP}: '2001:db8::/129'",
    ),
    ("bool-yes", with_condition({"Bool": {SECURE: "yes"}}), f"{C0}.Bool.{SECURE}: {NOT_BOOL}: 'yes'"),
    ("bool-int", with_condition({"Bool": {MFA: 1}}), f"{C0}.Bool.{MFA}: {NOT_BOOL}: 1"),
    (
        "value-none",
        with_condition({"StringEquals": {DEPT: None}}),
        f"{C0}.StringEquals.{DEPT}: {NOT_SCALAR}, not NoneType",
    ),
    (
        "value-nested-list",
        with_condition({"StringEquals": {DEPT: [["7"]]}}),
        f"{C0}.StringEquals.{DEPT}[0]: {NOT_SCALAR}, not list",
    ),
    (
        "value-dict",
        with_condition({"StringLike": {DEPT: {"a": "b"}}}),
        f"{C0}.StringLike.{DEPT}: {NOT_SCALAR}, not dict",
    ),
    (
        "value-empty-list",
        with_condition({"StringEquals": {DEPT: []}}),
        f"{C0}.StringEquals.{DEPT}: must not be an empty list",
    ),
]


@pytest.mark.parametrize(("bad_document", "message"), [c[1:] for c in BAD_DOCUMENTS], ids=[c[0] for c in BAD_DOCUMENTS])
def test_validator_rejects_bad_shapes_naming_the_path(bad_document: Any, message: str) -> None:
    assert validation_errors(bad_document) == [message]


def test_validator_reports_every_problem_in_document_order() -> None:
    bad = {
        "Version": "2",
        "Statement": [
            {"Effect": "Allow", "Action": [], "Resource": "*"},
            {
                "Effect": "Permit",
                "Action": "*",
                "NotResource": "*",
                "Condition": {"StringEqualz": {DEPT: "7"}, "IpAddress": {"acs:Foo": "10.0.0.0/99"}},
            },
        ],
    }
    assert validation_errors(bad) == [
        "Version: must be the string \"1\", not '2'",
        "Statement[0].Action: must not be an empty list",
        'Statement[1].Effect: must be "Allow" or "Deny", not \'Permit\'',
        "Statement[1].Condition.StringEqualz: unknown operator",
        "Statement[1].Condition.IpAddress.acs:Foo: unknown condition key",
        "Statement[1].Condition.IpAddress.acs:Foo: not an IP address or CIDR block: '10.0.0.0/99'",
    ]


def test_oversized_document_is_reported_with_other_problems() -> None:
    doc = _document_of_size(MAX_POLICY_DOCUMENT_CHARS + 10)
    doc["Statement"][0]["Effect"] = "Maybe"
    size = len(json.dumps(doc, separators=(",", ":")))
    assert validation_errors(doc) == [
        'Statement[0].Effect: must be "Allow" or "Deny", not \'Maybe\'',
        f"document: is {size} characters as compact JSON, over the limit of {MAX_POLICY_DOCUMENT_CHARS}",
    ]


def test_custom_vocabulary_replaces_the_default() -> None:
    doc = with_condition({"IpAddress": {IP: "10.0.0.0/8"}})
    errors = validation_errors(doc, condition_keys={"usage:Region"})
    assert errors == ["Statement[0].Condition.IpAddress.acs:SourceIp: unknown condition key"]


def test_validation_error_is_a_value_error_whose_message_lists_the_problems() -> None:
    with pytest.raises(ValueError, match=r"Version: missing; Statement: missing"):
        validate_policy_document({})


def test_condition_keys_given_as_a_single_string_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        validate_policy_document(document(statement()), condition_keys="acs:SourceIp")


def test_default_condition_keys_are_the_documented_five() -> None:
    assert DEFAULT_CONDITION_KEYS == {
        "acs:SourceIp",
        "acs:CurrentTime",
        "acs:SecureTransport",
        "acs:MFAPresent",
        "usage:DepartmentId",
    }

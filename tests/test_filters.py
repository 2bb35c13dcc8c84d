"""The UI's structured filter: what it reads, and the message (problem and where) of what it cannot read."""
from __future__ import annotations

import pytest

from cmf_core.server.filters import Compare, FilterError, Logical, Not, parse


@pytest.mark.parametrize("text, tree", [
    ("lr > 0.01", Compare("lr", ">", 0.01)),
    ("epochs >= 10", Compare("epochs", ">=", 10)),
    ("loss<-1.5e-3", Compare("loss", "<", -1.5e-3)),
    ("n != .5", Compare("n", "!=", 0.5)),
    ("stage == train", Compare("stage", "=", "train")),
    ("param.lr <= 1", Compare("param.lr", "<=", 1)),
    ("done = TRUE", Compare("done", "=", True)),
    ("done = false", Compare("done", "=", False)),
    ("name ~ 'a b'", Compare("name", "~", "a b")),
    ('name = "it\\"s"', Compare("name", "=", 'it"s')),
    ("name = '1'", Compare("name", "=", "1")),  # quoted: text, not a number
    ("`my metric (val)` > 3", Compare("my metric (val)", ">", 3)),
    ("`and` = or", Compare("and", "=", "or")),
    ("a = 1 and b = 2", Logical("and", (Compare("a", "=", 1), Compare("b", "=", 2)))),
    ("a = 1 OR b = 2 or c = 3", Logical("or", (Compare("a", "=", 1), Compare("b", "=", 2), Compare("c", "=", 3)))),
    ("a = 1 or b = 2 and c = 3",  # and binds tighter
     Logical("or", (Compare("a", "=", 1), Logical("and", (Compare("b", "=", 2), Compare("c", "=", 3)))))),
    ("(a = 1 or b = 2) and c = 3",
     Logical("and", (Logical("or", (Compare("a", "=", 1), Compare("b", "=", 2))), Compare("c", "=", 3)))),
    ("not a = 1", Not(Compare("a", "=", 1))),
    ("NOT (a = 1 and not b ~ x)", Not(Logical("and", (Compare("a", "=", 1), Not(Compare("b", "~", "x")))))),
    ("  ((a=1))  ", Compare("a", "=", 1)),
])
def test_valid_filters(text, tree):
    assert parse(text) == tree


@pytest.mark.parametrize("text, names", [
    ("", ["empty"]),
    ("   ", ["empty"]),
    ("lr", ["operator", "'lr'", "at the end"]),
    ("lr 0.1", ["operator", "position 4"]),
    ("lr >", ["value", "at the end"]),
    ("lr > )", ["value", "position 6"]),
    ("> 1", ["column name", "position 1", "'>'"]),
    ("1x = 2", ["column name", "position 1", "'1x'"]),
    ("'lr' = 2", ["column name", "position 1"]),
    ("(a = 1", ["')'", "at the end"]),
    ("a = 1)", ["unexpected", "')'", "position 6"]),
    ("a = 1 b = 2", ["unexpected", "'b'", "position 7", "and/or"]),
    ("a = 1 and", ["ends"]),
    ("a = 1 or or b = 2", ["column name", "'or'"]),
    ("not", ["ends"]),
    ("a = 'open", ["unexpected", "position 5"]),
    ("a = `b", ["unexpected", "position 5"]),
    ("a = 1 and b =! 2", ["unexpected", "'!'", "position 14"]),
    ("x = " + "1" * 2000, ["longer than 2000"]),
])
def test_malformed_filters_name_the_problem(text, names):
    with pytest.raises(FilterError) as caught:
        parse(text)
    for name in names:
        assert name in str(caught.value), (text, str(caught.value))

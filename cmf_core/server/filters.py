"""The structured filter of the UI's tables: ``lr > 0.01 and stage = train``, parsed into a tree.

Grammar (keywords case-insensitive)::

    expr       := term ('or' term)*
    term       := factor ('and' factor)*
    factor     := 'not' factor | '(' expr ')' | column OP value
    column     := name ([A-Za-z_][\\w.-]*) or `any text`
    OP         := = | == | != | < | <= | > | >= | ~      (~ : contains, case-insensitive)
    value      := number | true | false | 'text' | "text" | bare word

A malformed filter raises :class:`FilterError` whose message names the problem and where it is; the
read path (:mod:`cmf_core.server.reads`) turns the tree into SQL and names unknown columns.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, List, Tuple, Union

from cmf_core.errors import CmfError

__all__ = ["FilterError", "Compare", "Logical", "Not", "Node", "parse"]

MAX_DEPTH = 32  # nested not / parentheses (SQLite's parser gives up near 100)
OPERATORS = ("<=", ">=", "!=", "==", "=", "<", ">", "~")
_TOKEN = re.compile(r"""\s*(?:
    (?P<op><=|>=|!=|==|=|<|>|~)
  | (?P<paren>[()])
  | (?P<quoted>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<column>`[^`]+`)
  | (?P<word>[^\s()<>=!~'"`]+)
  | (?P<bad>\S)
)""", re.VERBOSE)
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
_NAME = re.compile(r"[A-Za-z_][\w.\-]*$")

Value = Union[str, int, float, bool]


class FilterError(CmfError):
    """A filter that cannot be read; the message says what is wrong and where (HTTP 400)."""

    exit_code = 2


@dataclass(frozen=True)
class Compare:
    column: str
    op: str  # one of OPERATORS, "==" read as "="
    value: Value
    text: str = field(default="", compare=False)  # the value as typed (unquoted): what a text column is compared with


@dataclass(frozen=True)
class Logical:
    op: str  # "and" | "or"
    parts: Tuple["Node", ...]


@dataclass(frozen=True)
class Not:
    part: "Node"


Node = Union[Compare, Logical, Not]


def _tokens(text: str) -> List[Tuple[str, str, int]]:
    out = []
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup
        if kind is None:
            continue
        token = match.group(kind)
        if kind == "bad":
            raise FilterError(f"unexpected {token!r} at position {match.start(kind) + 1}")
        out.append((kind, token, match.start(kind) + 1))
    return out


def _text(kind: str, token: str) -> str:
    """A value token as text: a quoted one without its quotes and escapes, a bare word as it is."""
    return re.sub(r"\\(.)", r"\1", token[1:-1]) if kind == "quoted" else token


def _value(kind: str, token: str) -> Value:
    if kind == "quoted":
        return _text(kind, token)
    if token.lower() in ("true", "false"):
        return token.lower() == "true"
    if _NUMBER.match(token):
        number = float(token)
        if re.fullmatch(r"[-+]?\d+", token) and -2 ** 63 <= int(token) < 2 ** 63:
            return int(token)
        return number  # beyond 64 bits: compared as a float, as the databases can
    return token


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.at = 0
        self.depth = 0

    def peek(self, lower: bool = True) -> str:
        if self.at >= len(self.tokens):
            return ""
        token = self.tokens[self.at][1]
        return token.lower() if lower else token

    def where(self) -> str:
        return f"at position {self.tokens[self.at][2]}" if self.at < len(self.tokens) else "at the end"

    def take(self) -> Tuple[str, str, int]:
        token = self.tokens[self.at]
        self.at += 1
        return token

    def _chain(self, keyword: str, part: Callable[[], Node]) -> Node:
        """``part`` (``keyword`` ``part``)*, as one node."""
        parts = [part()]
        while self.peek() == keyword:
            self.take()
            parts.append(part())
        return parts[0] if len(parts) == 1 else Logical(keyword, tuple(parts))

    def expr(self) -> Node:
        return self._chain("or", self.term)

    def term(self) -> Node:
        return self._chain("and", self.factor)

    def factor(self) -> Node:
        self.depth += 1
        try:
            return self._factor()
        finally:
            self.depth -= 1

    def _factor(self) -> Node:
        if self.depth > MAX_DEPTH:
            raise FilterError(f"the filter nests 'not' and parentheses deeper than {MAX_DEPTH} {self.where()}")
        if self.at >= len(self.tokens):
            raise FilterError("the filter ends where a condition was expected (column operator value)")
        if self.peek() == "not":
            self.take()
            return Not(self.factor())
        if self.peek() == "(":
            self.take()
            inner = self.expr()
            if self.peek() != ")":
                raise FilterError(f"expected ')' {self.where()}")
            self.take()
            return inner
        kind, token, position = self.take()
        if kind == "column":
            column = token[1:-1]
        elif kind == "word" and _NAME.match(token) and token.lower() not in ("and", "or"):
            column = token
        else:
            raise FilterError(f"expected a column name at position {position}, found {token!r}")
        if self.at >= len(self.tokens) or self.tokens[self.at][0] != "op":
            raise FilterError(f"expected an operator ({' '.join(OPERATORS)}) after {column!r} {self.where()}")
        op = self.take()[1]
        if self.at < len(self.tokens) and self.tokens[self.at][0] == "op":
            position, after, next_position = self.tokens[self.at - 1][2], *self.tokens[self.at][1:]
            typed = op + after if next_position == position + len(op) else f"{op} {after}"
            raise FilterError(f"{typed!r} at position {position} is not an operator; the operators are "
                              f"{' '.join(OPERATORS)}")
        if self.at >= len(self.tokens) or self.tokens[self.at][0] not in ("quoted", "word"):
            raise FilterError(f"expected a value after {column} {op} {self.where()}")
        kind, token, _ = self.take()
        return Compare(column, "=" if op == "==" else op, _value(kind, token), _text(kind, token))


def parse(text: str) -> Node:
    """The tree of a filter; :class:`FilterError` if it is malformed."""
    if len(text) > 2000:
        raise FilterError("the filter is longer than 2000 characters")
    parser = _Parser(text)
    if not parser.tokens:
        raise FilterError("the filter is empty")
    tree = parser.expr()
    if parser.at < len(parser.tokens):
        raise FilterError(f"unexpected {parser.peek(lower=False)!r} {parser.where()} (join conditions with and/or)")
    return tree

"""The ODM files filter and full-text query grammar: checked by the mount, served by the emulator.

The files endpoint documents ``filter`` only as "key-value metadata pair(s)". The emulator gives it
the grammar documented for the sibling samples/studies endpoints and the ODM syntax reference
(spec assumption A15). ``parse_filter`` and ``parse_query`` turn the wire text into a predicate
over one file record (a JSON object such as ``{"genestack:name": "ex1.bam", "tags": ["bam"]}``).
Malformed text raises ``QueryError``, whose one-line message the emulator returns in a 400 body.

Filter grammar (recursive descent over the tokens below; AND binds tighter than OR)::

    filter   := or_expr END
    or_expr  := and_expr ( [OR] and_expr )*      two terms side by side are joined with OR
    and_expr := not_expr ( AND not_expr )*
    not_expr := NOT* primary
    primary  := "(" or_expr ")" | term
    term     := text OP text                     OP is one of  =  !=  <  >
    AND      := "AND" | "&&"      OR := "OR" | "||"      NOT := "NOT"   (words case-insensitive)

Tokens: whitespace separates tokens and is otherwise ignored. ``(``, ``)``, ``&&``, ``||`` and
the operator characters ``= ! < >`` end an unquoted text token, so ``genestack:accession=GSF1``
is three tokens. A text token is unquoted or quoted with ``"``. A backslash escapes the next
character in both kinds; only ``\\"``, ``\\\\``, ``\\*`` and ``\\?`` are escapes, anything else
after a backslash is an error. A ``"`` in the middle of an unquoted token is an error (quote the
whole token). The unquoted words AND, OR and NOT are always keywords; quote them to use them as a
key or value.

Semantics of a term, for the record value ``v`` under ``key`` (``v`` stands for its scalars:
a list contributes its elements, ``None`` and nested objects contribute nothing; numbers are
compared by ``str()`` and booleans as JSON ``true``/``false``):

- ``key=value``: some scalar equals ``value`` exactly and case-sensitively, where an unescaped
  ``*`` in ``value`` matches any run of characters (including none) and ``?`` exactly one.
  Keys never have wildcards.
- ``key!=value``: the negation of ``key=value``; so an absent key matches.
- ``key<number`` / ``key>number``: some scalar is a decimal number (``-1.5``, ``3e2``; no
  ``inf``/``nan``) and the comparison holds. Non-numeric scalars never match; a non-numeric
  literal is a ``QueryError``.

Full-text query: words and ``"quoted phrases"``, with the escapes ``\\"`` and ``\\\\`` (any
other backslash sequence is an error); a ``"`` ends a word and opens a phrase. A record matches
when every word and phrase is a case-insensitive substring of at least one scalar value; keys
are not searched. An empty query matches every record.

Invariants: parsing either consumes the whole input or raises ``QueryError``; error messages
give 1-based character positions; the returned predicates never raise on any JSON record.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeAlias

__all__ = ["Predicate", "QueryError", "parse_filter", "parse_query"]

Predicate: TypeAlias = Callable[[Mapping[str, Any]], bool]
"""A compiled filter or query: true when the file record matches."""

MAX_NESTING = 64
"""Deepest parenthesis nesting accepted, so hostile input cannot exhaust the Python stack."""

_OPERATOR_CHARS = "=!<>"
_FILTER_ESCAPES = frozenset('"\\*?')
_QUERY_ESCAPES = frozenset('"\\')
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


class QueryError(ValueError):
    """Malformed filter or query; ``str(e)`` is a one-line message a user can act on."""


# ---------------------------------------------------------------------------------------------
# Record values


def _scalars(value: Any) -> Iterator[Any]:
    """Yield the scalar values of a JSON value: lists are flattened, None and dicts are skipped."""
    if value is None or isinstance(value, Mapping):
        return
    if isinstance(value, list | tuple):
        for item in value:
            yield from _scalars(item)
    else:
        yield value


def _as_text(scalar: Any) -> str:
    if isinstance(scalar, bool):
        return "true" if scalar else "false"
    return scalar if isinstance(scalar, str) else str(scalar)


def _as_number(scalar: Any) -> float | None:
    """The scalar as a finite float, or None when it is not a decimal number."""
    if isinstance(scalar, bool) or not isinstance(scalar, int | float | str):
        return None
    if isinstance(scalar, str) and not _NUMBER.fullmatch(scalar.strip()):
        return None
    try:
        number = float(scalar)
    except OverflowError:  # an int too large for a float
        return None
    return number if math.isfinite(number) else None


def _texts(record: Mapping[str, Any], key: str) -> Iterator[str]:
    if key in record:
        yield from (_as_text(scalar) for scalar in _scalars(record[key]))


# ---------------------------------------------------------------------------------------------
# Predicates


@dataclass(frozen=True)
class _Equals:
    """``key=value`` (or ``key!=value`` when ``negate``), value compiled to a full-match regex."""

    key: str
    pattern: re.Pattern[str]
    negate: bool

    def __call__(self, record: Mapping[str, Any]) -> bool:
        found = any(self.pattern.fullmatch(text) for text in _texts(record, self.key))
        return found != self.negate


@dataclass(frozen=True)
class _Compare:
    """``key<bound`` or ``key>bound``."""

    key: str
    less: bool
    bound: float

    def __call__(self, record: Mapping[str, Any]) -> bool:
        if self.key not in record:
            return False
        for scalar in _scalars(record[self.key]):
            number = _as_number(scalar)
            if number is not None and (number < self.bound if self.less else number > self.bound):
                return True
        return False


@dataclass(frozen=True)
class _All:
    parts: tuple[Predicate, ...]

    def __call__(self, record: Mapping[str, Any]) -> bool:
        return all(part(record) for part in self.parts)


@dataclass(frozen=True)
class _Any:
    parts: tuple[Predicate, ...]

    def __call__(self, record: Mapping[str, Any]) -> bool:
        return any(part(record) for part in self.parts)


@dataclass(frozen=True)
class _Not:
    inner: Predicate

    def __call__(self, record: Mapping[str, Any]) -> bool:
        return not self.inner(record)


@dataclass(frozen=True)
class _FullText:
    """Every needle (already case-folded) is a substring of some case-folded scalar value."""

    needles: tuple[str, ...]

    def __call__(self, record: Mapping[str, Any]) -> bool:
        haystack = [
            _as_text(scalar).casefold() for value in record.values() for scalar in _scalars(value)
        ]
        return all(any(needle in text for text in haystack) for needle in self.needles)


# ---------------------------------------------------------------------------------------------
# Filter tokenizer


class _Kind(Enum):
    TEXT = "text"
    LPAREN = "("
    RPAREN = ")"
    OP = "operator"
    AND = "AND"
    OR = "OR"
    NOT = "NOT"
    END = "end"


@dataclass(frozen=True)
class _Token:
    kind: _Kind
    text: str
    """As written for punctuation and keywords; the unescaped literal for TEXT."""
    pos: int
    """0-based offset into the filter; messages show ``pos + 1``."""
    pattern: str = ""
    """For TEXT: regex source of the value, with unescaped ``*``/``?`` as wildcards."""


_KEYWORDS = {"AND": _Kind.AND, "OR": _Kind.OR, "NOT": _Kind.NOT}
_TERM_START = frozenset({_Kind.TEXT, _Kind.LPAREN, _Kind.NOT})


def _at(pos: int) -> str:
    return f"at position {pos + 1}"


def _read_escape(source: str, i: int, allowed: frozenset[str]) -> str:
    """The character escaped by the backslash at ``source[i]``."""
    if i + 1 >= len(source):
        raise QueryError(f"backslash {_at(i)} ends the input; write \\\\ for a literal backslash")
    char = source[i + 1]
    if char not in allowed:
        escapes = ", ".join("\\" + c for c in sorted(allowed))
        raise QueryError(
            f"unknown escape \\{char} {_at(i)}; the escapes are {escapes} "
            "(write \\\\ for a literal backslash)"
        )
    return char


def _ends_bare(source: str, i: int) -> bool:
    char = source[i]
    return (
        char.isspace()
        or char in "()"
        or char in _OPERATOR_CHARS
        or source.startswith(("&&", "||"), i)
    )


def _read_text(source: str, start: int) -> tuple[_Token, int]:
    """Read a quoted or unquoted text token at ``start``; return it and the next offset."""
    quoted = source[start] == '"'
    i = start + 1 if quoted else start
    text: list[str] = []
    pattern: list[str] = []
    while True:
        if i >= len(source):
            if quoted:
                raise QueryError(f"unterminated quote starting {_at(start)}")
            break
        char = source[i]
        if quoted and char == '"':
            i += 1
            break
        if not quoted and _ends_bare(source, i):
            break
        if char == '"':
            raise QueryError(
                f"unexpected quote {_at(i)} inside unquoted {source[start:i]!r}; "
                'quote the whole key or value, e.g. "a b", or escape it as \\"'
            )
        if char == "\\":
            char = _read_escape(source, i, _FILTER_ESCAPES)
            pattern.append(re.escape(char))
            i += 2
        else:
            pattern.append({"*": ".*", "?": "."}.get(char) or re.escape(char))
            i += 1
        text.append(char)
    raw = source[start:i]
    if not quoted and raw.upper() in _KEYWORDS:
        return _Token(_KEYWORDS[raw.upper()], raw, start), i
    return _Token(_Kind.TEXT, "".join(text), start, "".join(pattern)), i


def _read_operator(source: str, i: int) -> _Token:
    if source.startswith("!=", i):
        return _Token(_Kind.OP, "!=", i)
    if source[i] == "!":
        raise QueryError(f"unexpected '!' {_at(i)}; use != for 'not equal' or NOT to negate a term")
    return _Token(_Kind.OP, source[i], i)


def _tokenize_filter(source: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while i < len(source):
        char = source[i]
        if char.isspace():
            i += 1
            continue
        if char in "()":
            token = _Token(_Kind.LPAREN if char == "(" else _Kind.RPAREN, char, i)
        elif source.startswith(("&&", "||"), i):
            token = _Token(_Kind.AND if char == "&" else _Kind.OR, source[i : i + 2], i)
        elif char in _OPERATOR_CHARS:
            token = _read_operator(source, i)
        else:
            token, i = _read_text(source, i)
            tokens.append(token)
            continue
        tokens.append(token)
        i += len(token.text)
    tokens.append(_Token(_Kind.END, "", len(source)))
    return tokens


def _describe(token: _Token) -> str:
    if token.kind is _Kind.END:
        return "the end of the filter"
    if token.kind is _Kind.OP:
        return f"operator {token.text!r}"
    if token.kind in (_Kind.AND, _Kind.OR, _Kind.NOT):
        return f"keyword {token.text}"
    return repr(token.text)


# ---------------------------------------------------------------------------------------------
# Filter parser


class _Parser:
    """Recursive descent over the token list; each ``_parse_*`` method is one grammar rule."""

    def __init__(self, tokens: list[_Token]) -> None:
        self._tokens = tokens
        self._index = 0
        self._depth = 0

    def parse(self) -> Predicate:
        if self._peek().kind is _Kind.END:
            raise QueryError("empty filter; expected at least one term such as key=value")
        predicate = self._parse_or()
        token = self._peek()
        if token.kind is _Kind.RPAREN:
            raise QueryError(f"unbalanced parentheses: ')' {_at(token.pos)} has no matching '('")
        if token.kind is not _Kind.END:
            raise QueryError(
                f"unexpected {_describe(token)} {_at(token.pos)} after a complete term"
            )
        return predicate

    def _peek(self) -> _Token:
        return self._tokens[self._index]

    def _advance(self) -> _Token:
        token = self._tokens[self._index]
        self._index += 1
        return token

    def _advance_keyword(self) -> None:
        """Consume AND/OR/NOT and insist that a term follows it."""
        keyword = self._advance()
        following = self._peek()
        if following.kind not in _TERM_START:
            raise QueryError(
                f"dangling {keyword.text} {_at(keyword.pos)}: expected a term after it "
                f"but found {_describe(following)}"
            )

    def _parse_or(self) -> Predicate:
        parts = [self._parse_and()]
        while True:
            kind = self._peek().kind
            if kind is _Kind.OR:
                self._advance_keyword()
            elif kind not in _TERM_START:
                break
            parts.append(self._parse_and())
        return parts[0] if len(parts) == 1 else _Any(tuple(parts))

    def _parse_and(self) -> Predicate:
        parts = [self._parse_not()]
        while self._peek().kind is _Kind.AND:
            self._advance_keyword()
            parts.append(self._parse_not())
        return parts[0] if len(parts) == 1 else _All(tuple(parts))

    def _parse_not(self) -> Predicate:
        negations = 0
        while self._peek().kind is _Kind.NOT:
            self._advance_keyword()
            negations += 1
        predicate = self._parse_primary()
        return _Not(predicate) if negations % 2 else predicate

    def _parse_primary(self) -> Predicate:
        token = self._peek()
        if token.kind is _Kind.LPAREN:
            return self._parse_group()
        if token.kind is _Kind.TEXT:
            return self._parse_term()
        if token.kind in (_Kind.AND, _Kind.OR):
            raise QueryError(f"{token.text} {_at(token.pos)} has no term before it")
        if token.kind is _Kind.RPAREN:
            raise QueryError(f"unbalanced parentheses: ')' {_at(token.pos)} has no matching '('")
        raise QueryError(f"expected a term {_at(token.pos)} but found {_describe(token)}")

    def _parse_group(self) -> Predicate:
        opening = self._advance()
        if self._peek().kind is _Kind.RPAREN:
            raise QueryError(f"empty parentheses {_at(opening.pos)}")
        self._depth += 1
        if self._depth > MAX_NESTING:
            raise QueryError(f"parentheses nested deeper than {MAX_NESTING} {_at(opening.pos)}")
        predicate = self._parse_or()
        self._depth -= 1
        closing = self._advance()
        if closing.kind is _Kind.END:
            raise QueryError(f"unbalanced parentheses: '(' {_at(opening.pos)} is never closed")
        if closing.kind is not _Kind.RPAREN:
            raise QueryError(
                f"expected ')' to close '(' {_at(opening.pos)} "
                f"but found {_describe(closing)} {_at(closing.pos)}"
            )
        return predicate

    def _parse_term(self) -> Predicate:
        key = self._advance()
        operator = self._advance()
        if operator.kind is not _Kind.OP:
            raise QueryError(
                f"missing operator after key {key.text!r} {_at(key.pos)}: expected =, !=, < or > "
                f"but found {_describe(operator)}"
            )
        value = self._advance()
        if value.kind is not _Kind.TEXT:
            is_keyword = value.kind in (_Kind.AND, _Kind.OR, _Kind.NOT)
            hint = f' (quote it, "{value.text}", to use it as a value)' if is_keyword else ""
            raise QueryError(
                f"missing value after {operator.text!r} {_at(operator.pos)}: "
                f"found {_describe(value)}{hint}"
            )
        return _make_term(key.text, operator.text, value)


def _make_term(key: str, operator: str, value: _Token) -> Predicate:
    if operator in ("=", "!="):
        pattern = re.compile(value.pattern, re.DOTALL)
        return _Equals(key, pattern, negate=operator == "!=")
    bound = _as_number(value.text)
    if bound is None:
        raise QueryError(f"{operator!r} needs a number but found {value.text!r} {_at(value.pos)}")
    return _Compare(key, less=operator == "<", bound=bound)


def parse_filter(text: str) -> Predicate:
    """Compile an ODM ``filter`` expression (grammar in the module docstring) to a predicate."""
    return _Parser(_tokenize_filter(text)).parse()


# ---------------------------------------------------------------------------------------------
# Full-text query


def _read_query_term(source: str, start: int) -> tuple[str, int]:
    """Read a word or ``"phrase"`` at ``start``; return its unescaped text and the next offset."""
    quoted = source[start] == '"'
    i = start + 1 if quoted else start
    chars: list[str] = []
    while True:
        if i >= len(source):
            if quoted:
                raise QueryError(f"unterminated quote starting {_at(start)}")
            break
        char = source[i]
        if char == '"':
            i += 1 if quoted else 0
            break
        if not quoted and char.isspace():
            break
        if char == "\\":
            chars.append(_read_escape(source, i, _QUERY_ESCAPES))
            i += 2
        else:
            chars.append(char)
            i += 1
    return "".join(chars), i


def _tokenize_query(source: str) -> list[str]:
    terms: list[str] = []
    i = 0
    while i < len(source):
        if source[i].isspace():
            i += 1
            continue
        term, i = _read_query_term(source, i)
        terms.append(term)
    return terms


def parse_query(text: str) -> Predicate:
    """Compile a full-text ``query``: every word or phrase must occur in some value."""
    needles = tuple(term.casefold() for term in _tokenize_query(text))
    return _FullText(needles)

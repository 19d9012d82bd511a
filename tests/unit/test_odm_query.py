"""Tests of the ODM filter and full-text query engine (remotefs.odm_filter)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from remotefs.odm_filter import QueryError, parse_filter, parse_query

BAM: dict[str, Any] = {
    "genestack:accession": "GSF000123",
    "genestack:name": "ex1.bam",
    "Data Class": "Bulk transcriptomics",
    "Species or strain": "Homo sapiens",
    "sample_id": "S1",
    "read_count": "3307",
    "size": 1024,
    "ratio": 0.25,
    "tags": ["bam", "demo"],
    "note": None,
}


def matches(filter_text: str, record: dict[str, Any] = BAM) -> bool:
    return parse_filter(filter_text)(record)


def bits(**values: int) -> dict[str, str]:
    return {key: str(value) for key, value in values.items()}


# --- terms -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filter_text", "expected"),
    [
        ("genestack:accession=GSF000123", True),
        ("genestack:accession = GSF000123", True),
        ("genestack:accession   =GSF000123", True),
        ("genestack:accession=GSF00012", False),
        ("genestack:accession=gsf000123", False),
        ("genestack:accession=GSF0001234", False),
        ("missing=GSF000123", False),
        ("read_count=3307", True),
        ("size=1024", True),
        ("ratio=0.25", True),
        ("note=None", False),
        ("note=*", False),
    ],
)
def test_equals_is_exact_and_case_sensitive(filter_text: str, expected: bool) -> None:
    assert matches(filter_text) is expected


@pytest.mark.parametrize(
    ("filter_text", "expected"),
    [
        ("sample_id!=S2", True),
        ("sample_id!=S1", False),
        ("missing!=anything", True),
        ("note!=x", True),
        ("tags!=bam", False),
        ("tags!=fastq", True),
        ("tags != fastq", True),
    ],
)
def test_not_equals_matches_absent_keys_and_lists_without_the_value(
    filter_text: str, expected: bool
) -> None:
    assert matches(filter_text) is expected


def test_list_values_match_any_element() -> None:
    assert matches("tags=bam")
    assert matches("tags=demo")
    assert not matches("tags=fastq")
    assert not matches('tags="bam demo"')
    assert matches("x=2", {"x": [1, 2, 3]})


def test_booleans_compare_as_json_literals() -> None:
    assert matches("flag=true", {"flag": True})
    assert not matches("flag=True", {"flag": True})
    assert matches("flag=false", {"flag": False})


def test_nested_objects_have_no_values() -> None:
    assert not matches("meta=*", {"meta": {"a": "b"}})
    assert matches("meta!=*", {"meta": {"a": "b"}})


# --- quoting -----------------------------------------------------------------------------------


def test_quoted_key_and_value() -> None:
    assert matches('"Species or strain"="Homo sapiens"')
    assert matches('"Data Class" = "Bulk transcriptomics"')
    assert not matches('"Species or strain"="Homo"')


def test_quoted_escapes() -> None:
    record = {'say "hi"': 'a "quoted" \\ value'}
    assert matches(r'"say \"hi\""="a \"quoted\" \\ value"', record)
    assert not matches(r'"say \"hi\""="a \"quoted\" x value"', record)


def test_quoted_keywords_are_literals() -> None:
    record = {"AND": "OR", "not": "x"}
    assert matches('"AND"="OR"', record)
    assert matches('"not"=x', record)


def test_unquoted_tokens_stop_at_operators_and_parentheses() -> None:
    assert matches("(genestack:accession=GSF000123)")
    assert matches("sample_id=S1&&tags=bam")
    assert matches("sample_id=S2||tags=bam")
    assert matches("sample_id!=S2")


def test_unquoted_backslash_escapes() -> None:
    assert matches(r"k=a\*b", {"k": "a*b"})
    assert not matches(r"k=a\*b", {"k": "axb"})
    assert matches(r"k=C:\\data", {"k": "C:\\data"})


def test_empty_quoted_value_matches_empty_string() -> None:
    assert matches('k=""', {"k": ""})
    assert not matches('k=""', {"k": "x"})


# --- wildcards ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filter_text", "expected"),
    [
        ("genestack:name=*.bam", True),
        ("genestack:name=ex*", True),
        ("genestack:name=*", True),
        ("genestack:name=ex1.bam*", True),
        ("genestack:name=*.BAM", False),
        ("genestack:name=ex?.bam", True),
        ("genestack:name=ex??.bam", False),
        ("genestack:name=e?.bam", False),
        ("genestack:name=???????", True),
        ("genestack:name=????????", False),
        ("genestack:name=ex1?bam", True),
        ('"Species or strain"="Homo *"', True),
        ('"Species or strain"="Homo ?apiens"', True),
        ('"Species or strain"="Homo\\*"', False),
        ("genestack:name!=*.bam", False),
        ("genestack:name!=*.fastq", True),
        ("tags=de*", True),
        ("tags=b?m", True),
    ],
)
def test_wildcards(filter_text: str, expected: bool) -> None:
    assert matches(filter_text) is expected


def test_escaped_wildcards_are_literal() -> None:
    assert matches(r'k="a\*b\?"', {"k": "a*b?"})
    assert not matches(r'k="a\*b\?"', {"k": "axbc"})
    assert matches('k="a*b?"', {"k": "axxbc"})


def test_wildcards_match_newlines() -> None:
    assert matches("k=a*b", {"k": "a\nb"})
    assert matches("k=a?b", {"k": "a\nb"})


def test_dot_and_regex_characters_are_literal() -> None:
    assert not matches("genestack:name=ex1xbam")
    assert matches("k=a+[b]$", {"k": "a+[b]$"})


# --- numeric comparisons -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filter_text", "expected"),
    [
        ("read_count>3000", True),
        ("read_count>3307", False),
        ("read_count<3307.5", True),
        ("read_count < 4000", True),
        ("read_count<3307", False),
        ("size>1e3", True),
        ("size<-1", False),
        ("ratio<.5", True),
        ("ratio>0.25", False),
        ("sample_id>0", False),
        ("sample_id<0", False),
        ("missing>0", False),
        ("note>0", False),
        ('read_count>"3000"', True),
    ],
)
def test_numeric_comparisons(filter_text: str, expected: bool) -> None:
    assert matches(filter_text) is expected


def test_numeric_comparison_on_lists_and_odd_values() -> None:
    assert matches("x>5", {"x": ["a", "3", 7]})
    assert not matches("x>5", {"x": ["a", "3", 4]})
    for value in ("nan", "inf", "1_000", "0x10", "", True, 10**400, float("nan")):
        assert not matches("x>0", {"x": value}), value
        assert not matches("x<0", {"x": value}), value


# --- combinations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (bits(a=1, b=0, c=0), True),
        (bits(a=0, b=2, c=3), True),
        (bits(a=0, b=2, c=0), False),
        (bits(a=0, b=0, c=3), False),
    ],
)
def test_and_binds_tighter_than_or(record: dict[str, str], expected: bool) -> None:
    assert matches("a=1 OR b=2 AND c=3", record) is expected
    assert matches("a=1 || b=2 && c=3", record) is expected
    assert matches("b=2 AND c=3 OR a=1", record) is expected


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (bits(a=1, b=0, c=3), True),
        (bits(a=1, b=0, c=0), False),
        (bits(a=0, b=2, c=3), True),
    ],
)
def test_parentheses_override_precedence(record: dict[str, str], expected: bool) -> None:
    assert matches("(a=1 OR b=2) AND c=3", record) is expected
    assert matches("((a=1) OR (b=2)) AND ((c=3))", record) is expected


def test_keywords_are_case_insensitive() -> None:
    record = bits(a=1, b=2)
    assert matches("a=1 and b=2", record)
    assert matches("a=0 or b=2", record)
    assert matches("Not a=0", record)
    assert not matches("a=1 aNd b=3", record)


@pytest.mark.parametrize(
    ("filter_text", "expected"),
    [
        ("NOT a=1", False),
        ("NOT a=0", True),
        ("NOT NOT a=1", True),
        ("NOT a=1 OR b=2", True),
        ("NOT (a=1 OR b=0)", False),
        ("NOT a=1 AND b=2", False),
        ("a=1 AND NOT b=0", True),
        ("NOT missing=x", True),
    ],
)
def test_not(filter_text: str, expected: bool) -> None:
    assert matches(filter_text, bits(a=1, b=2)) is expected


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (bits(a=1), True),
        (bits(b=2), True),
        (bits(a=0, b=0), False),
    ],
)
def test_adjacent_terms_are_joined_with_or(record: dict[str, str], expected: bool) -> None:
    assert matches("a=1 b=2", record) is expected
    assert matches("(a=1)(b=2)", record) is expected


def test_implicit_or_has_or_precedence() -> None:
    # a=1 OR (b=2 AND c=3)
    assert matches("a=1 b=2 AND c=3", bits(a=1, b=0, c=0))
    assert not matches("a=1 b=2 AND c=3", bits(a=0, b=2, c=0))


def test_deep_nesting_within_the_limit() -> None:
    assert matches("(" * 50 + "a=1" + ")" * 50, bits(a=1))


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filter_text", "message"),
    [
        ("", "empty filter"),
        ("   ", "empty filter"),
        ("(a=1", "never closed"),
        ("((a=1)", "never closed"),
        ("a=1)", "no matching '('"),
        (")a=1", "no matching '('"),
        ("()", "empty parentheses"),
        ('"a=1', "unterminated quote starting at position 1"),
        ('a="1', "unterminated quote starting at position 3"),
        ("a=", "missing value after '='"),
        ("a=1 AND b!=", "missing value after '!='"),
        ("a= AND b=1", "quote it"),
        ("=1", "expected a term at position 1"),
        ("a=1 AND =2", "dangling AND"),
        ("a", "missing operator after key 'a'"),
        ("a b=1", "missing operator after key 'a'"),
        ("a=1 b", "missing operator after key 'b'"),
        ("a==1", "missing value after '='"),
        ("a=1=2", "unexpected operator '='"),
        ("a<=1", "missing value after '<'"),
        ("a=1 AND", "dangling AND"),
        ("a=1 &&", "dangling &&"),
        ("a=1 OR", "dangling OR"),
        ("a=1 ||", "dangling ||"),
        ("NOT", "dangling NOT"),
        ("a=1 AND NOT", "dangling NOT"),
        ("AND a=1", "AND at position 1 has no term before it"),
        ("OR a=1", "has no term before it"),
        ("a=1 OR OR b=2", "dangling OR"),
        ("(a=1 AND)", "dangling AND"),
        ("a!b", "unexpected '!'"),
        ("a=b!", "unexpected '!'"),
        ("a>x", "needs a number but found 'x'"),
        ("a<1*", "needs a number"),
        ("a>nan", "needs a number"),
        ("a>1e999", "needs a number"),
        ('a="x\\y"', "unknown escape \\y"),
        ("a=x\\", "ends the input"),
        ('a=x"y"', "unexpected quote"),
        ("(" * 65 + "a=1" + ")" * 65, "nested deeper"),
    ],
)
def test_filter_errors(filter_text: str, message: str) -> None:
    with pytest.raises(QueryError) as caught:
        parse_filter(filter_text)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_query_error_is_a_value_error() -> None:
    assert issubclass(QueryError, ValueError)


def test_error_names_the_position() -> None:
    with pytest.raises(QueryError, match=r"dangling AND at position 5"):
        parse_filter("a=1 AND )")


# --- full-text query ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", True),
        ("   \t", True),
        ("ex1", True),
        ("EX1.BAM", True),
        ("homo", True),
        ("transcriptomics homo", True),
        ("transcriptomics mouse", False),
        ('"homo sapiens"', True),
        ('"sapiens homo"', False),
        ('"bulk transcriptomics" bam', True),
        ("330", True),
        ("1024", True),
        ("0.25", True),
        ("demo", True),
        ("bam demo", True),
        ("None", False),
        ("genestack", False),
        ("species", False),
        ('"ex1.bam Homo"', False),
    ],
)
def test_query(query: str, expected: bool) -> None:
    assert parse_query(query)(BAM) is expected


def test_query_escapes() -> None:
    record = {"k": 'say "hi" C:\\data'}
    assert parse_query(r'"say \"hi\""')(record)
    assert parse_query(r'"C:\\data"')(record)
    assert parse_query(r"C:\\data")(record)
    assert not parse_query(r'"say \"ho\""')(record)


def test_query_quote_after_a_word_starts_a_phrase() -> None:
    record = {"k": "alpha", "j": "beta gamma"}
    assert parse_query('alpha"beta gamma"')(record)
    assert not parse_query('alpha"gamma beta"')(record)


def test_query_on_empty_record() -> None:
    assert parse_query("")({})
    assert not parse_query("x")({})


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ('"homo', "unterminated quote starting at position 1"),
        ('homo "sapiens', "unterminated quote starting at position 6"),
        ('"a\\b"', "unknown escape \\b"),
        ("a\\", "ends the input"),
    ],
)
def test_query_errors(query: str, message: str) -> None:
    with pytest.raises(QueryError) as caught:
        parse_query(query)
    assert message in str(caught.value)


# --- property ----------------------------------------------------------------------------------


def _quote(text: str) -> str:
    escaped = "".join("\\" + char if char in '\\"*?' else char for char in text)
    return f'"{escaped}"'


@given(st.text())
def test_quoted_escaped_value_matches_exactly_itself(value: str) -> None:
    predicate = parse_filter(f"k={_quote(value)}")
    assert predicate({"k": value})
    assert not predicate({"k": value + "x"})
    assert not predicate({"other": value})


@given(st.text(), st.text())
def test_quoted_key_matches_only_that_key(key: str, value: str) -> None:
    predicate = parse_filter(f"{_quote(key)}={_quote(value)}")
    assert predicate({key: value})
    assert not predicate({key + "x": value})


_FILTER_PIECES = [*'ab =!<>()"\\*?&|', " AND ", " OR ", " NOT ", "1"]


@given(st.lists(st.sampled_from(_FILTER_PIECES)).map("".join))
def test_any_input_parses_or_raises_query_error(text: str) -> None:
    try:
        predicate = parse_filter(text)
    except QueryError as error:
        assert str(error) and "\n" not in str(error)
    else:
        assert predicate({"a": ["1", 2, None, True], "b": {"x": 1}}) in (True, False)

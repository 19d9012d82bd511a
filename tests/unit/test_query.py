"""Query folder names and --filter/--query (remotefs.query)."""

from __future__ import annotations

import pytest

from remotefs.errors import InvalidQuery
from remotefs.query import from_options, parse_genestack, parse_sevenbridges


def test_sevenbridges_pairs_are_canonical_and_escapes_decoded() -> None:
    assert parse_sevenbridges("tag=b&tag=a").params == (("tag", "a"), ("tag", "b"))
    assert parse_sevenbridges("metadata.path=x\u2215y").params == (("metadata.path", "x/y"),)
    assert parse_sevenbridges("metadata.path=x%2Fy").params == (("metadata.path", "x/y"),)
    assert parse_sevenbridges("name=CD4+ cells.txt").params == (("name", "CD4+ cells.txt"),)
    assert parse_sevenbridges("metadata.a=b=c").params == (("metadata.a", "b=c"),)


def test_genestack_keeps_the_filters_own_and() -> None:
    query = parse_genestack('filter=a=1 && "Data Class"=Document&query=TP53')
    assert query.params == (("filter", 'a=1 && "Data Class"=Document'), ("query", "TP53"))


@pytest.mark.parametrize(
    ("parse", "name", "message"),
    [
        (parse_sevenbridges, "colour=red", "not a Seven Bridges file filter"),
        (parse_sevenbridges, "metadata.=x", "not a Seven Bridges file filter"),
        (parse_sevenbridges, "=x", "the key is empty"),
        (parse_sevenbridges, "tag=", "the value of tag is empty"),
        (parse_sevenbridges, "tag", "expected key=value"),
        (parse_sevenbridges, "", "an empty query"),
        (parse_sevenbridges, "tag=%ff", "not UTF-8"),
        (parse_genestack, 'filter="a=b', "filter="),
        (parse_genestack, "filter=a=1&filter=b=2", "given twice"),
        (parse_genestack, "tag=x", "not an ODM file query"),
        (parse_genestack, 'query="open', "query="),
    ],
)
def test_malformed_names_are_invalid_queries(parse, name: str, message: str) -> None:
    with pytest.raises(InvalidQuery, match=message):
        parse(name)


def test_mount_options() -> None:
    assert from_options("sevenbridges", (), None) is None
    sb = from_options("sevenbridges", ("metadata.s=1", "tag=a&tag=b"), None)
    assert sb is not None and sb.params == (("metadata.s", "1"), ("tag", "a"), ("tag", "b"))
    odm = from_options("genestack", ("a=1 && b=2",), "x y")
    assert odm is not None and odm.params == (("filter", "a=1 && b=2"), ("query", "x y"))
    with pytest.raises(InvalidQuery):
        from_options("sevenbridges", (), "TP53")
    with pytest.raises(InvalidQuery, match="one --filter"):
        from_options("genestack", ("a=1", "b=2"), None)
    with pytest.raises(InvalidQuery, match="--filter 'a=1 & b'"):
        from_options("genestack", ("a=1 & b",), None)  # checked with the filter's grammar

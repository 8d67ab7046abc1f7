"""Statement: a batch's writes as one statement, each part a data-modifying WITH query."""

from __future__ import annotations

from shared.db import Statement, columns


def test_each_part_numbers_its_parameters_after_the_parts_before_it() -> None:
    statement = Statement()
    statement.add("INSERT INTO a SELECT * FROM unnest({}::text[], {}::int[])", ["x"], [1])
    statement.add("DELETE FROM b WHERE id = ANY({}::text[])", ["y"])
    assert statement.sql == (
        "WITH w0 AS (INSERT INTO a SELECT * FROM unnest($1::text[], $2::int[])),"
        " w1 AS (DELETE FROM b WHERE id = ANY($3::text[])) SELECT 1")
    assert statement.args == [["x"], [1], ["y"]]


def test_one_part_is_sent_as_it_is() -> None:
    statement = Statement()
    statement.add("DELETE FROM b WHERE id = ANY({}::text[])", ["y"])
    assert statement.sql == "DELETE FROM b WHERE id = ANY($1::text[])"


def test_columns_transpose_rows_and_keep_the_width_when_empty() -> None:
    assert columns([(1, "a"), (2, "b")], 2) == [[1, 2], ["a", "b"]]
    assert columns([], 3) == [[], [], []]

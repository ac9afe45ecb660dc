"""Datasets: CSV (quoted fields, delimiters) and JSONL, errors that name the line, the row limit."""

from __future__ import annotations

import pytest

from conductor_core.config import load_settings
from conductor_core.workbench.datasets import DatasetError, DatasetTooLargeError, read_dataset


def test_csv_columns_become_variables_and_quoted_fields_keep_newlines_and_commas() -> None:
    text = 'question,expected\n"Line one\nline two, with a comma",yes\n"He said ""hi""",no\n'
    dataset = read_dataset(text)
    assert dataset.columns == ("question", "expected") and dataset.has_expected
    assert dataset.rows[0]["question"] == "Line one\nline two, with a comma"
    assert dataset.rows[1]["question"] == 'He said "hi"'
    assert dataset.lines == (2, 4)  # the second row starts after the two-line field
    assert [dataset.expected(i) for i in range(2)] == ["yes", "no"]


@pytest.mark.parametrize(("text", "delimiter"), [("a;b\n1;2\n", ";"), ("a\tb\n1\t2\n", "\t"), ("a|b\n1|2\n", "|")])
def test_the_delimiter_is_found_from_the_header(text: str, delimiter: str) -> None:
    dataset = read_dataset(text)
    assert dataset.columns == ("a", "b") and dict(dataset.rows[0]) == {"a": "1", "b": "2"}


def test_uploaded_bytes_with_a_bom_and_a_tsv_name() -> None:
    dataset = read_dataset("\ufeffname\tcity\nAda\tLondon, UK\n".encode(), filename="people.tsv")
    assert dataset.columns == ("name", "city") and dataset.rows[0]["city"] == "London, UK"


def test_blank_lines_are_skipped_and_a_blank_expected_is_no_expectation() -> None:
    dataset = read_dataset("q,expected\n\nx,\n\ny,z\n")
    assert len(dataset) == 2 and dataset.expected(0) is None and dataset.expected(1) == "z"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a,b\n1,2\n3,4,5\n", r"^line 3: 3 field\(s\), but the header has 2 \(a, b\)"),
        ('a,b\n1,2\n"open,4\n5,6\n', r"^line 3: malformed CSV: a quoted field that is never closed"),
        ('a,b\n"x"y,2\n', r"^line 2: malformed CSV"),
        ("a,,c\n1,2,3\n", r"^line 1, column 2: a header field is empty"),
        ("a,b,a\n1,2,3\n", r"^line 1, column 3: the column name 'a' appears twice"),
        ("a,b\n", r"header but no rows"),
        ("  \n", r"the dataset is empty"),
    ],
)
def test_malformed_csv_names_the_line(text: str, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        read_dataset(text)


def test_a_file_that_is_not_utf8_names_the_line() -> None:
    with pytest.raises(DatasetError, match="^line 2: the file is not UTF-8") as caught:
        read_dataset(b"a,b\n\xff\xfe,1\n", filename="x.csv")
    assert caught.value.line == 2


def test_jsonl_rows_keep_their_keys_and_json_values() -> None:
    dataset = read_dataset('{"q": "one", "n": 1}\n\n{"q": "two", "expected": "b", "tags": ["x"]}\n', filename="d.jsonl")
    assert dataset.columns == ("q", "n", "expected", "tags")
    assert dataset.rows[1]["tags"] == ["x"] and "n" not in dataset.rows[1]
    assert dataset.lines == (1, 3) and dataset.expected(0) is None and dataset.expected(1) == "b"


def test_pasted_json_is_recognised_without_a_file_name() -> None:
    assert read_dataset('{"q": "x"}').format == "jsonl"
    assert read_dataset('[{"q": "x"}, {"q": "y"}]').columns == ("q",)


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [('{"q": 1}\n{"q": 2,}\n', 2, 9), ('{"q": 1}\n\n{"q" 3}\n', 3, 6)],
)
def test_bad_jsonl_names_line_and_column(text: str, line: int, column: int) -> None:
    with pytest.raises(DatasetError, match=f"^line {line}, column {column}: not valid JSON") as caught:
        read_dataset(text, format="jsonl")
    assert (caught.value.line, caught.value.column) == (line, column)


def test_a_jsonl_line_that_is_not_an_object_says_so() -> None:
    with pytest.raises(DatasetError, match=r"^line 2: is a string; each line must be one JSON object"):
        read_dataset('{"q": 1}\n"just text"\n', format="jsonl")


def test_over_the_limit_is_refused_with_the_count_and_the_setting() -> None:
    text = "q\n" + "".join(f"row {i}\n" for i in range(1001))
    with pytest.raises(DatasetTooLargeError) as caught:
        read_dataset(text)
    assert (caught.value.rows, caught.value.limit) == (1001, 1000)
    assert "CONDUCTOR_DATASET_MAX_ROWS" in str(caught.value) and "1,001 rows" in str(caught.value)
    assert len(read_dataset(text, max_rows=2000)) == 1001
    jsonl = "".join(f'{{"q": {i}}}\n' for i in range(6))
    with pytest.raises(DatasetTooLargeError):
        read_dataset(jsonl, max_rows=5)


def test_the_limit_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(_env_file=None).dataset_max_rows == 1000
    monkeypatch.setenv("CONDUCTOR_DATASET_MAX_ROWS", "25")
    assert load_settings(_env_file=None).dataset_max_rows == 25

"""The one JSONL layer: lines split on \\n only, a strict reader, a writer it reads back, an explicit bad-line policy."""
from __future__ import annotations

import json
import random

import pytest

from pipeline.jsonl import (MAX_DEPTH, JsonlError, LineError, MissingFile, decode_line, encode_line, read_jsonl,
                            write_jsonl)

LINE_BREAKS_PYTHON_SPLITS_ON = ["\u2028", "\u2029", "\u0085"]  # the others (\x0b, \x1c, ...) must be escaped in JSON


@pytest.mark.parametrize("char", LINE_BREAKS_PYTHON_SPLITS_ON, ids=[f"U+{ord(c):04X}" for c in LINE_BREAKS_PYTHON_SPLITS_ON])
def test_a_raw_unicode_line_separator_inside_a_string_does_not_split_the_line(tmp_path, char):
    path = tmp_path / "in.jsonl"
    text = f"before{char}after"
    path.write_bytes(b'{"n": 1}\n' + ('{"text": "' + text + '"}').encode("utf-8") + b'\n{"n": 3}\n')
    read = read_jsonl(path, on_bad="fail")
    assert [(line.number, line.value) for line in read.lines] == [(1, {"n": 1}), (2, {"text": text}), (3, {"n": 3})]


def test_line_numbers_count_blank_lines_and_crlf_is_accepted(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"a": 1}\r\n\r\n  \t\n{"a": 2}\r\n')
    read = read_jsonl(path, on_bad="fail")
    assert [(line.number, line.value) for line in read.lines] == [(1, {"a": 1}), (4, {"a": 2})]
    assert read.lines_read == 2 and read.bad == []


HOSTILE = [  # (line, reason it is rejected with)
    ('{"n": NaN}', "NaN is not valid JSON"),
    ('{"n": -Infinity}', "-Infinity is not valid JSON"),
    ('{"n": 1e400}', "number 1e400 is out of range"),
    ('{"n": ' + "9" * 5000 + "}", "integer with 5000 digits (more than 64 bits)"),
    ('{"n": 9223372036854775808}', "integer 9223372036854775808 does not fit in 64 bits"),
    ('{"n": 0.' + "1" * 60 + "}", "number literal of 62 characters"),
    ('{"user": "hi \\ud800"}', "'user' holds a lone surrogate \"\\ud800\" (not valid Unicode)"),
    ('{"a": {"b": ["x\\udc00"]}}', "'a.b[0]' holds a lone surrogate"),
    ('{"\\ud83d": 1}', 'key "\\ud83d" holds a lone surrogate'),
    ('{"facts": ' + '{"a": ' * 600 + "1" + "}" * 600 + "}", f"nested deeper than {MAX_DEPTH} levels"),
    ("[" * 100_000, f"nested deeper than {MAX_DEPTH} levels"),
    ('{"id": "a", "id": "b"}', 'key "id" occurs twice in one object'),
    ("[1, 2]", "not a JSON object (got list)"),
    ("null", "not a JSON object (got null)"),
    ('"just a string"', "not a JSON object (got str)"),
    ("\ufeff{}", "starts with a byte-order mark"),
    ('{"id": "b"', "invalid JSON (Expecting ',' delimiter at column 11)"),
]


@pytest.mark.parametrize(("line", "reason"), HOSTILE, ids=[reason[:40] for _, reason in HOSTILE])
def test_hostile_lines_are_rejected_with_a_reason(line, reason):
    with pytest.raises(LineError) as caught:
        decode_line(line.encode("utf-8"))
    assert caught.value.reason.startswith(reason)


def test_invalid_utf8_is_rejected():
    with pytest.raises(LineError, match=r"not valid UTF-8 \(invalid start byte at byte 10\)"):
        decode_line(b'{"user": "\xff"}')


def test_what_the_reader_accepts_at_the_limits_reads_back_identically(tmp_path):
    nested: dict = {"leaf": "x"}
    for _ in range(MAX_DEPTH - 2):
        nested = {"n": nested}
    value = {
        "ints": [-(2**63), 2**63 - 1, 0], "floats": [1e308, -1e-308, 5e-324, 0.1, -0.0],
        "text": "emoji \U0001F600, escapes \\u2028 \" \\ \t\n, raw U+2028 \u2028 U+0085 \u0085 NUL \u0000",
        "nested": nested, "": "empty key",
    }
    assert decode_line(encode_line(value)) == value  # the deepest accepted value: MAX_DEPTH levels
    path = tmp_path / "out.jsonl"
    write_jsonl(path, [value, {"n": 2}])
    assert read_jsonl(path, on_bad="fail").values == [value, {"n": 2}]
    assert path.read_bytes().count(b"\n") == 2 and path.read_text(encoding="utf-8").splitlines()[1] == '{"n": 2}'


def test_one_level_deeper_than_the_limit_is_rejected():
    nested: dict = {"leaf": "x"}
    for _ in range(MAX_DEPTH):
        nested = {"n": nested}
    with pytest.raises(LineError, match="nested deeper"):
        decode_line(json.dumps(nested))


def test_the_writer_escapes_unicode_line_separators_and_otherwise_writes_utf8_unchanged():
    assert encode_line({"t": "a\u2028b\u2029c\u0085d"}) == '{"t": "a\\u2028b\\u2029c\\u0085d"}'
    for value in ({"t": "Paris: 14°C, café"}, {"id": "x", "n": [1, 2.5, None, True]}):
        assert encode_line(value) == json.dumps(value, ensure_ascii=False)


@pytest.mark.parametrize("value", [{"n": float("nan")}, {"n": float("inf")}, {"t": "lone \ud800"}])
def test_the_writer_refuses_what_the_reader_would_reject(value):
    with pytest.raises(ValueError, match="cannot write as a JSON line"):
        encode_line(value)


def test_on_bad_fail_names_file_and_line_of_the_first_bad_line(tmp_path):
    path = tmp_path / "manifest.jsonl"
    path.write_text('{"a": 1}\n\n{"a": NaN}\n{oops\n')
    with pytest.raises(JsonlError, match=rf"^{path}:3: NaN is not valid JSON"):
        read_jsonl(path, on_bad="fail")


def test_on_bad_quarantine_keeps_every_bad_line_with_its_raw_text(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": NaN}\n\xff\xfe\n{"a": 4}\n')
    read = read_jsonl(path, on_bad="quarantine")
    assert read.values == [{"a": 1}, {"a": 4}] and read.lines_read == 4
    assert [(bad.line, bad.raw) for bad in read.bad] == [(2, '{"a": NaN}'), (3, "\\xff\\xfe")]
    assert str(read.bad[0]) == f"{path}:2: NaN is not valid JSON (numbers must be finite)"


def test_a_missing_file_or_a_folder_is_named(tmp_path):
    with pytest.raises(MissingFile, match=rf"^{tmp_path / 'nope.jsonl'}: not found \(run the tts stage\)$"):
        read_jsonl(tmp_path / "nope.jsonl", on_bad="fail", missing="not found (run the tts stage)")
    with pytest.raises(JsonlError, match="is a directory"):
        read_jsonl(tmp_path, on_bad="quarantine")


def test_mangled_lines_never_raise_anything_but_a_line_error():
    good = encode_line({"id": "a", "tools": [{"name": "w", "description": "d"}], "n": 12.5, "t": "°\u2028"})
    rng = random.Random(0)
    pieces = [b"\\ud800", b"NaN", b"[", b"{", b'"', b"9" * 30, b"\xff", b"\\u", b"1e999", b":", b","]
    for _ in range(3000):
        data = bytearray(good.encode("utf-8"))
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(data) + 1)
            if rng.random() < 0.5:
                data[at:at] = rng.choice(pieces)
            elif data:
                del data[min(at, len(data) - 1)]
        try:
            value = decode_line(bytes(data))
        except LineError:
            continue
        assert decode_line(encode_line(value)) == value  # accepted means it reads back identically

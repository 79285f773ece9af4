"""The agent channel's messages: what the guest writes parses back, and nothing a hostile
guest writes gets through the host's parser as anything but a counted BadMessage."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmreclaim.agent_protocol import (
    ACTIONS,
    DROP_REASONS,
    INVALID,
    MAX_AMOUNT_BYTES,
    MAX_MESSAGE_BYTES,
    NOT_JSON,
    TOO_LONG,
    AgentReport,
    BadMessage,
    LineSplitter,
    ReleaseAnswer,
    ReleaseRequest,
    encode_answer,
    encode_report,
    encode_request,
    parse_guest_message,
    parse_report,
    parse_request,
)

REPORT = AgentReport(
    seq=7,
    version="0.1.0",
    policy="adaptive",
    interval_s=2.0,
    reclaimable_bytes=300 << 20,
    cache_bytes=428 << 20,
    floor_bytes=128 << 20,
    refaulted_bytes=4096,
    last_action="reclaim",
    last_action_age_s=1.5,
)

amounts = st.none() | st.integers(0, MAX_AMOUNT_BYTES)
words = st.from_regex(r"[A-Za-z0-9._+-]{1,64}", fullmatch=True)
reports = st.builds(
    AgentReport,
    seq=st.integers(0, 2**63 - 1),
    version=words,
    policy=words,
    interval_s=st.floats(0, 1e9),
    reclaimable_bytes=amounts,
    cache_bytes=amounts,
    floor_bytes=amounts,
    refaulted_bytes=amounts,
    last_action=st.sampled_from(ACTIONS),
    last_action_age_s=st.none() | st.floats(0, 1e9),
)


def message(**changes: object) -> bytes:
    fields = json.loads(encode_report(REPORT))
    fields.update(changes)
    return json.dumps({k: v for k, v in fields.items() if v is not ...}).encode()


def test_a_report_is_one_line_and_parses_back() -> None:
    line = encode_report(REPORT)
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert parse_report(line[:-1]) == REPORT


@given(reports)
def test_every_report_the_agent_can_make_fits_and_parses_back(report: AgentReport) -> None:
    line = encode_report(report)
    assert len(line) <= MAX_MESSAGE_BYTES
    assert parse_report(line[:-1]) == report


def test_unknown_keys_are_ignored() -> None:
    assert parse_report(message(future_key={"nested": [1, 2]})) == REPORT


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"type": "release"}, INVALID),
        ({"v": 2}, INVALID),
        ({"v": True}, INVALID),
        ({"seq": -1}, INVALID),
        ({"seq": 1.5}, INVALID),
        ({"seq": ...}, INVALID),
        ({"reclaimable_bytes": MAX_AMOUNT_BYTES + 1}, INVALID),
        ({"reclaimable_bytes": True}, INVALID),
        ({"reclaimable_bytes": "1G"}, INVALID),
        ({"floor_bytes": -4096}, INVALID),
        ({"interval_s": -1}, INVALID),
        ({"interval_s": 1e300}, INVALID),
        ({"policy": "[red]adaptive[/red]"}, INVALID),
        ({"version": "0.1\x1b[2J"}, INVALID),
        ({"version": "x" * 65}, INVALID),
        ({"last_action": "rm -rf /"}, INVALID),
    ],
)
def test_a_key_of_the_wrong_type_or_range_rejects_the_message(changes, reason) -> None:
    with pytest.raises(BadMessage) as raised:
        parse_report(message(**changes))
    assert raised.value.reason == reason


@pytest.mark.parametrize(
    "line",
    [b"", b"hello", b"\xff\xfe", b"[1, 2]", b'{"interval_s": NaN}', b"[" * 2000 + b"]" * 2000],
)
def test_what_is_not_a_json_object_is_not_json_or_invalid(line: bytes) -> None:
    with pytest.raises(BadMessage) as raised:
        parse_report(line)
    assert raised.value.reason in (NOT_JSON, INVALID)


def test_nan_in_a_number_field_is_not_json() -> None:
    line = encode_report(REPORT)[:-1].replace(b'"interval_s":2.0', b'"interval_s":NaN')
    with pytest.raises(BadMessage) as raised:
        parse_report(line)
    assert raised.value.reason == NOT_JSON


def test_a_line_over_the_bound_is_too_long() -> None:
    with pytest.raises(BadMessage) as raised:
        parse_report(b" " * (MAX_MESSAGE_BYTES + 1))
    assert raised.value.reason == TOO_LONG


def _parse_or_reason(line: bytes) -> AgentReport | str:
    try:
        return parse_report(line)
    except BadMessage as err:
        return err.reason


@settings(max_examples=500)
@given(st.binary(max_size=MAX_MESSAGE_BYTES))
def test_the_parser_takes_any_bytes_without_crashing(line: bytes) -> None:
    report = _parse_or_reason(line)
    assert isinstance(report, AgentReport) or report in DROP_REASONS


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@settings(max_examples=200)
@given(st.dictionaries(st.sampled_from(list(json.loads(encode_report(REPORT)))), json_values))
def test_any_values_under_the_known_keys_parse_or_fail_cleanly(fields: dict[str, Any]) -> None:
    line = json.dumps({**json.loads(encode_report(REPORT)), **fields}).encode()
    report = _parse_or_reason(line)
    if isinstance(report, str):
        assert report in DROP_REASONS
    else:
        assert report.seq >= 0
        assert report.last_action in ACTIONS
        for amount in (report.reclaimable_bytes, report.cache_bytes, report.floor_bytes):
            assert amount is None or 0 <= amount <= MAX_AMOUNT_BYTES


def test_the_splitter_cuts_lines_across_chunks() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b"ab") == ([], 0)
    assert splitter.feed(b"c\nde\n\nf") == ([b"abc", b"de", b""], 0)
    assert splitter.feed(b"\n") == ([b"f"], 0)


def test_a_long_line_is_counted_once_and_skipped_to_its_newline_without_being_held() -> None:
    splitter = LineSplitter(max_line=16)
    assert splitter.feed(b"x" * 10) == ([], 0)
    assert splitter.feed(b"y" * 10) == ([], 1)
    for _ in range(1000):
        assert splitter.feed(b"z" * 4096) == ([], 0)
        assert splitter.held_bytes == 0
    assert splitter.feed(b"zz\nok\n") == ([b"ok"], 0)


def test_a_line_of_exactly_the_bound_passes() -> None:
    splitter = LineSplitter(max_line=16)
    assert splitter.feed(b"a" * 16 + b"\n") == ([b"a" * 16], 0)
    assert splitter.feed(b"a" * 17 + b"\n") == ([], 1)


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=200), max_size=30), st.integers(1, 64))
def test_the_splitter_never_holds_more_than_the_bound_and_loses_no_short_line(
    chunks: list[bytes], bound: int
) -> None:
    splitter = LineSplitter(max_line=bound)
    lines: list[bytes] = []
    too_long = 0
    for chunk in chunks:
        got, long_ones = splitter.feed(chunk)
        lines += got
        too_long += long_ones
        assert splitter.held_bytes <= bound
    whole = b"".join(chunks).split(b"\n")[:-1]  # the last piece has no newline yet
    assert lines == [line for line in whole if len(line) <= bound]
    assert too_long >= len([line for line in whole if len(line) > bound])


REQUEST = ReleaseRequest(id=3, release_bytes=200 << 20, deadline_s=4.0)
ANSWER = ReleaseAnswer(id=3, released_bytes=180 << 20, refused="")
requests = st.builds(
    ReleaseRequest,
    id=st.integers(0, 2**63 - 1),
    release_bytes=st.integers(0, MAX_AMOUNT_BYTES),
    deadline_s=st.floats(0, 1e9),
)
answers = st.builds(
    ReleaseAnswer,
    id=st.integers(0, 2**63 - 1),
    released_bytes=st.integers(0, MAX_AMOUNT_BYTES),
    refused=st.just("") | words,
)


@given(requests)
def test_every_request_fits_and_parses_back_in_the_guest(request: ReleaseRequest) -> None:
    line = encode_request(request)
    assert len(line) <= MAX_MESSAGE_BYTES
    assert line.count(b"\n") == 1
    assert parse_request(line[:-1]) == request


@given(answers)
def test_every_answer_fits_and_parses_back_in_the_host(answer: ReleaseAnswer) -> None:
    line = encode_answer(answer)
    assert len(line) <= MAX_MESSAGE_BYTES
    assert parse_guest_message(line[:-1]) == answer


def test_the_host_reads_reports_and_answers_from_the_same_channel() -> None:
    assert parse_guest_message(encode_report(REPORT)[:-1]) == REPORT
    assert parse_guest_message(encode_answer(ANSWER)[:-1]) == ANSWER


def test_a_guest_cannot_send_a_request_nor_the_host_an_answer() -> None:
    with pytest.raises(BadMessage) as from_guest:
        parse_guest_message(encode_request(REQUEST)[:-1])
    with pytest.raises(BadMessage) as from_host:
        parse_request(encode_answer(ANSWER)[:-1])
    assert from_guest.value.reason == from_host.value.reason == INVALID


def _answer(**changes: object) -> bytes:
    fields = json.loads(encode_answer(ANSWER))
    fields.update(changes)
    return json.dumps({k: v for k, v in fields.items() if v is not ...}).encode()


@pytest.mark.parametrize(
    "changes",
    [
        {"id": -1},
        {"id": ...},
        {"released_bytes": MAX_AMOUNT_BYTES + 1},
        {"released_bytes": -1},
        {"released_bytes": None},
        {"released_bytes": 1.5},
        {"refused": None},
        {"refused": "no way\x1b[2J"},
        {"refused": "x" * 65},
        {"refused": ...},
    ],
)
def test_an_answer_of_the_wrong_type_or_range_is_invalid(changes: dict[str, object]) -> None:
    with pytest.raises(BadMessage) as raised:
        parse_guest_message(_answer(**changes))
    assert raised.value.reason == INVALID


def _guest_or_reason(line: bytes) -> AgentReport | ReleaseAnswer | str:
    try:
        return parse_guest_message(line)
    except BadMessage as err:
        return err.reason


@settings(max_examples=500)
@given(st.binary(max_size=MAX_MESSAGE_BYTES))
def test_the_host_takes_any_bytes_from_a_guest_without_crashing(line: bytes) -> None:
    parsed = _guest_or_reason(line)
    assert isinstance(parsed, (AgentReport, ReleaseAnswer)) or parsed in DROP_REASONS


@settings(max_examples=300)
@given(st.dictionaries(st.sampled_from(list(json.loads(encode_answer(ANSWER)))), json_values))
def test_any_values_in_an_answer_parse_or_fail_cleanly(fields: dict[str, Any]) -> None:
    line = json.dumps({**json.loads(encode_answer(ANSWER)), **fields}).encode()
    parsed = _guest_or_reason(line)
    if isinstance(parsed, str):
        assert parsed in DROP_REASONS
    elif isinstance(parsed, ReleaseAnswer):
        assert 0 <= parsed.id < 2**63
        assert 0 <= parsed.released_bytes <= MAX_AMOUNT_BYTES
        assert parsed.refused == "" or (len(parsed.refused) <= 64 and parsed.refused.isascii())


@settings(max_examples=300)
@given(st.dictionaries(st.sampled_from(list(json.loads(encode_request(REQUEST)))), json_values))
def test_the_guest_takes_any_request_values_without_crashing(fields: dict[str, Any]) -> None:
    line = json.dumps({**json.loads(encode_request(REQUEST)), **fields}).encode()
    try:
        request = parse_request(line)
    except BadMessage as err:
        reason = err.reason
    else:
        reason = ""
    if reason:
        assert reason in DROP_REASONS
        return
    assert 0 <= request.release_bytes <= MAX_AMOUNT_BYTES
    assert 0 <= request.deadline_s <= 1e9

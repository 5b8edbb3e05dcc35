"""Progress lines of long cases and of universal training: images done, rate, time left."""

from __future__ import annotations

import logging

import pytest

from iqa_robustness.progress import Progress, format_duration


@pytest.mark.parametrize(("seconds", "text"), [(0.4, "0 s"), (42, "42 s"), (185, "3 min 05 s"), (7620, "2 h 07 min")])
def test_durations_read_as_a_person_would_say_them(seconds, text):
    assert format_duration(seconds) == text


def test_a_line_says_what_is_done_the_rate_and_the_time_left(monkeypatch):
    clock = iter([100.0, 110.0])
    monkeypatch.setattr("iqa_robustness.progress.time.monotonic", lambda: next(clock))
    progress = Progress("ifgsm-niqe-nips2017", total=1000, interval=1e9)
    progress.done = 40
    assert progress.line(now=110.0) == ("ifgsm-niqe-nips2017: 40/1000 images (4%), 4 images/s, about 4 min 00 s left")


def test_lines_come_at_most_once_per_interval_and_once_more_at_the_end(monkeypatch, capsys):
    now = [0.0]
    monkeypatch.setattr("iqa_robustness.progress.time.monotonic", lambda: now[0])
    progress = Progress("case", total=4, interval=10.0)
    for t in (1.0, 11.0, 12.0, 30.0):
        now[0] = t
        progress.advance()
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "[iqa-robustness] case: 2/4 images (50%), 0.182 images/s, about 11 s left",
        "[iqa-robustness] case: 4/4 images (100%), 0.133 images/s, done in 30 s",
    ]


def test_a_short_case_prints_nothing(monkeypatch, capsys):
    progress = Progress("case", total=3, interval=10.0)
    for _ in range(3):
        progress.advance()
    assert capsys.readouterr().err == ""


def test_at_info_level_the_lines_go_to_the_log(caplog, capsys):
    caplog.set_level(logging.INFO, logger="iqa_robustness.progress")
    progress = Progress("training uap vs niqe", total=2, unit="steps", interval=0.0)
    progress.advance(note="loss 0.5")
    assert "training uap vs niqe: 1/2 steps (50%)" in caplog.text
    assert "loss 0.5" in caplog.text
    assert capsys.readouterr().err == ""

"""Progress: lines with an ETA in a log, never a carriage return; nothing when disabled."""

import logging
import sys

import pytest

from qretrain import progress
from qretrain.progress import Progress, duration, track


@pytest.fixture
def log_file(monkeypatch, tmp_path):
    """stderr redirected to a file, as in `qretrain ... 2> log`."""
    stream = open(tmp_path / "log", "w+")
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.setattr(progress, "LOG_EVERY", 0.0)  # a line for every step
    yield stream
    stream.close()


def test_a_log_gets_lines_with_done_total_elapsed_and_eta(log_file, caplog):
    with caplog.at_level(logging.INFO, logger="qretrain.progress"):
        assert list(track(range(4), "Sweeping", unit="cells")) == [0, 1, 2, 3]
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("Sweeping: 1/4 cells, 0 s elapsed, ETA ")
    assert "ETA" not in lines[3] and lines[-1].startswith("Sweeping: 4/4 cells in ")
    log_file.seek(0)
    assert "\r" not in log_file.read()  # no bar was drawn into the file


def test_disabled_or_inner_loops_print_nothing_to_a_log(log_file, caplog):
    with caplog.at_level(logging.INFO, logger="qretrain.progress"):
        list(track(range(3), "quiet", enabled=False))
        list(track(range(3), "inner", log=False))
    assert caplog.records == []


def test_a_note_names_the_work_in_hand(log_file, caplog):
    with caplog.at_level(logging.INFO, logger="qretrain.progress"):
        with Progress("Block-wise", 2, "block passes") as passes:
            passes.note("block 1/2 stem")
            passes.update()
    assert caplog.records[0].getMessage().endswith("ETA 0 s, block 1/2 stem")


@pytest.mark.parametrize("seconds,text", [(3.4, "3 s"), (125, "2 min 5 s"), (3840, "1 h 4 min")])
def test_durations_read_at_a_glance(seconds, text):
    assert duration(seconds) == text


def test_the_estimate_prices_each_kind_of_unit_at_its_own_rate(log_file, caplog, monkeypatch):
    # Two "tensor" cells took 1 s each, one "channel" cell 100 s: left are one tensor
    # cell (1 s) and one channel cell (100 s), not two cells at the mean 34 s.
    now = [0.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
    with caplog.at_level(logging.INFO, logger="qretrain.progress"):
        bar = Progress("Clustering", 5, "cells", kinds={"tensor": 3, "channel": 2})
        for seconds, kind in [(1.0, "tensor"), (1.0, "tensor"), (100.0, "channel")]:
            now[0] += seconds
            bar.update(1, kind=kind)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[-1] == "Clustering: 3/5 cells, 1 min 42 s elapsed, ETA 1 min 41 s"
    # Before any channel cell is done, channel cells are priced at the overall rate.
    assert lines[0] == "Clustering: 1/5 cells, 1 s elapsed, ETA 4 s"

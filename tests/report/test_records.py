"""Reports read every figure from a run folder's records."""

import json

import pytest

from qretrain.report import write_report
from qretrain.report.records import headline_rows


def write_run(folder, evaluate_top1=0.9):
    records = {
        "compress.json": {"float32_bytes": 4000, "file_bytes": 1000, "layout": "packed",
                          "reduction": 0.75, "tensors_clustered": 2, "tensors": 4},
        "plan.json": {"file": "plan.yaml"},
        "evaluate.json": {
            "data": "d: 10 images, labeled",
            "models": {
                "original": {"label": "original", "top1": evaluate_top1, "agreement": 1.0,
                             "kl": 0.0, "file_bytes": 4000},
                "clustered": {"label": "clustered", "top1": None, "agreement": 0.75,
                              "kl": 0.1, "file_bytes": 1000},
            },
        },
    }  # fmt: skip
    for name, record in records.items():
        (folder / name).write_text(json.dumps(record))
    (folder / "plan.yaml").write_text("rules:\n  - {type: Linear, k: 4}\n")


def test_headline_rows_come_from_the_records(tmp_path):
    write_run(tmp_path, evaluate_top1=0.8765)
    headers, rows = headline_rows(tmp_path)
    assert headers[:4] == ["model", "file", "vs float32", "top-1"]
    assert rows[0][3] == "87.65%" and rows[0][2] == "1.00x"
    assert rows[1][2] == "4.00x" and rows[1][3] == "-" and rows[1][4] == "-" and rows[1][5] == "75.00%"


def test_a_folder_without_a_finished_run_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no finished run"):
        headline_rows(tmp_path)


def test_report_pages_carry_the_figures(tmp_path):
    write_run(tmp_path, evaluate_top1=0.8765)
    md, page = write_report(tmp_path)
    assert "87.65%" in md.read_text() and "87.65%" in page.read_text()
    assert "<html" in page.read_text() and "type: Linear, k: 4" in md.read_text()
    assert "2 of 4 tensors clustered" in md.read_text()


def test_report_says_plainly_when_the_guard_kept_the_clustered_start(tmp_path):
    write_run(tmp_path)
    run = {"data": "d: 10 images", "monitor": "val_data", "monitor_metric": "agreement",
           "quality_before": 0.8, "quality_after": 0.8, "wall_seconds": 1.0, "cache_seconds": 0.1,
           "history": [{"epoch": 1, "monitor": 0.7}],
           "guard": "retraining never beat the clustered start on val_data; the start is kept"}  # fmt: skip
    (tmp_path / "label_free.json").write_text(json.dumps(run))
    md, _ = write_report(tmp_path)
    assert "the guard kept the start: that model is the clustered one" in md.read_text()

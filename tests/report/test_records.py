"""Reports read every figure from a run folder's records."""

import json
import os

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
    assert (
        rows[1][2] == "4.00x" and rows[1][3] == "-" and rows[1][4] == "-" and rows[1][5] == "75.00%"
    )


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
           "guard": {"images": 50, "kept": "start", "kl_change": 0.001,
                     "kl_change_95": [-0.002, 0.004]}}  # fmt: skip
    (tmp_path / "label_free.json").write_text(json.dumps(run))
    md, _ = write_report(tmp_path)
    text = md.read_text()
    assert "the guard kept the start: that model is the clustered one" in text
    assert "start kept: KL +0.0010 [-0.0020, +0.0040] on 50 held-out images" in text


def _with_sweep(folder):
    write_run(folder)
    (folder / "analyze").mkdir()
    (folder / "analyze" / "sweep.json").write_text(json.dumps(
        {"cells": [], "seconds": 1.0, "settings": {"kinds": [], "data": "d"}}))  # fmt: skip
    (folder / "analyze" / "census.txt").write_text("census\n")
    (folder / "analyze" / "summary.md").write_text("")
    (folder / "config.yaml").write_text("model: m.h5\n")


@pytest.mark.parametrize("name", ["analyze/census.txt", "plan.yaml", "config.yaml",
                                  "analyze/census.png", "evaluate.json", "compress.json",
                                  "analyze"])  # fmt: skip
def test_report_never_reads_through_a_link(tmp_path, capsys, name):
    from qretrain.cli.main import main

    run = tmp_path / "run"
    run.mkdir()
    _with_sweep(run)
    secret = tmp_path / "secret"
    if name == "analyze":
        (run / "analyze").rename(secret)
    else:
        secret.write_text('{"s3cret": 1}')
        (run / name).unlink(missing_ok=True)
    os.symlink(secret, run / name)
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{str(run / name)!r} is a symbolic link; qretrain reads " \
        f"only files inside {str(run)!r}, never through links: remove the link" in err  # fmt: skip
    assert not (run / "report.md").exists() and not (run / "report.html").exists()


def test_report_never_writes_figures_through_a_link(tmp_path, capsys):
    from qretrain.cli.main import main

    run = tmp_path / "run"
    run.mkdir()
    write_run(run)
    (run / "label_free.json").write_text(
        json.dumps(
            {
                "data": "d",
                "monitor_metric": "agreement",
                "quality_before": 0.5,
                "quality_after": 0.6,
                "wall_seconds": 1.0,
                "cache_seconds": 0.1,
                "history": [{"epoch": 1, "monitor": 0.6}],
            }
        )
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "time.png").write_bytes(b"mine")
    os.symlink(elsewhere, run / "figures")
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "figures' is a symbolic link: qretrain never writes " \
        "through links; remove it" in err  # fmt: skip
    assert [p.name for p in elsewhere.iterdir()] == ["time.png"]
    assert (elsewhere / "time.png").read_bytes() == b"mine"
    os.unlink(run / "figures")
    assert main(["report", str(run)]) == 0
    assert (run / "figures" / "time.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("name,text", [
    ("evaluate.json", '{"data": "d", "models": 3}'),
    ("evaluate.json", "not json"),
    ("evaluate.json", "[" * 100_000 + "]" * 100_000),
    ("compress.json", '{"float32_bytes": 1}'),
    ("compress.json", "\xff\xfe"),
    ("plan.json", '{"predicted_drop": 1}'),
])  # fmt: skip
def test_a_malformed_record_is_one_line(tmp_path, capsys, name, text):
    from qretrain.cli.main import main

    write_run(tmp_path)
    (tmp_path / name).write_bytes(text.encode("latin-1"))
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qretrain report: error: ") and err.count("\n") == 1, err
    assert name in err or "holds a record that is not what qretrain run writes" in err, err
    assert not (tmp_path / "report.md").exists()


def test_html_in_records_is_text_in_both_pages(tmp_path):
    write_run(tmp_path)
    evaluation = json.loads((tmp_path / "evaluate.json").read_text())
    evaluation["data"] = "<script>alert(1)</script>"
    evaluation["models"]["clustered"]["label"] = "a | b <img src=x onerror=alert(2)>"
    (tmp_path / "evaluate.json").write_text(json.dumps(evaluation))
    (tmp_path / "plan.yaml").write_text("# ```\n<script>alert(3)</script>\n")
    md, page = write_report(tmp_path)
    body = page.read_text().split("</head>")[1]  # the head holds the page's own script
    assert "<script>" not in body and "<img src=x" not in body
    markdown = md.read_text()
    assert "&lt;script>alert(1)&lt;/script>" in markdown and "<img" not in markdown
    assert "| a \\| b &lt;img src=x onerror=alert(2)> |" in markdown  # one cell, not two
    # A code block is shown verbatim, in a fence longer than any backticks inside it.
    assert "\n````\n# ```\n<script>alert(3)</script>\n````\n" in markdown


def test_a_plan_sized_for_core_ml_says_so_with_the_package_it_measured(tmp_path):
    write_run(tmp_path)
    (tmp_path / "plan.json").write_text(json.dumps(
        {"cells": 2, "target_size": 1200, "max_drop": None, "metric": "kl", "predicted_drop": 0.1,
         "measured_drop": 0.09, "verify_data": "d", "file_bytes": 1180, "deploy": "coreml"}))  # fmt: skip
    text = write_report(tmp_path)[0].read_text()
    assert "a target size of 1,200 bytes of the Core ML package" in text
    assert "Core ML package, what the target was of, measures 1,180 bytes (3.39x" in text
    # The ratio is to the float32 size the plan was made for, when plan.json records it.
    plan = json.loads((tmp_path / "plan.json").read_text()) | {"float32_bytes": 3540}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    assert "measures 1,180 bytes (3.00x" in write_report(tmp_path)[0].read_text()
    write_run(tmp_path)  # a plan file: nothing said of a package
    assert "Core ML" not in write_report(tmp_path)[0].read_text()


def test_the_file_table_names_codebooks_of_pairs(tmp_path):
    write_run(tmp_path)
    compress = json.loads((tmp_path / "compress.json").read_text()) | {
        "tensor_file_bytes": {"fc.weight": 600, "conv.weight": 300},
        "report": {"tensors": [
            {"name": "fc.weight", "clustered": True, "k_used": 64, "granularity": "pairs",
             "numel": 1600},
            {"name": "conv.weight", "clustered": True, "k_used": 16, "granularity": "tensor",
             "numel": 600}]}}  # fmt: skip
    (tmp_path / "compress.json").write_text(json.dumps(compress))
    text = write_report(tmp_path)[0].read_text()
    assert "| fc.weight | 64 pairs | 3.00 |" in text and "| conv.weight | 16 | 4.00 |" in text

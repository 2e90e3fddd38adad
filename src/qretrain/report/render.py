"""report.md and a self-contained report.html from one list of blocks.

The report is built once as blocks (headings, text, tables, images, code) and
rendered twice: Markdown with image links relative to the run folder, and HTML
with every image embedded as a data URI, so the single file can be mailed or
opened anywhere. A tiny script marks in the page title whether every image
decoded, which is how the render check reads it from a headless browser.

Records may come from anyone, so both pages escape what they show: HTML in a record
is text in report.html and in report.md (whose viewers render inline HTML), a table
cell cannot open a column, and a code block's fence is longer than any run of
backticks inside it. Files are read only inside the run folder, never through a link
(``qretrain.storage.inside``); figures are written only into a real ``figures``
folder (``qretrain.storage.subfolder``).
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path

from qretrain._table import human_bytes
from qretrain.planner.auto import unit_of
from qretrain.report import figures
from qretrain.report.records import RUN_LABELS as LABELS
from qretrain.report.records import headline_rows, read_json, records_of, retrain_records
from qretrain.storage import read_inside, subfolder, text_inside, write_text_atomic


@dataclass
class Block:
    kind: str  # h1 | h2 | p | table | image | code
    content: object
    caption: str = ""


def write_report(out: str | Path) -> tuple[Path, Path]:
    """Write report.md and report.html into the run folder ``out``; return their paths."""
    out = Path(out)
    with records_of(out):
        blocks = _blocks(out)
        markdown, page_text = _markdown(blocks, out), _html(blocks, out)
    md, page = out / "report.md", out / "report.html"
    write_text_atomic(md, markdown)
    write_text_atomic(page, page_text)
    return md, page


def _blocks(out: Path) -> list[Block]:
    config = text_inside(out, "config.yaml") or ""
    model = next((line.split(":", 1)[1].strip() for line in config.splitlines()
                  if line.startswith("model:")), out.name)  # fmt: skip
    b = [Block("h1", f"qretrain report: {model}")]
    headers, rows = headline_rows(out)
    evaluation = read_json(out / "evaluate.json")
    intro = (f"Everything below is read from the JSON records in this folder. "
             f"Evaluation set: {evaluation['data']}.")  # fmt: skip
    b += [Block("p", intro), Block("table", (headers, rows))]
    b += _census_and_sweep(out)
    b += _plan_and_size(out)
    b += _retraining(out, evaluation)
    b += [Block("h2", "Config"), Block("code", config)]
    return b


def _census_and_sweep(out: Path) -> list[Block]:
    sweep_dir = out / "analyze"
    sweep = read_json(sweep_dir / "sweep.json")
    if sweep is None:
        return []
    b = [Block("h2", "Model census (the seed's Figures 6 and 11)"),
         Block("image", sweep_dir / "census.png", "parameters per layer"),
         Block("code", text_inside(out, "analyze/census.txt") or "")]  # fmt: skip
    b.append(Block("h2", "Sweep: each layer clustered alone (Figures 7-8, 12-13)"))
    b.append(Block("p", f"{len(sweep['cells'])} cells, {sweep['seconds']:.1f} s of sweeping on "
                        f"{sweep['settings']['data']}."))  # fmt: skip
    for kind in sweep["settings"]["kinds"]:
        for what in ("size", "quality"):
            png = sweep_dir / f"{what}_{kind}.png"
            if read_inside(out, png.relative_to(out)) is not None:
                b.append(Block("image", png, f"{what} of the {kind} cells against k"))
    summary = (text_inside(out, "analyze/summary.md") or "").splitlines()
    table = [line for line in summary if line.startswith("|")]
    if len(table) > 2:
        split = [[c.strip() for c in line.strip("|").split("|")] for line in table]
        within = ("1 millinat of predicted KL" if sweep["settings"].get("signal") == "fisher"
                  else "1 point")  # fmt: skip
        b.append(Block("table", (split[0], split[2:]), f"smallest k per layer within {within}"))
    return b


def _plan_and_size(out: Path) -> list[Block]:
    b = [Block("h2", "The plan and the file")]
    plan = read_json(out / "plan.json") or {}
    if "predicted_drop" in plan:
        b.append(Block("p", f"Automatic plan: {plan['cells']} cells within "
                            f"{_budget(plan)}; predicted drop {plan['predicted_drop']:.2f}, "
                            f"measured {plan['measured_drop']:.2f} {unit_of(plan['metric'])} "
                            f"on {plan['verify_data']}."))  # fmt: skip
    elif "file" in plan:
        b.append(Block("p", f"Plan from {plan['file']}."))
    b.append(Block("code", text_inside(out, "plan.yaml") or ""))
    c = read_json(out / "compress.json")
    if c:
        b.append(Block("p", f"{c['tensors_clustered']} of {c['tensors']} tensors clustered; "
                            f"float32 {human_bytes(c['float32_bytes'])} -> {c['layout']} file "
                            f"{human_bytes(c['file_bytes'])} ({c['reduction']:.2%} smaller, "
                            f"{c['float32_bytes'] / c['file_bytes']:.2f}x)."))  # fmt: skip
        if plan.get("deploy") == "coreml" and plan.get("file_bytes"):
            # against the float32 size the target was of (the sweep's), as plan.yaml says
            float32 = plan.get("float32_bytes") or c["float32_bytes"]
            ratio = float32 / plan["file_bytes"]
            b.append(Block("p", f"The plan's Core ML package, what the target was of, measures "
                                f"{plan['file_bytes']:,} bytes ({ratio:.2f}x "
                                "smaller than float32): `qretrain export --format coreml` writes it "
                                "from this plan's files."))  # fmt: skip
        b += _file_table(c)
    return b


TENSOR_ROWS = 25  # the largest tensors shown one by one; the rest summed


def _file_table(c: dict) -> list[Block]:
    """What the file holds: its parts, and per tensor its bytes, k and bits per weight."""
    b = []
    if "breakdown" in c:
        parts = ", ".join(f"{part} {human_bytes(n)} ({n / c['file_bytes']:.1%})"
                          for part, n in c["breakdown"].items())  # fmt: skip
        b.append(Block("p", f"The file: {parts}."))
    sizes = c.get("tensor_file_bytes") or {}
    records = {r["name"]: r for r in c.get("report", {}).get("tensors", [])}
    order = sorted(sizes, key=sizes.get, reverse=True)
    rows = []
    for name in order[:TENSOR_ROWS]:
        r = records.get(name, {})
        k = str(r.get("k_used")) if r.get("clustered") else "float32"
        if r.get("clustered") and r.get("granularity") == "pairs":
            k += " pairs"  # k_used 2-vectors, as `qretrain inspect` prints them
        bits = f"{8 * sizes[name] / r['numel']:.2f}" if r.get("numel") else "-"
        rows.append([name, k, bits, f"{sizes[name]:,}", f"{sizes[name] / c['file_bytes']:.1%}"])
    rest = sum(sizes[n] for n in order[TENSOR_ROWS:])
    if rest:
        rows.append([f"({len(order) - TENSOR_ROWS} more tensors)", "", "", f"{rest:,}",
                     f"{rest / c['file_bytes']:.1%}"])  # fmt: skip
    if rows:
        b.append(Block("table", (["tensor", "k", "bits per weight (on disk)", "bytes (gzip)",
                                  "share of the file"], rows)))  # fmt: skip
    return b


def _budget(plan: dict) -> str:
    if plan.get("max_drop") is not None:
        return f"a budget of {plan['max_drop']:g} {unit_of(plan['metric'])}"
    of = " of the Core ML package" if plan.get("deploy") == "coreml" else ""
    return f"a target size of {plan['target_size']:,} bytes{of}"


def _retraining(out: Path, evaluation: dict) -> list[Block]:
    runs = retrain_records(out)
    if not runs:
        return []
    figures_dir = subfolder(out / "figures")  # never a link: PNGs would land elsewhere
    b = [Block("h2", "Retraining (Figures 9/14, 15, 16)")]
    rows = []
    for name, r in runs.items():
        guard = _guard(r.get("guard"))
        rows.append([LABELS[name], r["data"], r["monitor_metric"],
                     f"{r['quality_before']:.2%}", f"{r['quality_after']:.2%}",
                     f"{r['wall_seconds']:.1f}", f"{r['cache_seconds']:.1f}", guard])  # fmt: skip
    b.append(Block("table", (["run", "data", "monitor", "before", "after", "wall (s)",
                              "cache pass (s)", "guard"], rows)))  # fmt: skip
    for name, r in runs.items():
        if (r.get("guard") or {}).get("kept") == "start":
            b.append(Block("p", f"Note: for {LABELS[name]}, retraining did not bring the model "
                                "closer to the original on the held-out images by a margin they "
                                "resolve, so the guard kept the start: that model is the "
                                "clustered one."))  # fmt: skip
        b += _block_stage(LABELS[name], r.get("blocks"))
    metric = "top1" if all(m["top1"] is not None for m in evaluation["models"].values()) \
        else "agreement"  # fmt: skip
    b.append(Block("image", figures.quality_per_epoch(runs, LABELS, figures_dir / "epochs.png"),
                   "quality per epoch"))  # fmt: skip
    b.append(Block("image", figures.before_after(evaluation["models"], metric,
                                                 figures_dir / "before_after.png"),
                   "before and after retraining"))  # fmt: skip
    b.append(Block("image", figures.retrain_time(runs, LABELS, figures_dir / "time.png"),
                   "retraining time"))  # fmt: skip
    return b


def _guard(decision: dict | None) -> str:
    """A guard's decision (``recipe.stages.guard``) in a table cell."""
    if not decision:
        return "-"
    low, high = decision["kl_change_95"]
    return (
        f"{decision['kept']} kept: KL {decision['kl_change']:+.4f} [{low:+.4f}, {high:+.4f}] "
        f"on {decision['images']} held-out images"
    )


def _block_stage(label: str, stage: dict | None) -> list[Block]:
    """The block-wise stage of a run: per block, what trained and how close it got."""
    if not stage:
        return []
    if "fallback" in stage:
        return [Block("p", f"{label}: {stage['fallback']}.")]
    rows = [[str(h["block"]), h["name"], str(h["trained"]), str(h["codebooks"]),
             f"{h['loss_per_pass'][0]:.3g}" if h["loss_per_pass"] else "-",
             f"{h['mse_after']:.3g}", f"{h['seconds']:.1f}"] for h in stage["history"]]  # fmt: skip
    header = ["block", "modules", "tensors trained", "codebooks trained", "first-pass loss",
              "error after (MSE)", "seconds"]  # fmt: skip
    if any("assignments" in h for h in stage["history"]):  # learned assignments (rounding)
        header.append("assignments")
        for row, h in zip(rows, stage["history"]):
            row.append(_assignments(h.get("assignments")))
    text = (f"{label}: block-wise reconstruction, {len(stage['history'])} blocks in "
            f"{stage['seconds']:.0f} s (block values kept in {stage['activations']})")  # fmt: skip
    if "quality_start" in stage:
        text += (f"; on {stage['monitor']}: {stage['quality_start']:.2%} before, "
                 f"{stage['quality_blocks']:.2%} after")  # fmt: skip
    if "guard" in stage:
        text += f"; guard: {stage['guard']}"
    return [Block("p", text + "."), Block("table", (header, rows))]


def _assignments(choice: dict | None) -> str:
    """A block's learned-assignment choice (``retrain.blocks._choose``'s record)."""
    if choice is None:
        return "-"
    if choice["chosen"] == "nearest":
        return f"nearest (of {choice['free']:,} free)"
    return f"learned: {choice['moved']:,} of {choice['free']:,} moved"


def _markdown(blocks: list[Block], out: Path) -> str:
    """Markdown with image links relative to the run folder ``out``."""
    lines = []
    for block in blocks:
        if block.kind == "h1":
            lines += [f"# {_md(block.content)}", ""]
        elif block.kind == "h2":
            lines += [f"## {_md(block.content)}", ""]
        elif block.kind == "p":
            lines += [_md(block.content), ""]
        elif block.kind == "table":
            headers, rows = block.content
            lines.append("| " + " | ".join(_cell(h) for h in headers) + " |")
            lines.append("|" + "---|" * len(headers))
            lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
            lines.append("")
        elif block.kind == "image":
            lines += [f"![{_md(block.caption)}]({block.content.relative_to(out)})", ""]
        elif block.kind == "code":
            text = str(block.content).rstrip()
            longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
            fence = "`" * max(3, longest + 1)  # no line inside can close it
            lines += [fence, text, fence, ""]
    return "\n".join(lines)


def _md(value: object) -> str:
    """Text for Markdown: HTML in it shows as text (viewers render inline HTML). Only
    ``<`` opens a tag (or an autolink), so only it is escaped: ``->`` stays readable."""
    return str(value).replace("<", "&lt;")


def _cell(value: object) -> str:
    """A table cell: escaped, on one line, with no ``|`` that would open a column."""
    return _md(value).replace("\r", " ").replace("\n", " ").replace("|", "\\|")


STYLE = """body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.25rem .5rem}
th{background:#f3f3f3}img{max-width:100%;display:block;margin:1rem 0}
pre{background:#f6f6f6;padding:.75rem;overflow-x:auto;font-size:.85rem}"""
CHECK = """<script>window.addEventListener('load',function(){var i=document.images,ok=0;
for(var n=0;n<i.length;n++){if(i[n].complete&&i[n].naturalWidth>0)ok++;}
document.title='images '+ok+'/'+i.length;document.body.dataset.imagesLoaded=ok+'/'+i.length;});
</script>"""


def _html(blocks: list[Block], out: Path) -> str:
    parts = []
    for block in blocks:
        if block.kind in ("h1", "h2"):
            parts.append(f"<{block.kind}>{html.escape(str(block.content))}</{block.kind}>")
        elif block.kind == "p":
            parts.append(f"<p>{html.escape(str(block.content))}</p>")
        elif block.kind == "table":
            headers, rows = block.content
            head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
            body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row)
                           + "</tr>" for row in rows)  # fmt: skip
            parts.append(f"<table><tr>{head}</tr>{body}</table>")
        elif block.kind == "image":
            png = read_inside(out, Path(block.content).relative_to(out)) or b""
            data = base64.b64encode(png).decode()
            parts.append(f'<img alt="{html.escape(block.caption)}" '
                         f'src="data:image/png;base64,{data}">')  # fmt: skip
        elif block.kind == "code":
            parts.append(f"<pre>{html.escape(str(block.content))}</pre>")
    title = html.escape(str(blocks[0].content))
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{STYLE}</style>{CHECK}</head><body>{''.join(parts)}</body></html>\n"
    )

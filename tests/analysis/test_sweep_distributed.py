"""The sweep in two processes (gloo on the CPU): cells shared out, one record, the
same bytes as one process's, fresh or resumed."""

import json
import types

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import qretrain
from qretrain.analysis import AnalyzeSettings, analyze
from qretrain.analysis import sweep as sweep_module
from qretrain.cli.main import main
from qretrain.data.sets import tensor_set
from qretrain.testing.ranks import free_port, join_gloo, torchrun_qretrain

KS = (1, 2, 4, 256)
# A clock that never moves: cells' seconds are the one thing two runs cannot share.
STOPPED = types.SimpleNamespace(perf_counter=lambda: 0.0)


def tiny_data(n: int = 24):
    g = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8).numpy()
    return tensor_set("tiny", images, torch.randint(0, 10, (n,), generator=g).numpy())


def sweep_into(folder, rank: int = 0, world_size: int = 1):
    model = qretrain.load(f"{folder}/model.h5")
    return analyze(model, tiny_data(), folder, AnalyzeSettings(ks=KS), progress=False,
                   plots=False, rank=rank, world_size=world_size)  # fmt: skip


def _worker(rank: int, world_size: int, port: int, folder: str) -> None:
    join_gloo(rank, world_size, port)
    sweep_module.time = STOPPED
    measured = []
    real = sweep_module._sweep_kind

    def counting(*args, **kwargs):
        for cell in real(*args, **kwargs):
            measured.append((cell.unit, cell.kind, cell.k))
            yield cell

    sweep_module._sweep_kind = counting
    try:
        fresh = sweep_into(f"{folder}/two", rank, world_size)
        fresh_measured = list(measured)
        measured.clear()
        sweep_into(f"{folder}/resumed", rank, world_size)
        torch.save({"fresh": fresh_measured, "resumed": list(measured),
                    "cells": len(fresh.cells)}, f"{folder}/rank{rank}.pt")  # fmt: skip
    finally:
        dist.destroy_process_group()


def test_two_ranks_write_the_record_one_process_writes(tiny_vgg, tmp_path, monkeypatch):
    monkeypatch.setattr(sweep_module, "time", STOPPED)
    for name in ("one", "two", "resumed"):
        (tmp_path / name).mkdir()
        qretrain.save(tiny_vgg, tmp_path / name / "model.h5")
    one = sweep_into(tmp_path / "one")
    # A sweep killed after 5 cells, for the two ranks to finish.
    real = sweep_module._sweep_kind
    done = []

    def dies_after_five(*args, **kwargs):
        for cell in real(*args, **kwargs):
            if len(done) == 5:
                raise KeyboardInterrupt
            done.append(cell)
            yield cell

    monkeypatch.setattr(sweep_module, "_sweep_kind", dies_after_five)
    with pytest.raises(KeyboardInterrupt):
        sweep_into(tmp_path / "resumed")
    monkeypatch.setattr(sweep_module, "_sweep_kind", real)

    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    total = len(one.cells)
    # Each rank measured its own cells (i % 2 == rank), none twice...
    fresh = [set(r["fresh"]) for r in ranks]
    assert len(fresh[0]) == len(ranks[0]["fresh"]) and abs(len(fresh[0]) - len(fresh[1])) <= 1
    assert not fresh[0] & fresh[1] and len(fresh[0] | fresh[1]) == total
    assert [r["cells"] for r in ranks] == [total, total]  # every rank returns the whole sweep
    # ...and rank 0 wrote the record and table one process writes, byte for byte.
    for name in ("sweep.json", "sweep.csv", "summary.md", "census.txt"):
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()
    # Resumed: only the cells left were measured, and the record is the same again.
    assert sum(len(r["resumed"]) for r in ranks) == total - 5
    assert (tmp_path / "resumed" / "sweep.json").read_bytes() == (
        tmp_path / "one" / "sweep.json").read_bytes()  # fmt: skip
    assert len(json.loads((tmp_path / "one" / "sweep.json").read_text())["cells"]) == total


def test_cli_under_torchrun_writes_one_sweep(tiny_vgg, tmp_path, capsys):
    qretrain.save(tiny_vgg, tmp_path / "m.h5")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 256, (16, 28, 28), dtype=np.uint8))
    args = ["analyze", str(tmp_path / "m.h5"), "--data", str(tmp_path / "d.npz"), "--ks", "1,4",
            "--no-plots", "--quiet"]  # fmt: skip
    assert main([*args, "-o", str(tmp_path / "one")]) == 0
    capsys.readouterr()
    done = torchrun_qretrain([*args, "-o", str(tmp_path / "two")])
    assert done.stdout.count("cells,") == 1  # only rank 0 reports
    records = [json.loads((tmp_path / name / "sweep.json").read_text()) for name in ("one", "two")]
    for record in records:
        record.pop("seconds")
        for cell in record["cells"]:
            cell.pop("seconds")
    assert records[0] == records[1] and len(records[0]["cells"]) == 7 * 2 * 2

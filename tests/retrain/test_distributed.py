"""Retraining in two processes (gloo on the CPU), through the API and under torchrun."""

import json

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import qretrain
from qretrain.cluster import clusters_of
from qretrain.data import load_dataset
from qretrain.distributed import Ranks
from qretrain.models import get_arch
from qretrain.retrain import RetrainConfig, retrain
from qretrain.testing.ranks import free_port, join_gloo, torchrun_qretrain

IMAGES = 96  # 48 per rank


def _worker(rank: int, world_size: int, port: int, folder: str) -> None:
    join_gloo(rank, world_size, port)
    try:
        teacher = qretrain.load(f"{folder}/teacher.h5")
        student = qretrain.load(f"{folder}/student.h5")
        data = load_dataset(f"{folder}/d.npz", get_arch(student).contract)
        data.labels = None
        seen = []
        teacher.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
        result = retrain(student, teacher, data, RetrainConfig(epochs=2, batch_size=8),
                         progress=False, rank=rank, world_size=world_size)  # fmt: skip
        torch.save({"state": student.state_dict(), "teacher_inputs": sum(seen),
                    "history": result.record["history"]}, f"{folder}/rank{rank}.pt")  # fmt: skip
    finally:
        dist.destroy_process_group()


def test_two_ranks_train_their_shards_into_one_model(retrain_files):
    tmp_path = retrain_files(IMAGES)
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    start = qretrain.load(tmp_path / "student.h5").state_dict()
    for name, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][name]), name  # DDP kept them identical
    changed = [n for n in start if not torch.equal(start[n], ranks[0]["state"][n])]
    assert changed and not set(changed) & set(clusters_of(qretrain.load(tmp_path / "student.h5")))
    # each rank cached its own half: the teacher ran once per input over both ranks
    assert [r["teacher_inputs"] for r in ranks] == [IMAGES // 2, IMAGES // 2]
    # losses and the monitor are reduced over ranks, so both records agree
    assert ranks[0]["history"][-1]["loss"] == ranks[1]["history"][-1]["loss"]
    assert ranks[0]["history"][-1]["monitor"] == ranks[1]["history"][-1]["monitor"]


def test_several_ranks_need_an_initialized_process_group():
    with pytest.raises(ValueError, match="needs torch.distributed initialized"):
        Ranks(0, 2)
    with pytest.raises(ValueError, match="rank 2 of world_size 2 is impossible"):
        Ranks(2, 2)


def test_cli_under_torchrun_writes_one_output(retrain_files):
    tmp_path = retrain_files(IMAGES)
    out = tmp_path / "out.h5"
    done = torchrun_qretrain(["retrain", str(tmp_path / "student.h5"),
                              "--teacher", str(tmp_path / "teacher.h5"),
                              "--data", str(tmp_path / "d.npz"), "-o", str(out),
                              "--epochs", "2", "--batch-size", "8", "--quiet"])  # fmt: skip
    record = json.loads(out.with_suffix(".json").read_text())
    per_rank = IMAGES // 2 - (IMAGES // 2) // 10  # less the held-out monitor slice
    assert record["world_size"] == 2 and record["train_images"] == 2 * per_rank
    assert done.stdout.count("wrote ") == 1  # only rank 0 writes and reports
    model = qretrain.load(out)
    assert model.features[0].weight.unique().numel() <= 4

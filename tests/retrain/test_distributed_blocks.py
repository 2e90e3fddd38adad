"""Block-wise reconstruction in two processes (gloo on the CPU): the ranks hold
different halves of the images, end bit-identical to each other, and equal to one
process with the same global batch up to float rounding."""

import copy
import inspect
import json

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import qretrain
import qretrain.zoo
from qretrain.data.sets import tensor_set
from qretrain.retrain import RetrainConfig, retrain
from qretrain.retrain import blocks as blocks_module
from qretrain.testing.ranks import free_port, join_gloo, torchrun_qretrain
from qretrain.testing.reruns import assert_same

IMAGES = 50  # 25 per rank: a step of 16 takes 7, 8 or 9 of them on each
PER_RANK_BATCH = 8
# Two processes sum each step's gradients in another order than one process does:
# float rounding, which Adam's normalised steps carry on. Measured: about 2e-7.
TOLERANCE = 1e-5
PLAN = {"rules": [{"type": "Conv2d", "k": 4}, {"type": "Linear", "k": 8}]}


def make_data(n: int, seed: int):
    rng = np.random.default_rng(seed)
    ds = tensor_set("random", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), None)
    ds.contract = qretrain.zoo.resnet_small.contract
    return ds


def config(batch_size: int) -> RetrainConfig:
    # Codebooks and learned assignments train too: their gradients come from the
    # summed weight gradients, and the assignments' choice from summed errors.
    return RetrainConfig(objective="blocks", block_epochs=2, batch_size=batch_size, lr=1e-2,
                         tune_centroids=True, tune_assignments=True)  # fmt: skip


def run(folder: str, batch_size: int, rank: int = 0, world_size: int = 1, *,
        checkpoint: str = "one", resume: bool = False, stop: tuple | None = None) -> dict:  # fmt: skip
    """One retraining from student.h5; ``stop``: (block, pass) at which it is killed."""
    # One thread, as torchrun gives each process (where torch 2.14's oneDNN crashed in
    # strided 1x1 convolutions in channels-last layout, which retrain.layout now avoids).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    teacher = qretrain.load(f"{folder}/teacher.h5")
    student = qretrain.load(f"{folder}/student.h5")
    seen, passes = [], []
    images, train_pass = blocks_module._images, blocks_module._train_pass

    def stopping(*args, **kwargs):
        called = inspect.signature(train_pass).bind(*args, **kwargs).arguments
        if (called["block"], called["epoch"]) == stop:
            raise KeyboardInterrupt
        passes.append((called["block"], called["epoch"]))
        return train_pass(*args, **kwargs)

    blocks_module._images = lambda data: seen.append(images(data)) or seen[-1]
    blocks_module._train_pass = stopping
    try:
        # No val_data: its guard would undo the blocks of this untrained model, and
        # leave nothing to compare.
        result = retrain(student, teacher, make_data(IMAGES, 0), config(batch_size),
                         checkpoint=f"{folder}/{checkpoint}.ckpt", resume=resume, progress=False,
                         rank=rank, world_size=world_size)  # fmt: skip
    finally:
        blocks_module._images, blocks_module._train_pass = images, train_pass
        torch.set_num_threads(threads)
    return {
        "state": student.state_dict(),
        "images": seen[0],
        "record": result.record,
        "passes": passes,
    }


def _worker(rank: int, world_size: int, port: int, folder: str) -> None:
    join_gloo(rank, world_size, port)
    try:
        whole = run(folder, PER_RANK_BATCH, rank, world_size, checkpoint=f"rank{rank}")
        # Killed mid-block 3 (after its learned assignments were chosen), then resumed
        # by both ranks from rank 0's checkpoint.
        try:
            run(folder, PER_RANK_BATCH, rank, world_size, checkpoint="shared", stop=(2, 1))
        except KeyboardInterrupt:
            pass
        resumed = run(folder, PER_RANK_BATCH, rank, world_size, checkpoint="shared", resume=True)
        torch.save({**whole, "resumed": resumed["state"], "resumed_passes": resumed["passes"]},
                   f"{folder}/rank{rank}.pt")  # fmt: skip
    finally:
        dist.destroy_process_group()


def test_two_ranks_reconstruct_blocks_as_one_process_does(tiny_resnet, tmp_path):
    student = copy.deepcopy(tiny_resnet)
    qretrain.cluster_(student, PLAN, progress=False)
    qretrain.save(tiny_resnet, tmp_path / "teacher.h5")
    qretrain.save(student, tmp_path / "student.h5")
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    one = run(str(tmp_path), 2 * PER_RANK_BATCH)

    # Each rank held its own half of the images (i % 2 == rank), none dropped...
    assert torch.equal(ranks[0]["images"], one["images"][0::2])
    assert torch.equal(ranks[1]["images"], one["images"][1::2])
    # ...and still they end bit-identical: the gradients were summed every step.
    for name, value in ranks[0]["state"].items():
        assert_same(value, ranks[1]["state"][name], name)
    history = [r["record"]["blocks"]["history"] for r in (*ranks, one)]
    assert _without_seconds(history[0]) == _without_seconds(history[1])
    # Equal to one process whose step takes the same 16 images.
    start = qretrain.load(tmp_path / "student.h5").state_dict()
    moved = [n for n in start if not torch.equal(start[n], one["state"][n])]
    assert len(moved) > 5  # trained tensors and codebooks moved, so the comparison means something
    worst = max((ranks[0]["state"][n] - one["state"][n]).abs().max().item() for n in start)
    print(f"largest difference from one process: {worst:.3g}")
    assert worst < TOLERANCE, worst
    for two, single in zip(history[0], history[2]):
        assert two.get("assignments", {}).get("chosen") == single.get("assignments", {}).get(
            "chosen")  # fmt: skip
        assert np.allclose(two["loss_per_pass"], single["loss_per_pass"], rtol=1e-4)
    assert any("assignments" in h for h in history[2])
    record = ranks[0]["record"]
    assert record["world_size"] == 2 and record["train_images"] == IMAGES
    assert record["quality_after"] == ranks[1]["record"]["quality_after"]
    assert record["quality_after"] == one["record"]["quality_after"]  # scored over both halves
    # Only rank 0 writes the block checkpoint...
    assert (tmp_path / "rank0.blocks.ckpt").exists()
    assert not (tmp_path / "rank1.blocks.ckpt").exists()
    # ...from which both ranks resumed a killed run where it stopped...
    assert ranks[0]["resumed_passes"][0] == ranks[1]["resumed_passes"][0] == (2, 1)
    for name, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[0]["resumed"][name]), name
        assert torch.equal(value, ranks[1]["resumed"][name]), name
    # ...and which one process may not resume: its steps would take other images.
    with pytest.raises(ValueError, match="written by 2 processes; resume with as many"):
        run(str(tmp_path), PER_RANK_BATCH, checkpoint="shared", resume=True)


def test_cli_under_torchrun_reconstructs_blocks(retrain_files):
    tmp_path = retrain_files(IMAGES)
    out = tmp_path / "out.h5"
    done = torchrun_qretrain(["retrain", str(tmp_path / "student.h5"),
                              "--teacher", str(tmp_path / "teacher.h5"),
                              "--data", str(tmp_path / "d.npz"), "-o", str(out),
                              "--objective", "blocks", "--block-epochs", "1",
                              "--tune-centroids", "--batch-size", "8", "--quiet"])  # fmt: skip
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["world_size"] == 2 and record["train_images"] == IMAGES
    assert "fallback" not in record["blocks"] and len(record["blocks"]["history"]) >= 2
    assert done.stdout.count("wrote ") == 1  # only rank 0 writes and reports
    assert not out.with_suffix(".blocks.ckpt").exists()  # removed after the run
    assert qretrain.load(out).features[0].weight.unique().numel() <= 4


def _without_seconds(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in entry.items() if k != "seconds"} for entry in history]

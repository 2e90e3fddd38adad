"""Peak memory of qretrain commands on small crafted inputs, as docs/BENCHMARKS.md reports it.

Each input is under 1 MB and states far more than it holds (a model of constants,
tensors of zeros that gzip shrinks 1,000 times, a 4096-px input contract, a 12000 x
12000 PNG, a zip-bombed .npz, gzip-bombed IDX and CSV); the "allowed" cases are the
most a small input may still ask for under qretrain's memory budgets. Each command
runs through the real command line (``python -m qretrain``) in a process of its own,
and its peak resident memory is the kernel's (``os.wait4``'s ``ru_maxrss``). Linux
carries a process's peak over ``execve`` from the process that started it, so the
inputs are made in a process of their own and the commands are started from this
one, which never imports torch (about 20 MiB). The anchors are the same commands on
sound small inputs: the cost of importing torch and the command line. A watchdog
stops a command past ``--cap`` GiB (the machine is shared), and says so.

    python benchmarks/bench_memory.py                      # -> benchmarks/results/memory.json
    python benchmarks/bench_memory.py --src OLD/src --out before.json   # another checkout
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import RESULTS, Machine, parser, write_result

GIB = 1 << 30
ACCEPT = 1.5 * GIB  # no input under 1 MB may make a command use more


def contract(size: int, channels: int = 1) -> dict:
    return {"channels": channels, "size": size, "mean": [0.5] * channels,
            "std": [0.25] * channels, "resize": None}  # fmt: skip


def make_inputs(folder: Path) -> dict[str, Path]:
    """Every input the cases read, sound ones included (run in a process of its own)."""
    import numpy as np
    import torch
    from PIL import Image

    import qretrain
    from qretrain.testing import bombs

    torch.manual_seed(0)
    paths = {}
    tiny = qretrain.build_model("qretrain.zoo:vgg_small", width=4, hidden=32)
    paths["tiny.h5"] = folder / "tiny.h5"
    qretrain.save(tiny, paths["tiny.h5"])
    paths["images"] = folder / "images"  # 8 sound 28 x 28 photos' stand-ins
    paths["images"].mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(
            paths["images"] / f"{i}.png")  # fmt: skip
    paths["small.npz"] = folder / "small.npz"
    np.savez_compressed(paths["small.npz"], x=rng.integers(0, 256, (64, 28, 28), dtype=np.uint8))
    # The model file cases.
    paths["vit.h5"] = bombs.model_file(folder / "vit.h5", "torchvision:vit_l_16", sound=True)
    paths["zeros.h5"] = folder / "zeros.h5"
    zeroed = qretrain.build_model("torchvision:resnet152")
    with torch.no_grad():  # all zeros but one value per tensor: raw, gzip 1,000:1
        for tensor in zeroed.state_dict().values():
            tensor.zero_()
            tensor.view(-1)[:1] = 1
    qretrain.save(zeroed, paths["zeros.h5"])
    del zeroed
    paths["contract4096.h5"] = bombs.model_file(folder / "contract4096.h5",
                                                "qretrain.zoo:resnet_small",
                                                contract=contract(4096), sound=True)  # fmt: skip
    # The widest resnet_small whose one 1024-px input stays within the activation
    # budget (its stem's output is width x 4 MiB): the most a small file may ask.
    paths["contract1024.h5"] = bombs.model_file(folder / "contract1024.h5",
                                                "qretrain.zoo:resnet_small", kwargs={"width": 15},
                                                contract=contract(1024), sound=True)  # fmt: skip
    imagenet = {**contract(224, 3), "resize": 256}  # a torchvision model's usual input
    paths["mobilenet.h5"] = bombs.model_file(folder / "mobilenet.h5", "torchvision:mobilenet_v2",
                                             contract=imagenet, sound=True)  # fmt: skip
    # The data cases.
    paths["png"] = folder / "png"
    paths["png"].mkdir()
    bombs.png(paths["png"] / "big.png", 12000, 12000)
    paths["photo"] = folder / "photo"  # the largest image decoded: a 24-megapixel photo's size
    paths["photo"].mkdir()
    bombs.png(paths["photo"] / "6000x4000.png", 6000, 4000)
    paths["small-bomb.npz"] = bombs.npz(folder / "small-bomb.npz", (85_000, 28, 28))
    paths["bomb.npz"] = bombs.npz(folder / "bomb.npz", (1_250_000, 28, 28))
    paths["idx.gz"] = bombs.idx(folder / "bomb-idx3-ubyte.gz", (1_250_000, 28, 28))
    paths["idx"] = bombs.idx(folder / "claim-idx3-ubyte", (1 << 20, 1024, 1024), stored=False)
    paths["csv.gz"] = bombs.csv_gz(folder / "bomb.csv.gz", 150_000)
    return paths


def cases(p: dict[str, Path]) -> list[tuple[str, str, list[str]]]:
    """(case, the key in ``p`` of the input it is about, command line after ``qretrain``)."""
    tiny, images = str(p["tiny.h5"]), str(p["images"])
    return [
        ("anchor: inspect a sound file", "tiny.h5", ["inspect", tiny]),
        ("anchor: evaluate a sound file on 8 images", "images",
         ["evaluate", tiny, "--data", images, "--limit", "8"]),
        ("vit_l_16, every tensor a constant", "vit.h5", ["inspect", str(p["vit.h5"])]),
        ("resnet152, tensors of zeros (raw)", "zeros.h5", ["inspect", str(p["zeros.h5"])]),
        ("4096-px contract: inspect", "contract4096.h5", ["inspect", str(p["contract4096.h5"])]),
        ("4096-px contract: evaluate 8 images", "contract4096.h5",
         ["evaluate", str(p["contract4096.h5"]), "--data", images, "--limit", "8"]),
        ("allowed: 1024-px contract, resnet_small width 15: inspect", "contract1024.h5",
         ["inspect", str(p["contract1024.h5"])]),
        ("allowed: 1024-px contract, resnet_small width 15: evaluate 8", "contract1024.h5",
         ["evaluate", str(p["contract1024.h5"]), "--data", images, "--limit", "8"]),
        ("allowed: mobilenet_v2 of constants, on the 6000 x 4000 PNG", "mobilenet.h5",
         ["evaluate", str(p["mobilenet.h5"]), "--data", str(p["photo"])]),
        ("12000 x 12000 PNG in a folder", "png",
         ["evaluate", tiny, "--data", str(p["png"])]),
        ("allowed: 6000 x 4000 PNG in a folder", "photo",
         ["evaluate", tiny, "--data", str(p["photo"])]),
        ("zip-bombed .npz", "bomb.npz", ["evaluate", tiny, "--data", str(p["bomb.npz"]),
                                         "--limit", "8"]),
        ("allowed: .npz of 64 MiB of zeros", "small-bomb.npz",
         ["evaluate", tiny, "--data", str(p["small-bomb.npz"]), "--limit", "8"]),
        ("gzip-bombed IDX", "idx.gz",
         ["evaluate", tiny, "--data", str(p["idx.gz"]), "--limit", "8"]),
        ("IDX header claiming 1 TiB", "idx",
         ["evaluate", tiny, "--data", str(p["idx"]), "--limit", "8"]),
        ("gzip-bombed CSV", "csv.gz",
         ["evaluate", tiny, "--data", str(p["csv.gz"]), "--limit", "8"]),
    ]  # fmt: skip


def run(argv: list[str], env: dict[str, str], cap: int) -> dict:
    """Run one command; its exit code, peak RSS, wall time, last stderr line."""
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "qretrain", *argv], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    stopped = threading.Event()

    def watch() -> None:  # the machine is shared: stop a command past the cap
        status = Path(f"/proc/{child.pid}/status")
        while child.returncode is None:
            try:
                rss = next(int(line.split()[1]) * 1024 for line in status.read_text().splitlines()
                           if line.startswith("VmRSS:"))  # fmt: skip
            except (OSError, StopIteration):
                return
            if rss > cap:
                stopped.set()
                child.send_signal(signal.SIGKILL)
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    stderr = child.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    lines = [line for line in stderr.splitlines() if line.strip()]
    return {"exit": child.returncode, "peak_rss_mib": round(usage.ru_maxrss / 1024),
            "seconds": round(time.perf_counter() - start, 2), "stopped_at_cap": stopped.is_set(),
            "stderr_lines": len(lines), "last_line": lines[-1][:300] if lines else ""}  # fmt: skip


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--src", help="run the commands from this src/ (another checkout)")
    cli.add_argument("--out", type=Path, default=RESULTS / "memory.json")
    cli.add_argument("--cap", type=float, default=4.0, help="GiB: stop a command past it")
    cli.add_argument("--make", type=Path, help=argparse.SUPPRESS)  # the inputs' process
    args = cli.parse_args()
    if args.make:
        print(json.dumps({k: str(v) for k, v in make_inputs(args.make).items()}))
        return
    machine = Machine()  # this process never imports torch: its record has no threads
    env = dict(os.environ)
    if args.src:
        env["PYTHONPATH"] = os.pathsep.join([str(Path(args.src).resolve()),
                                             env.get("PYTHONPATH", "")])  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        made = subprocess.run([sys.executable, __file__, "--make", tmp], check=True,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
        paths = {k: Path(v) for k, v in json.loads(made.stdout.splitlines()[-1]).items()}
        rows = []
        for case, name, argv in cases(paths):
            target = paths[name]
            files = [target] if target.is_file() else sorted(target.rglob("*"))
            size = sum(f.stat().st_size for f in files)
            result = {"case": case, "input": ", ".join(f.name for f in files), "input_bytes": size,
                      "command": "qretrain " + " ".join(a.replace(tmp, "TMP") for a in argv),
                      **run(argv, env, int(args.cap * GIB))}  # fmt: skip
            rows.append(result)
            print(
                f"{case:50s} {size:>9,} B  exit {result['exit']:>3}  "
                f"{result['peak_rss_mib']:>6,} MiB  {result['seconds']:6.1f} s"
                f"{'  STOPPED' if result['stopped_at_cap'] else ''}  {result['last_line'][:90]}"
            )
    over = [r["case"] for r in rows if r["input_bytes"] < 1e6 and
            (r["peak_rss_mib"] * 2**20 > ACCEPT or r["stopped_at_cap"])]  # fmt: skip
    record = {"src": args.src or "this checkout", "cap_gib": args.cap,
              "accept_gib": ACCEPT / GIB, "over_acceptance": over, "cases": rows}  # fmt: skip
    write_result(args.out, record, machine)
    print(f"over {ACCEPT / GIB} GiB: {over or 'none'}; written to {args.out}")


if __name__ == "__main__":
    main()

"""bfloat16 against float32 on this CPU: what the recipe's choice of precision rests on.

EfficientNet-Lite0's forward pass on 64 random 224 px images (channels last, as the
sweep runs it) in float32 and in bfloat16, median of 3 after one warm-up each, and
whether ``qretrain.device.fast_bfloat16`` finds native bfloat16 here. The recipe sweeps
in bfloat16 only where it does.

    python benchmarks/bench_bfloat16.py   # -> benchmarks/results/bfloat16.json
"""

from __future__ import annotations

import statistics
import time

import _common

IMAGES, REPEATS = 64, 3


def main() -> None:
    _common.parser(__doc__).parse_args()
    machine = _common.Machine()

    import torch

    import qretrain
    from qretrain.device import fast_bfloat16

    model = qretrain.load_model("efficientnet-lite0").eval()
    x = torch.randn(IMAGES, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    seconds = {}
    for dtype in (torch.float32, torch.bfloat16):
        work = model.to(dtype, memory_format=torch.channels_last)
        batch = x.to(dtype, memory_format=torch.channels_last)
        times = []
        with torch.no_grad():
            for _ in range(REPEATS + 1):
                start = time.perf_counter()
                work(batch)
                times.append(time.perf_counter() - start)
        seconds[str(dtype).removeprefix("torch.")] = statistics.median(times[1:])
    ratio = seconds["bfloat16"] / seconds["float32"]
    print(f"forward of {IMAGES} images: float32 {seconds['float32']:.2f} s, bfloat16 "
          f"{seconds['bfloat16']:.2f} s ({ratio:.1f}x); native bfloat16: "
          f"{fast_bfloat16('cpu')}")  # fmt: skip
    record = {"images": IMAGES, "repeats": REPEATS, "seconds": seconds,
              "bfloat16_over_float32": ratio, "fast_bfloat16": fast_bfloat16("cpu"),
              "cpu_capability": torch.backends.cpu.get_cpu_capability()}  # fmt: skip
    _common.write_result(_common.RESULTS / "bfloat16.json", record, machine)


if __name__ == "__main__":
    main()

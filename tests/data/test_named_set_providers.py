"""Named sets built from this machine's packages live in qretrain.assets.pools and load
on first use: the core imports none of them, a spec loads only its own module."""

import subprocess
import sys
from pathlib import Path

import numpy as np

import qretrain
from qretrain.data import load_dataset, registry

SRC = Path(qretrain.__file__).parent


def modules_after(code: str) -> set[str]:
    """The qretrain modules a fresh interpreter holds after running ``code``."""
    probe = code + "\nimport sys; print(' '.join(m for m in sys.modules if 'qretrain' in m))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    return set(out.split())


def test_importing_the_core_loads_no_asset_module():
    loaded = modules_after("import qretrain; from qretrain.data import load_dataset")
    assert "qretrain.data.registry" in loaded
    assert not {m for m in loaded if m.startswith("qretrain.assets") or "teacher" in m}


def test_a_spec_loads_only_the_module_that_may_name_it():
    loaded = modules_after("from qretrain.data import registry; registry.is_named('natural:x')")
    assets = {m for m in loaded if m.startswith("qretrain.assets.pools.")}
    # natural's own module and what it reads from (OpenCV's frames, foolbox's folder).
    assert assets == {"qretrain.assets.pools." + m for m in ("natural", "opencv", "packages",
                                                            "imagecache")}  # fmt: skip


def test_a_provider_registers_its_sets_on_first_use(tmp_path, monkeypatch):
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 8, 8), np.uint8), y=np.arange(3))
    (tmp_path / "my_pool.py").write_text(
        "from qretrain.data import load_dataset, register_dataset\n"
        "@register_dataset(r'my-pool', 'my-pool (three images)')\n"
        f"def _mine(match):\n    return load_dataset({str(tmp_path / 'd.npz')!r})\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.known_datasets()  # every provider loaded first: none registers into the copy
    monkeypatch.setattr(registry, "_REGISTRY", list(registry._REGISTRY))
    monkeypatch.setattr(registry, "_PROVIDERS", registry._PROVIDERS.copy())
    registry.register_provider(r"my-pool(:.*)?", "my_pool")
    assert "my_pool" not in sys.modules
    assert len(load_dataset("my-pool")) == 3 and "my_pool" in sys.modules
    assert "my-pool (three images)" in registry.known_datasets()
    monkeypatch.delitem(sys.modules, "my_pool")


def test_package_paths_stay_in_the_assets_package():
    outside = [
        p.relative_to(SRC).as_posix()
        for p in SRC.rglob("*.py")
        if "/usr/share" in p.read_text() and "assets" not in p.relative_to(SRC).parts
    ]
    assert not outside, outside

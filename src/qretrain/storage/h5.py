"""qretrain model files: HDF5 with gzip, sealed, written atomically, read as untrusted.

Layout of a file (format version 2)::

    user block (512 B)    the seal: SHA-256 of the rest of the file (``storage.seal``)
    /manifest             uint8 bytes of one JSON document: format, format_version,
                          layout, qretrain_version, arch {spec, kwargs, contract},
                          plans, and tensors: per state-dict tensor in order, its
                          name, encoding, shape, dtype, sha256 (of the decoded
                          tensor's bytes) and, when clustered, cluster {k, method,
                          granularity, bits, sq_error}
    /tensors/<name>       one entry per state-dict tensor:
        raw tensor        a dataset of its own dtype and shape
        packed clustered  a group: codebook (G, K) float32, indices (bit-packed uint8;
                          absent when K = 1), sizes (G,) uint16 when per channel

In the ``paper`` layout (the seed's storage) clustered tensors are raw float32
datasets holding centroid values, with their codebook in a small
``<name>.codebook`` companion so that loading needs no sort. The file holds no
HDF5 attributes: all metadata is in the manifest.

Loading trusts nothing in the file: the seal is checked before HDF5 parses it, the
manifest and every dataset against ``storage.schema`` before any data is read,
the architecture is built on the meta device and compared with the declared shapes
before anything is allocated, and the spec resolves only to known architectures
unless ``trust_code=True``. Every failure is a ``QretrainFileError``.
"""

from __future__ import annotations

import enum
import functools
import io
import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import nn

from qretrain._version import __version__
from qretrain.cluster.options import Granularity, parse_enum
from qretrain.cluster.state import clusters_of, plans_of
from qretrain.cluster.tensor import ClusteredTensor
from qretrain.errors import QretrainError, QretrainFileError
from qretrain.models.loading import check_fits, register_file_loader
from qretrain.models.specs import (
    ArchSpec,
    Origin,
    get_arch,
    is_named,
    make_builder,
    registration_budget,
    set_arch,
)
from qretrain.storage.atomic import atomic_path, commit_pair
from qretrain.storage.bitpack import pack_indices
from qretrain.storage.decode import indices_from_values, read_packed, tensor_sha256
from qretrain.storage.schema import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    ClusterMeta,
    EntryMeta,
    Manifest,
    read_manifest,
)
from qretrain.storage.seal import USERBLOCK, check_seal, write_seal

logger = logging.getLogger(__name__)
GZIP_LEVEL = 4  # level 9 is ~3x slower here for under 1% smaller files
# What parsing a damaged or crafted file can raise inside h5py, numpy and torch; each
# becomes a QretrainFileError naming the file (the cause stays chained).
_PARSE_ERRORS = (OSError, KeyError, ValueError, TypeError, IndexError, RuntimeError,
                 MemoryError, RecursionError, AttributeError, OverflowError)  # fmt: skip


class Layout(str, enum.Enum):
    PACKED = "packed"  # bit-packed indices + codebook per clustered tensor
    PAPER = "paper"  # the seed's: every tensor float32, gzip does the rest


@dataclass(frozen=True)
class SaveResult:
    path: Path
    file_bytes: int
    layout: Layout
    tensor_bytes: dict[str, int]  # bytes each tensor takes on disk after gzip
    sha256: str  # the file's seal: sidecar records name it to pair with the file

    def to_dict(self) -> dict:
        return {"path": str(self.path), "file_bytes": self.file_bytes,
                "layout": self.layout.value, "sha256": self.sha256,
                "tensor_bytes": self.tensor_bytes}  # fmt: skip

    def summary(self) -> str:
        return f"{self.path}: {self.file_bytes:,} bytes, {self.layout.value} layout"


def save(
    model: nn.Module,
    path: str | Path,
    *,
    layout: Layout | str = Layout.PACKED,
    arch: ArchSpec | str | None = None,
    record: Callable[[SaveResult], dict] | None = None,
    record_path: str | Path | None = None,
) -> SaveResult:
    """Write ``model`` (clustered or not) to ``path`` atomically.

    ``arch`` says how to rebuild the architecture; by default the one recorded when
    the model was built by qretrain, or an importable no-argument class. It must
    rebuild a model whose state dict fits this one, or save refuses.
    ``record``, when given, makes the JSON sidecar (``record_path``, by default
    ``path.with_suffix(".json")``) from the result; file and sidecar are committed as
    one unit (the sidecar names the file's ``sha256``, and a crash never leaves a new
    file beside an old sidecar).
    """
    layout = parse_enum(Layout, layout, "layout")
    arch = _arch_for(model, arch)
    path = Path(path)
    with atomic_path(path) as tmp:
        tensor_bytes = _write_file(tmp, model, arch, layout)
        sha = write_seal(tmp)
        result = SaveResult(path, tmp.stat().st_size, layout, tensor_bytes, sha)
        if record is not None:
            sidecar = {**record(result), "file_sha256": sha}
            sidecar_path = Path(record_path) if record_path else path.with_suffix(".json")
            commit_pair(tmp, path, json.dumps(sidecar, indent=2), sidecar_path)
    return result


def file_bytes(model: nn.Module, layout: Layout | str = Layout.PACKED) -> int:
    """The bytes ``save`` would write for ``model``, measured by writing it to a
    temporary file (HDF5 lays a file out differently in memory: ~0.3% smaller).

    Needs no rebuildable architecture (the size differs from a saved file's by the
    length of the arch spec's JSON at most).
    """
    layout = parse_enum(Layout, layout, "layout")
    arch = get_arch(model) or ArchSpec(type(model).__name__)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "size.h5"
        _write_file(path, model, arch, layout)
        return path.stat().st_size


def _write_file(target, model: nn.Module, arch: ArchSpec, layout: Layout) -> dict[str, int]:
    """Write the HDF5 file at ``target``; returns each tensor's stored bytes."""
    clusters = clusters_of(model)
    state = model.state_dict()
    tensor_bytes = {}
    with h5py.File(target, "w", userblock_size=USERBLOCK) as f:
        tensors = f.create_group("tensors")
        entries = [_write_entry(tensors, name, tensor, clusters.get(name), layout)
                   for name, tensor in state.items()]  # fmt: skip
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "layout": layout.value,
            "qretrain_version": __version__,
            "arch": arch.to_dict(),
            "plans": plans_of(model),
            "tensors": [entry.to_dict() for entry in entries],
        }
        _dataset(f, MANIFEST, np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8))
        f.flush()
        for name in state:
            tensor_bytes[name] = _stored_bytes(tensors[name])
            if f"{name}.codebook" in tensors:
                tensor_bytes[name] += _stored_bytes(tensors[f"{name}.codebook"])
    return tensor_bytes


@register_file_loader(".h5", ".hdf5")
def load(path: str | Path, *, map_location: str | torch.device = "cpu",
         trust_code: bool = False) -> nn.Module:  # fmt: skip
    """Rebuild the model stored in ``path``, with its clustering; in eval mode.

    Raises QretrainFileError for a truncated, corrupted or malformed file, an
    unknown format version, tensors that do not fit the architecture, and an
    architecture spec that names code (``module:callable``) unless ``trust_code``.
    Loading never trains, downloads or writes anything.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {str(path)!r} does not exist")
    where = repr(str(path))
    check_seal(path)
    try:
        with h5py.File(path, "r") as f:
            manifest = read_manifest(f, where)
            make = _architecture(manifest, where, trust_code)
            state, clusters = _decode(f["tensors"], manifest, where)
    except QretrainFileError:
        raise
    except _PARSE_ERRORS as e:
        raise QretrainFileError(
            f"{where} is not a readable qretrain file (truncated or corrupted?): {e}"
        ) from e
    model = make()
    model.load_state_dict(state)
    set_arch(model, manifest.arch)
    clusters_of(model).update(clusters)
    plans_of(model).extend(manifest.plans)
    return model.to(map_location).eval()


def _architecture(manifest: Manifest, where: str, trust_code: bool) -> Callable[[], nn.Module]:
    """A builder for the file's architecture, checked against the declared shapes on
    the meta device (no memory) before anything is decoded or allocated."""
    arch = manifest.arch
    try:
        make = make_builder(arch.spec, arch.kwargs, Origin.FILE, trust_code)
    except QretrainFileError:
        raise
    except (QretrainError, FileNotFoundError) as e:
        raise QretrainFileError(f"{where}: cannot rebuild its architecture: {e}") from e
    declared = {e.name: e.shape for e in manifest.entries}
    # Modules hold at most a few tensors each, plus containers: a generous budget.
    budget = 4 * len(manifest.entries) + 64
    try:
        with torch.device("meta"), registration_budget(budget):
            probe = make()
    except QretrainFileError:
        raise
    except QretrainError as e:
        raise QretrainFileError(f"{where}: cannot rebuild its architecture: {e}") from e
    except _PARSE_ERRORS as e:
        if trust_code:  # trusted code may not run on the meta device; it is trusted
            return _file_errors(make, where)
        raise QretrainFileError(f"{where}: cannot build {arch.spec!r}: {e}") from e
    try:
        check_fits(probe, declared, where)
    except QretrainError as e:
        raise QretrainFileError(str(e)) from None
    return _file_errors(make, where)


def _file_errors(make: Callable[[], nn.Module], where: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        try:
            return make()
        except QretrainError as e:
            raise QretrainFileError(f"{where}: cannot rebuild its architecture: {e}") from e

    return build


def _decode(tensors: h5py.Group, manifest: Manifest, where: str):
    state, clusters = {}, {}
    for entry in manifest.entries:
        obj = tensors[entry.name]
        label = f"{where}: tensor {entry.name!r}"
        if entry.encoding == "clustered":
            clustered = read_packed(obj, entry, label)
            tensor = clustered.decode()
        else:
            tensor = torch.from_numpy(np.asarray(obj[()]).copy())
            clustered = None
            if entry.cluster is not None:
                codebook = tensors[f"{entry.name}.codebook"][()]
                clustered = indices_from_values(entry, tensor, codebook, label)
        tensor = tensor.to(getattr(torch, entry.dtype)).reshape(entry.shape)
        if tensor_sha256(tensor) != entry.sha256:
            raise QretrainFileError(f"{label} fails its checksum (corrupted file)")
        state[entry.name] = tensor
        if clustered is not None:
            clusters[entry.name] = clustered
    return state, clusters


def _arch_for(model: nn.Module, arch: ArchSpec | str | None) -> ArchSpec:
    """The ArchSpec to record, checked to rebuild a model that ``model``'s state fits."""
    if isinstance(arch, str):
        arch = ArchSpec(arch)
    arch = arch if arch is not None else get_arch(model)
    if arch is None:
        raise QretrainError(
            f"cannot record how to rebuild {type(model).__name__}: build it with "
            "qretrain.build_model(spec), or pass arch='package.module:callable' to save()"
        )
    # What load will run: the architecture alone (the caller's own spec, so trusted).
    make = make_builder(arch.spec, arch.kwargs, Origin.FILE, trust_code=True)
    try:
        with torch.device("meta"):
            rebuilt = make()
    except Exception:  # user code that cannot run on the meta device: build it for real
        rebuilt = make()
    try:
        check_fits(rebuilt, {k: tuple(v.shape) for k, v in model.state_dict().items()},
                   f"the model ({type(model).__name__})")  # fmt: skip
    except QretrainError as e:
        raise QretrainError(
            f"{e}; {arch.spec!r} with {arch.kwargs} would not rebuild it, so the file could "
            "never be loaded: build the model with qretrain.build_model(spec, **kwargs), or "
            "pass save(..., arch=ArchSpec(spec, kwargs))"
        ) from None
    if not is_named(arch.spec):
        logger.warning(
            "%s names code (%r): loading the file will need trust_code=True / --trust-code",
            type(model).__name__, arch.spec,
        )
    if arch.contract is None:
        contract = getattr(get_arch(rebuilt), "contract", None)
        arch = ArchSpec(arch.spec, arch.kwargs, contract)
    return arch


def _write_entry(group: h5py.Group, name: str, tensor: torch.Tensor,
                 clustered: ClusteredTensor | None, layout: Layout) -> EntryMeta:  # fmt: skip
    """One state-dict tensor's entry (and paper-layout codebook companion)."""
    tensor = tensor.detach().cpu().contiguous()
    cluster = None
    if clustered is not None:
        _check_still_clustered(name, tensor, clustered)
        cluster = ClusterMeta(clustered.k, clustered.method, clustered.granularity,
                              clustered.bits, clustered.sq_error)  # fmt: skip
    if clustered is not None and layout is Layout.PACKED:
        _write_packed(group, name, clustered)
    else:
        _dataset(group, name, tensor.numpy())
        if clustered is not None:
            _dataset(group, f"{name}.codebook", clustered.codebook.numpy())
    encoding = "clustered" if clustered is not None and layout is Layout.PACKED else "raw"
    dtype = str(tensor.dtype).removeprefix("torch.")
    return EntryMeta(name, encoding, tuple(tensor.shape), dtype, tensor_sha256(tensor), cluster)


def entry_file_bytes(
    name: str,
    tensor: torch.Tensor,
    clustered: ClusteredTensor | None = None,
    layout: Layout | str = Layout.PACKED,
) -> int:
    """Bytes one tensor's entry adds to a model file, measured by writing it in memory
    with the code ``save`` uses (gzip included, so the figure depends on the values).

    ``tensor`` must hold ``clustered``'s values when that is given. Entries of a file
    are independent, so a file's size changes by the difference of two such figures
    when one tensor is clustered (up to HDF5's metadata rounding, a few hundred bytes).
    """
    layout = parse_enum(Layout, layout, "layout")
    meta = []
    entry = _memory_file_bytes(lambda g: meta.append(_write_entry(g, name, tensor, clustered,
                                                                  layout)))  # fmt: skip
    return entry - _empty_file_bytes() + len(json.dumps(meta[0].to_dict())) + 2


@functools.cache
def _empty_file_bytes() -> int:
    return _memory_file_bytes(lambda g: [])


def _memory_file_bytes(write) -> int:
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        write(f.create_group("tensors"))
    return buffer.getbuffer().nbytes


def _check_still_clustered(name: str, tensor: torch.Tensor, clustered: ClusteredTensor) -> None:
    if tensor.shape != clustered.shape or not torch.equal(clustered.decode(), tensor.float()):
        raise QretrainError(
            f"{name} no longer holds its codebook's values (changed after clustering); "
            "cluster the model again before saving"
        )


def _dataset(group: h5py.Group, name: str, data: np.ndarray) -> h5py.Dataset:
    """gzip on every dataset that HDF5 can chunk (not scalars or empty ones), no shuffle."""
    if data.ndim == 0 or data.size == 0:
        return group.create_dataset(name, data=data)
    return group.create_dataset(
        name, data=data, compression="gzip", compression_opts=GZIP_LEVEL, shuffle=False
    )


def _write_packed(group: h5py.Group, name: str, clustered: ClusteredTensor) -> None:
    entry = group.create_group(name)
    _dataset(entry, "codebook", clustered.codebook.numpy())
    if clustered.granularity is Granularity.CHANNEL:
        _dataset(entry, "sizes", clustered.sizes.numpy().astype(np.uint16))
    if clustered.bits:
        packed = pack_indices(clustered.indices.numpy().reshape(-1), clustered.bits)
        _dataset(entry, "indices", packed)


def _stored_bytes(entry: h5py.HLObject) -> int:
    if isinstance(entry, h5py.Dataset):
        return entry.id.get_storage_size()
    return sum(_stored_bytes(entry[key]) for key in entry)

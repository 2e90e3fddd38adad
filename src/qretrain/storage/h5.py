"""qretrain model files: HDF5 with gzip, sealed, written atomically, read as untrusted.

Layout of a file (format version 3; 4 when it holds a codebook of pairs)::

    user block (512 B)    the seal: SHA-256 of the rest of the file (``storage.seal``)
    /manifest             uint8 bytes of one JSON document: format, format_version,
                          layout, qretrain_version, arch {spec, kwargs, contract},
                          plans, sha256 (of every decoded tensor), and tensors: per
                          state-dict tensor in order, its name, encoding (raw,
                          clustered or constant), shape, dtype and, when clustered,
                          cluster {k, method, granularity, bits, width, sq_error}
    /data                 uint8: every tensor's bytes end to end, in manifest order
        raw tensor        its values, C order, little-endian
        packed clustered  codebook (G, K) float32 (pairs: (1, K, 2)), sizes (G,)
                          uint16 when per channel, bit-packed indices (absent when
                          K = 1; one per pair for pairs)
        constant          nothing: the manifest holds the one value

One dataset for all tensors keeps HDF5's own metadata to a few kilobytes per file,
where a dataset per tensor cost ~2.8 KB each (object header, chunk index). Batch
norm is stored folded by default (``storage.fold``): a scale and a shift per
channel, its running statistics two constants.

In the ``paper`` layout (the seed's storage) clustered tensors are raw float32
values with their codebook after them, so that loading needs no sort.

Loading trusts nothing in the file: the seal is checked before HDF5 parses it, the
manifest and the data's storage against ``storage.schema`` before any data is read,
the architecture is built on the meta device and compared with the declared shapes
before anything is allocated, and the spec resolves only to known architectures
unless ``trust_code=True``. Every failure is a ``QretrainFileError``.
"""

from __future__ import annotations

import json
import logging
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import nn

from qretrain._memory import MODEL_RATIO, check_decoded
from qretrain._version import __version__
from qretrain.cluster.options import Granularity, parse_enum
from qretrain.cluster.state import clusters_of, plans_of
from qretrain.cluster.tensor import ClusteredTensor
from qretrain.errors import QretrainError, QretrainFileError
from qretrain.models.loading import check_fits, register_file_loader
from qretrain.models.meta import build_on_meta
from qretrain.models.specs import (
    ArchSpec,
    Origin,
    get_arch,
    is_named,
    make_builder,
    set_arch,
)
from qretrain.storage.atomic import atomic_path, commit_pair, nofollow
from qretrain.storage.bitpack import pack_indices
from qretrain.storage.decode import decode_bytes, decode_entry, tensor_bytes_le, tensors_sha256
from qretrain.storage.fold import folded_state
from qretrain.storage.layout import Layout
from qretrain.storage.schema import (
    DATA,
    FORMAT,
    MANIFEST,
    ClusterMeta,
    EntryMeta,
    Manifest,
    format_version,
    read_manifest,
)
from qretrain.storage.seal import USERBLOCK, check_seal, write_seal

logger = logging.getLogger(__name__)
GZIP_LEVEL = 4  # level 9 is ~3x slower here for under 1% smaller files
CHUNK = 1 << 18  # /data's gzip chunks: 256 KiB
# HDF5 1.10+ structures: a one-chunk dataset needs no B-tree, object headers are
# compact; a file of a small model is then its tensors plus about 2 KB.
LIBVER = ("v110", "latest")
# What parsing a damaged or crafted file can raise inside h5py, numpy and torch; each
# becomes a QretrainFileError naming the file (the cause stays chained).
_PARSE_ERRORS = (OSError, KeyError, ValueError, TypeError, IndexError, RuntimeError,
                 MemoryError, RecursionError, AttributeError, OverflowError)  # fmt: skip


@dataclass(frozen=True)
class SaveResult:
    path: Path
    file_bytes: int
    layout: Layout
    tensor_bytes: dict[str, int]  # each tensor's bytes after gzip, compressed on its own
    sha256: str  # the file's seal: sidecar records name it to pair with the file
    breakdown: dict[str, int]  # file bytes by part: indices, codebooks, unclustered, metadata

    def to_dict(self) -> dict:
        return {"path": str(self.path), "file_bytes": self.file_bytes,
                "layout": self.layout.value, "sha256": self.sha256,
                "breakdown": self.breakdown, "tensor_bytes": self.tensor_bytes}  # fmt: skip

    def summary(self) -> str:
        return f"{self.path}: {self.file_bytes:,} bytes, {self.layout.value} layout"


def save(
    model: nn.Module,
    path: str | Path,
    *,
    layout: Layout | str = Layout.PACKED,
    fold_batchnorm: bool | None = None,
    arch: ArchSpec | str | None = None,
    record: Callable[[SaveResult], dict] | None = None,
    record_path: str | Path | None = None,
) -> SaveResult:
    """Write ``model`` (clustered or not) to ``path`` atomically.

    ``fold_batchnorm`` (default: in the packed layout) stores each unclustered batch
    norm as a scale and a shift per channel (``storage.fold``): eval outputs equal up
    to float rounding, and the loaded model's running statistics are 0 and 1 - eps.
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
        written = _write_file(tmp, model, arch, layout, fold_batchnorm)
        sha = write_seal(tmp)
        size = tmp.stat().st_size
        breakdown = {**written.parts, "metadata": size - sum(written.parts.values())}
        result = SaveResult(path, size, layout, written.tensor_bytes, sha, breakdown)
        if record is not None:
            sidecar = {**record(result), "file_sha256": sha}
            sidecar_path = Path(record_path) if record_path else path.with_suffix(".json")
            commit_pair(tmp, path, json.dumps(sidecar, indent=2), sidecar_path)
    return result


def file_bytes(model: nn.Module, layout: Layout | str = Layout.PACKED,
               fold_batchnorm: bool | None = None) -> int:  # fmt: skip
    """The bytes ``save`` would write for ``model``, measured by writing it to a
    temporary file.

    Needs no rebuildable architecture (the size differs from a saved file's by the
    length of the arch spec's JSON at most).
    """
    layout = parse_enum(Layout, layout, "layout")
    arch = get_arch(model) or ArchSpec(type(model).__name__)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "size.h5"
        _write_file(path, model, arch, layout, fold_batchnorm, per_tensor=False)
        return path.stat().st_size


@dataclass(frozen=True)
class _Written:
    tensor_bytes: dict[str, int]  # per tensor, gzip on its own
    parts: dict[str, int]  # /data's stored bytes split by part, in proportion


def _write_file(target, model: nn.Module, arch: ArchSpec, layout: Layout,
                fold_batchnorm: bool | None, per_tensor: bool = True) -> _Written:  # fmt: skip
    """Write the HDF5 file at ``target``; ``per_tensor``: also gzip each tensor on its
    own for ``SaveResult.tensor_bytes`` (a second compression pass: only ``save``)."""
    clusters = clusters_of(model)
    state = model.state_dict()
    if fold_batchnorm if fold_batchnorm is not None else layout is Layout.PACKED:
        state = folded_state(model, state, keep=set(clusters))
    encoded = [_encode(name, tensor, clusters.get(name), layout) for name, tensor in state.items()]
    payload = b"".join(b for _, segments in encoded for _, b in segments)
    manifest = {
        "format": FORMAT,
        "format_version": format_version([entry for entry, _ in encoded]),
        "layout": layout.value,
        "qretrain_version": __version__,
        "arch": arch.to_dict(),
        "plans": plans_of(model),
        "sha256": tensors_sha256(state.values()),
        "tensors": [entry.to_dict() for entry, _ in encoded],
    }
    # libhdf5 builds the file in memory (the same bytes, less the user block) and Python
    # writes it: a full disk is then an OSError from a plain write, never libhdf5 failing
    # inside close, which kept a handle on the removed temporary and crashed at exit.
    with h5py.File(str(target), "w", driver="core", backing_store=False,
                   userblock_size=USERBLOCK, libver=LIBVER) as f:  # fmt: skip
        _dataset(f, MANIFEST, np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8))
        data = _dataset(f, DATA, np.frombuffer(payload, dtype=np.uint8))
        f.flush()
        stored = data.id.get_storage_size()
        image = f.id.get_file_image()
    with open(target, "wb", opener=nofollow) as out:
        out.write(bytes(USERBLOCK))  # the user block, which write_seal fills
        out.write(image)
    tensor_bytes, raw_parts = {}, {"indices": 0, "codebooks": 0, "unclustered": 0}
    for entry, segments in encoded:
        if per_tensor:
            tensor_bytes[entry.name] = sum(_gzip_bytes(b) for _, b in segments)
        for part, b in segments:
            raw_parts[_PART_OF[part]] += len(b)
    # The parts share /data's gzip: split its stored bytes in proportion to each's size.
    total = max(1, len(payload))
    parts = {part: round(stored * n / total) for part, n in raw_parts.items()}
    return _Written(tensor_bytes, parts)


_PART_OF = {"values": "unclustered", "codebook": "codebooks", "sizes": "codebooks",
            "indices": "indices"}  # fmt: skip


def _gzip_bytes(data: bytes) -> int:
    return len(zlib.compress(data, GZIP_LEVEL)) if data else 0


@register_file_loader(".h5", ".hdf5")
def load(path: str | Path, *, map_location: str | torch.device = "cpu",
         trust_code: bool = False, max_memory: int | None = None) -> nn.Module:  # fmt: skip
    """Rebuild the model stored in ``path``, with its clustering; in eval mode.

    Raises QretrainFileError for a truncated, corrupted or malformed file, an
    unknown format version, tensors that do not fit the architecture, an
    architecture spec that names code (``module:callable``) unless ``trust_code``,
    and tensors that would take more memory than the file's size allows
    (``qretrain._memory``: 256 x its size + 64 MiB) unless ``max_memory`` (bytes, or
    an enclosing ``qretrain.memory_limit``) allows more.
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
            held = decode_bytes(manifest.entries, manifest.data_bytes)
            check_decoded(where, held, path.stat().st_size, MODEL_RATIO, max_memory,
                          QretrainFileError)  # fmt: skip
            data = np.asarray(f[DATA][()])
        state, clusters = _decode(data, manifest, where)
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
        probe = build_on_meta(make, budget)  # small tensors real only if it must read them
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


def _decode(data: np.ndarray, manifest: Manifest, where: str):
    state, clusters = {}, {}
    for entry in manifest.entries:
        tensor, clustered = decode_entry(entry, data, f"{where}: tensor {entry.name!r}")
        state[entry.name] = tensor
        if clustered is not None:
            clusters[entry.name] = clustered
    if tensors_sha256(state.values()) != manifest.sha256:
        raise QretrainFileError(f"{where}: its tensors fail their checksum (corrupted file)")
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
            type(model).__name__,
            arch.spec,
        )
    if arch.contract is None:
        contract = getattr(get_arch(rebuilt), "contract", None)
        arch = ArchSpec(arch.spec, arch.kwargs, contract)
    return arch


def _encode(name: str, tensor: torch.Tensor, clustered: ClusteredTensor | None,
            layout: Layout) -> tuple[EntryMeta, list[tuple[str, bytes]]]:  # fmt: skip
    """One state-dict tensor's manifest entry and its parts' bytes for /data."""
    tensor = tensor.detach().cpu().contiguous()
    dtype = str(tensor.dtype).removeprefix("torch.")
    shape = tuple(tensor.shape)
    if clustered is None:
        value = _constant_value(tensor)
        if value is not None:
            return EntryMeta(name, "constant", shape, dtype, value=value), []
        return EntryMeta(name, "raw", shape, dtype), [("values", tensor_bytes_le(tensor))]
    _check_still_clustered(name, tensor, clustered)
    cluster = ClusterMeta(clustered.k, clustered.method, clustered.granularity,
                          clustered.bits, clustered.sq_error, clustered.codebook.shape[1])  # fmt: skip
    codebook = ("codebook", tensor_bytes_le(clustered.codebook))
    if layout is Layout.PAPER:
        return EntryMeta(name, "raw", shape, dtype, cluster), [("values", tensor_bytes_le(tensor)),
                                                               codebook]  # fmt: skip
    segments = [codebook]
    if clustered.granularity is Granularity.CHANNEL:
        segments.append(("sizes", clustered.sizes.numpy().astype("<u2").tobytes()))
    if clustered.bits:
        packed = pack_indices(clustered.indices.numpy().reshape(-1), clustered.bits)
        segments.append(("indices", packed.tobytes()))
    return EntryMeta(name, "clustered", shape, dtype, cluster), segments


def _constant_value(tensor: torch.Tensor) -> float | int | bool | None:
    """The one value of a tensor whose elements are all bit-identical and finite."""
    if tensor.numel() == 0:
        return None
    flat = tensor.reshape(-1)
    first = flat[:1]
    if tensor.dtype.is_floating_point:
        if not bool(torch.isfinite(first).all()):
            return None
        same = torch.equal(flat.view(_INT_OF[tensor.dtype]),
                           first.view(_INT_OF[tensor.dtype]).expand_as(flat))  # fmt: skip
    else:
        same = bool((flat == first).all())
    return first.item() if same else None


_INT_OF = {torch.float32: torch.int32, torch.float64: torch.int64, torch.float16: torch.int16}


def entry_file_bytes(
    name: str,
    tensor: torch.Tensor,
    clustered: ClusteredTensor | None = None,
    layout: Layout | str = Layout.PACKED,
) -> int:
    """Bytes one tensor's entry adds to a model file: its parts after gzip, plus its
    manifest entry's JSON (the figure depends on the values).

    ``tensor`` must hold ``clustered``'s values when that is given. Entries of a file
    are independent, so a file's size changes by the difference of two such figures
    when one tensor is clustered (up to gzip's chunking, a few bytes per tensor).
    """
    layout = parse_enum(Layout, layout, "layout")
    entry, segments = _encode(name, tensor, clustered, layout)
    return sum(_gzip_bytes(b) for _, b in segments) + len(json.dumps(entry.to_dict())) + 2


def _check_still_clustered(name: str, tensor: torch.Tensor, clustered: ClusteredTensor) -> None:
    if tensor.shape != clustered.shape or not torch.equal(clustered.decode(), tensor.float()):
        raise QretrainError(
            f"{name} no longer holds its codebook's values (changed after clustering); "
            "cluster the model again before saving"
        )


def _dataset(group: h5py.Group, name: str, data: np.ndarray) -> h5py.Dataset:
    """gzip on every dataset that HDF5 can chunk (not empty ones), no shuffle."""
    if data.size == 0:
        return group.create_dataset(name, data=data)
    return group.create_dataset(name, data=data, chunks=(min(data.size, CHUNK),),
                                compression="gzip", compression_opts=GZIP_LEVEL,
                                shuffle=False)  # fmt: skip

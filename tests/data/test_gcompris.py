"""GCompris's photographs and the Qt resource bundles they come in: files read back as
written, damaged bundles refused in one line, the set made once and cached."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from qretrain.data import DataSourceMissing, load_dataset
from qretrain.assets.pools.qtres import COMPRESSED, COMPRESSED_ZSTD, DIRECTORY, read_bundle
from qretrain.errors import QretrainError, QretrainFileError


def make_bundle(files: dict[str, bytes], compress: tuple[str, ...] = (), version: int = 3,
                flags: dict[str, int] | None = None) -> bytes:  # fmt: skip
    """The bytes of an .rcc bundle (Qt's layout) holding ``files`` by path; those in
    ``compress`` zlib-compressed; ``flags`` overrides a file's entry flags."""
    tree: dict = {}
    for path, data in files.items():
        *folders, name = path.strip("/").split("/")
        node = tree
        for folder in folders:
            node = node.setdefault(folder, {})
        node[name] = path
    names, blobs, entries = bytearray(), bytearray(), []
    name_at: dict[str, int] = {}

    def name_offset(name: str) -> int:
        if name not in name_at:
            name_at[name] = len(names)
            names.extend(struct.pack(">HI", len(name), 0) + name.encode("utf-16-be"))
        return name_at[name]

    entries.append(None)
    pending = [(0, "", tree)]  # breadth first: a folder's children are contiguous
    while pending:
        index, name, node = pending.pop(0)
        first = len(entries)
        children = sorted(node.items())
        entries.extend([None] * len(children))
        entries[index] = (name_offset(name), DIRECTORY, struct.pack(">II", len(children), first))
        for i, (child, value) in enumerate(children):
            if isinstance(value, dict):
                pending.append((first + i, child, value))
                continue
            data, entry_flags = files[value], 0
            if value in compress:
                data, entry_flags = struct.pack(">I", len(data)) + zlib.compress(data), COMPRESSED
            entry_flags = (flags or {}).get(value, entry_flags)
            offset = len(blobs)
            blobs.extend(struct.pack(">I", len(data)) + data)
            entries[first + i] = (
                name_offset(child),
                entry_flags,
                struct.pack(">HHI", 0, 0, offset),
            )
    packed = b"".join(struct.pack(">IH", n, f) + rest + (b"\0" * 8 if version > 1 else b"")
                      for n, f, rest in entries)  # fmt: skip
    header_size = 24
    tree_at = header_size
    blobs_at = tree_at + len(packed)
    names_at = blobs_at + len(blobs)
    header = b"qres" + struct.pack(">IIIII", version, tree_at, blobs_at, names_at, 0)
    return header + packed + bytes(blobs) + bytes(names)


FILES = {"/a/pic.webp": b"webp bytes", "/a/b/deep.WEBP": b"x" * 300, "/a/notes.qml": b"qml",
         "/top.webp": b""}  # fmt: skip


@pytest.mark.parametrize("version", [1, 2, 3])
def test_a_bundle_reads_back_what_it_holds(tmp_path, version):
    path = tmp_path / "b.rcc"
    path.write_bytes(make_bundle(FILES, compress=("/a/b/deep.WEBP",), version=version))
    assert read_bundle(path) == FILES
    assert read_bundle(path, (".webp",)) == {k: v for k, v in FILES.items() if k != "/a/notes.qml"}


def damaged(tmp_path, data: bytes):
    path = tmp_path / "bad.rcc"
    path.write_bytes(data)
    with pytest.raises(QretrainFileError) as e:
        read_bundle(path, max_blob=1000, fix="reinstall it")
    message = str(e.value)
    assert "\n" not in message and message.endswith("reinstall it")
    assert message.startswith(f"{path} is not a readable Qt resource bundle (")
    return message


def test_damaged_bundles_are_refused_with_one_line(tmp_path):
    good = make_bundle(FILES, compress=("/a/b/deep.WEBP",))
    assert "no 'qres' header" in damaged(tmp_path, b"PK\x03\x04" + good[4:])
    assert "format version 7" in damaged(tmp_path, good[:4] + struct.pack(">I", 7) + good[8:])
    assert "past the end" in damaged(tmp_path, good[:60])  # truncated
    assert "past the end" in damaged(tmp_path, good[:10])  # not even a header
    # a folder claiming four billion children: refused before anything is allocated
    root_children = 24 + 6
    huge = good[:root_children] + struct.pack(">I", 2**32 - 1) + good[root_children + 4 :]
    assert "past the end of the tree" in damaged(tmp_path, huge)
    # the root's first child pointing back at the root: a cycle, not a loop
    cycle = good[:root_children] + struct.pack(">II", 1, 0) + good[root_children + 8 :]
    assert "referenced twice" in damaged(tmp_path, cycle)


def test_compressed_entries_never_unpack_past_their_claim(tmp_path):
    big = {"/big.webp": b"\0" * 5000}  # claims 5,000 bytes, more than max_blob 1,000
    assert "claims 5000 bytes" in damaged(tmp_path, make_bundle(big, compress=("/big.webp",)))
    bomb = make_bundle({"/x.webp": b"\0" * 900}, compress=("/x.webp",))
    at = bomb.index(struct.pack(">I", 900))  # the unpacked length, lowered: the stream holds more
    bomb = bomb[:at] + struct.pack(">I", 100) + bomb[at + 4 :]
    assert "unpacks to other than its 100 bytes" in damaged(tmp_path, bomb)
    zero = bomb[:at] + struct.pack(">I", 0) + bomb[at + 4 :]  # 0 is no limit to zlib: still one
    assert "unpacks to other than its 0 bytes" in damaged(tmp_path, zero)
    junk = make_bundle({"/x.webp": b"\0" * 40}, flags={"/x.webp": COMPRESSED})  # not zlib at all
    assert "does not inflate" in damaged(tmp_path, junk)
    zstd = make_bundle({"/x.webp": b"\0" * 40}, flags={"/x.webp": COMPRESSED_ZSTD})
    assert "zstd" in damaged(tmp_path, zstd)


def webp(colour, size=(40, 20), alpha=None) -> bytes:
    image = Image.new("RGBA" if alpha is not None else "RGB", size,
                      (*colour, alpha) if alpha is not None else colour)  # fmt: skip
    out = io.BytesIO()
    image.save(out, format="WEBP", lossless=True)
    return out.getvalue()


def gcompris_tree(root, extra: dict[str, dict[str, bytes]] | None = None) -> None:
    """The four bundles taken, with a picture seen twice, a QML file and a clear one."""
    from qretrain.assets.pools.gcompris import ACTIVITIES

    act = "/gcompris/src/activities"
    pictures = {
        "categorization": {
            f"{act}/categorization/resource/images/tools/hammer.webp": webp(
                (200, 0, 0), (640, 480)
            ),
            f"{act}/categorization/Board.qml": b"Item {}",
        },
        "erase": {
            f"{act}/erase/resource/owl.webp": webp((0, 200, 0)),
            f"{act}/erase/resource/clear.webp": webp((0, 0, 0), alpha=0),
        },
        "explore_monuments": {
            f"{act}/explore_monuments/resource/egypt/sphinx.webp": webp((0, 200, 0))
        },  # the owl's bytes again: taken once
        "explore_world_animals": {},
    }
    pictures.update(extra or {})
    root.mkdir(parents=True, exist_ok=True)
    for activity in ACTIVITIES:
        (root / f"{activity}.rcc").write_bytes(make_bundle(pictures[activity] or {"/x.qml": b""}))
    (root / "paintings.rcc").write_bytes(make_bundle({"/p.webp": webp((9, 9, 9))}))  # not taken


def test_gcompris_photos_are_taken_once_shrunk_and_cached(tmp_path, monkeypatch):
    from qretrain.assets.pools import gcompris

    gcompris_tree(tmp_path / "rcc")
    monkeypatch.setenv("QRETRAIN_CACHE", str(tmp_path / "cache"))
    paths = gcompris.photo_paths(tmp_path / "rcc")
    assert [p.name for p in paths] == ["categorization_images_tools_hammer.jpg",
                                       "erase_clear.jpg", "erase_owl.jpg"]  # fmt: skip
    hammer, clear, owl = (np.asarray(Image.open(p)) for p in paths)
    assert hammer.shape == (320, 427, 3)  # shorter side 480 -> 320, aspect kept
    assert (np.abs(hammer.astype(int) - (200, 0, 0)) < 4).all()
    assert (np.abs(clear.astype(int) - 127) < 4).all()  # transparent pixels read as mid-grey
    assert owl.shape == (20, 40, 3)  # smaller than 320: left as it is
    for path in (tmp_path / "rcc").glob("*.rcc"):
        path.unlink()  # once cached, the cache serves without the package
    assert gcompris.photo_paths(tmp_path / "rcc") == paths
    paths[0].unlink()  # a cache missing a file is made again: here, from no bundle
    with pytest.raises(DataSourceMissing, match="apt-get install -y --no-install-recommends "
                                                "gcompris-qt-data"):  # fmt: skip
        gcompris.photo_paths(tmp_path / "rcc")


def test_damaged_gcompris_pictures_and_bundles_leave_no_cache(tmp_path, monkeypatch):
    from qretrain.assets.pools import gcompris

    act = "/gcompris/src/activities"
    gcompris_tree(tmp_path / "rcc", {"erase": {f"{act}/erase/resource/cat.webp": b"RIFF...."}})
    monkeypatch.setenv("QRETRAIN_CACHE", str(tmp_path / "cache"))
    with pytest.raises(QretrainError, match=r"cannot decode GCompris's picture erase_cat .*"
                                            r"--reinstall"):  # fmt: skip
        gcompris.photo_paths(tmp_path / "rcc")
    folder = gcompris.cache_dir("gcompris-photos", gcompris.CACHE_KEY)
    assert not (folder / "complete").exists()
    (tmp_path / "rcc" / "erase.rcc").write_bytes(b"qres\0\0\0\3")  # truncated
    with pytest.raises(QretrainFileError, match=r"erase.rcc is not a readable Qt resource "
                                                r"bundle .*--reinstall"):  # fmt: skip
        gcompris.photo_paths(tmp_path / "rcc")
    assert not (folder / "complete").exists()


def test_real_gcompris_photos_are_unlabeled_photographs():
    from qretrain.assets.pools.gcompris import SHORTER_SIDE

    ds = load_dataset("gcompris-photos")
    assert len(ds) == 239 and not ds.labeled
    raw = ds.raw(0)
    assert raw.shape[0] == 3 and min(raw.shape[1:]) <= SHORTER_SIDE

from qretrain._table import format_table, human_bytes


def test_human_bytes_picks_the_unit():
    assert [human_bytes(n) for n in (5, 1536, 7.3e6, 5e12)] == [
        "5 B", "1.50 KiB", "6.96 MiB", "4656.61 GiB"]  # fmt: skip


def test_format_table_pads_and_aligns():
    text = format_table(["a", "bb"], [[1, None], ["long", 22]], right="lr")
    assert text.splitlines() == ["a     bb", "----  --", "1", "long  22"]

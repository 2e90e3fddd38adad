"""Seeded mutation fuzzing: every damaged or crafted file fails cleanly, or loads."""

from qretrain.testing.file_fuzz import KINDS, SLOW_SECONDS, fuzz


def test_mutated_files_raise_one_error_type_or_load_soundly(tmp_path):
    report = fuzz(tmp_path, 6 * 60, seed=0)
    assert report.failures == []
    per_kind = {kind: sum(n for (k, _), n in report.outcomes.items() if k == kind)
                for kind in KINDS}  # fmt: skip
    assert per_kind == dict.fromkeys(KINDS, 60)
    assert report.slowest < SLOW_SECONDS
    # Damage after writing never gets past the seal (unless no byte changed)...
    for kind in ("truncate", "flip"):
        assert report.outcomes[kind, "QretrainFileError"] >= 59
    # ...and crafted files reach the parser: some load, some fail deep inside it.
    assert report.outcomes["crafted-flip", "identical"] > 0
    assert report.outcomes["crafted-edit", "QretrainFileError"] > 0
    assert report.outcomes["crafted-truncate", "QretrainFileError"] == 60


def test_the_seed_decides_the_mutations(tmp_path):
    a, b, c = (fuzz(tmp_path, 24, seed=s) for s in (1, 1, 2))
    assert a.mutations == b.mutations and a.outcomes == b.outcomes
    assert a.mutations != c.mutations

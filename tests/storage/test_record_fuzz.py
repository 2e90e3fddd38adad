"""Seeded mutation fuzzing of sweep records, run configs and checkpoints: one line
(a QretrainError or OSError, exit 2 on the command line) or a sound result."""

from qretrain.testing.record_fuzz import KINDS, SLOW_SECONDS, fuzz_records


def test_mutated_records_configs_and_checkpoints_are_refused_or_sound(tmp_path):
    report = fuzz_records(tmp_path, 15 * len(KINDS), seed=0)
    assert report.failures == []
    assert report.slowest < SLOW_SECONDS
    for kind in KINDS:  # each kind both refuses and accepts: neither side is vacuous
        assert report.outcomes[kind, "refused"] > 0 and report.outcomes[kind, "sound"] > 0, kind
    assert sum(report.outcomes.values()) == 15 * len(KINDS)

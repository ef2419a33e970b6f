"""Golden-frame checks for your own test suite.

    from morph.testing import assert_matches_golden

    def test_cat_kitten_still_renders_the_same():
        assert_matches_golden("configs/cat_kitten.yaml")
"""

from pathlib import Path

from .config_file import load_config
from .golden import check_golden, format_table, golden_dir


def assert_matches_golden(config_path: str | Path, tolerance: str | None = None, directory: str | Path | None = None,
                          **overrides) -> None:
    """Re-render a job's golden frames; raise AssertionError with the comparison table if any regressed.

    `tolerance` is a preset name (exact, same-device, cross-device); by default it is chosen from
    the config's golden: section or the environments compared. `overrides` replace config keys
    (e.g. model="tiny"). A config that differs from the goldens' raises MorphError.
    """
    config = load_config(config_path, **overrides)
    result = check_golden(config, golden_dir(config, directory), preset=tolerance)
    if not result.passed:
        notes = "".join(f"\n  note: {n}" for n in result.notes)
        raise AssertionError(f"{config.name}: frames moved beyond the {result.tolerance.name} tolerance "
                             f"(report: {result.report_dir}){notes}\n{format_table(result)}")

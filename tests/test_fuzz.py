"""Property tests: for any input, the config loader and the expression parser give a result or one MorphError.

Never another exception, never a hang (each example has a deadline), never a multi-line message.
"""

import string

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from morph.config.jobs import JOB_KINDS, validate
from morph.config.sections import Limits
from morph.config.yaml_file import load_config
from morph.errors import MorphError
from morph.config.expr import parse_number, parse_prompt_expression

# no example database: the suite writes nothing into the checkout
FUZZ = settings(max_examples=1000, deadline=2000, database=None, suppress_health_check=[HealthCheck.too_slow])

KEYS = sorted({f.alias or name for cls in JOB_KINDS.values() for name, f in cls.model_fields.items()}
              | {"from", "to", "steps", "add", "rows", "columns", "word", "prompts", "tolerance", "max_frames"})
scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
                    st.sampled_from(["tiny", "auto", "slerp", "cat + 3/7 * tabby", "-3/7", "cuda:0", ".nan"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)
configs = st.dictionaries(st.sampled_from(KEYS), values, max_size=8)
walks = st.fixed_dictionaries({"model": st.just("tiny"), "prompts": st.lists(values, min_size=0, max_size=4)},
                              optional={k: values for k in ("frames", "seed", "define", "guidance_scale", "height")})
EXPRESSION_CHARS = "()+-*/.0123456789 'ecat" + '"'
expressions = st.text(alphabet=EXPRESSION_CHARS, max_size=80) | st.text(max_size=40)


def one_line(error: MorphError) -> bool:
    return "\n" not in str(error) and len(str(error)) < 600


@FUZZ
@given(configs | walks)
def test_any_mapping_is_a_config_or_one_morph_error(raw):
    try:
        config = validate(raw)
    except MorphError as e:
        assert one_line(e)
        return
    assert config.frame_count() <= Limits().max_frames  # whatever passes is renderable in size


@FUZZ
@given(st.text(alphabet=string.printable + "éü\u2028", max_size=200))
def test_any_text_file_is_a_config_or_one_morph_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fuzz") / "job.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_config(path)
    except MorphError as e:
        assert one_line(e)


@FUZZ
@given(st.binary(max_size=200))
def test_any_bytes_are_a_config_or_one_morph_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "job.yaml"
    path.write_bytes(data)
    try:
        load_config(path)
    except MorphError as e:
        assert one_line(e)


@FUZZ
@given(expressions, st.booleans())
def test_any_expression_parses_or_is_one_morph_error(source, bare_names_are_text):
    try:
        terms = parse_prompt_expression(source, {"cat": "a cat", "e": "e"}, "prompts[1]", bare_names_are_text)
    except MorphError as e:
        assert one_line(e)
        return
    assert terms and all(abs(w) <= 1000 for w in terms.values())


@FUZZ
@given(expressions | st.floats() | st.integers())
def test_any_number_parses_or_is_one_morph_error(source):
    try:
        number = parse_number(source, "grid.columns.from")
    except MorphError as e:
        assert one_line(e)
        return
    assert abs(number) <= 1000


def test_the_fuzzed_keys_include_the_real_ones():
    """The strategies reach every declared key, so the fuzz explores real configs too."""
    assert {"prompts", "frames", "grid", "edit", "base", "define", "guidance_scale"} <= set(KEYS)
    assert validate(yaml.safe_load("model: tiny\nprompts: [a, b]\n")).kind == "walk"

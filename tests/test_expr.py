import pytest

from morph.errors import MorphError
from morph.config.expr import parse_number, parse_prompt_expression

NAMES = {"cat": "a photo of a cat", "kitten": "a photo of a kitten", "tabby": "tabby"}


def terms(source, **kwargs):
    return parse_prompt_expression(source, NAMES, "prompts[0]", **kwargs)


@pytest.mark.parametrize("source, expected", [
    ("cat", {"a photo of a cat": 1.0}),
    ("cat + 3/7 * tabby", {"a photo of a cat": 1.0, "tabby": 3 / 7}),
    ("kitten - 0.5 * tabby", {"a photo of a kitten": 1.0, "tabby": -0.5}),
    ("cat - tabby / 2", {"a photo of a cat": 1.0, "tabby": -0.5}),
    ("(cat + kitten) / 2", {"a photo of a cat": 0.5, "a photo of a kitten": 0.5}),
    ("2 * (cat - 1/2 * kitten)", {"a photo of a cat": 2.0, "a photo of a kitten": -1.0}),
    ("-cat + 2*3*tabby", {"a photo of a cat": -1.0, "tabby": 6.0}),
])
def test_precedence_and_fractions(source, expected):
    result = terms(source)
    assert result.keys() == expected.keys()
    assert all(result[k] == pytest.approx(v) for k, v in expected.items())


def test_repeated_names_add_up():
    assert terms("cat + cat - 0.5 * cat") == {"a photo of a cat": pytest.approx(1.5)}


def test_quoted_text_inline():
    assert terms("cat + 0.2 * \"striped fur\"") == {"a photo of a cat": 1.0, "striped fur": 0.2}
    assert terms("'a dog'") == {"a dog": 1.0}


@pytest.mark.parametrize("source, column, why", [
    ("cat + * tabby", 7, "expected a name"),
    ("cat + tabby)", 12, "unexpected ')'"),
    ("(cat + tabby", 13, "expected ')'"),
    ("cat * tabby", 5, "only be multiplied or divided by a number"),
    ("3 / cat", 3, "only be multiplied or divided by a number"),
    ("cat / 0", 5, "division by zero"),
    ("cat $ tabby", 5, "unexpected '$'"),
    ("cat +", 6, "ends too early"),
    ("3/7", 1, "plain number"),
    ("cat + 1", 5, "cannot add a number and a prompt"),
])
def test_bad_expressions_point_at_the_column(source, column, why):
    with pytest.raises(MorphError) as e:
        terms(source)
    assert f"at column {column}" in str(e.value) and why in str(e.value)
    assert str(e.value).startswith("prompts[0]: ")


def test_unknown_name_lists_the_defined_ones():
    with pytest.raises(MorphError, match="unknown name 'tabbi' at column 7.*defined names: cat, kitten, tabby"):
        terms("cat + tabbi")


def test_in_edits_a_bare_name_is_the_word_itself():
    assert terms("kitty + 0.5 * tabby", bare_names_are_text=True) == {"kitty": 1.0, "tabby": 0.5}


def test_numbers():
    assert parse_number("-3/7", "k") == pytest.approx(-3 / 7)
    assert parse_number(0.5, "k") == 0.5
    with pytest.raises(MorphError, match="is not a number"):
        parse_number([1], "k")
    with pytest.raises(MorphError, match="unknown name"):
        parse_number("tabby", "k")


def test_expressions_are_checked_when_the_config_loads(write_config):
    from morph.config.yaml_file import load_config

    with pytest.raises(MorphError, match=r"prompts\[1\]: unknown name 'dog'"):
        load_config(write_config(define={"cat": "a cat"}, prompts=["cat", "dog"]))

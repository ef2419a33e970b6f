"""One-word edits: slot finding with the model's tokenizer, and edits that touch only those slots."""

import pytest
import torch
from click.testing import CliRunner

from morph.cli import cli
from morph.prompts.encode import find_word, prompt_encoder, slot_table, slots_in_span
from morph.errors import MorphError
from morph.models.tiny import build_pipeline, build_tokenizer


@pytest.fixture(scope="module")
def encoder():
    pipe = build_pipeline()
    return prompt_encoder(pipe)


def test_a_one_token_word_is_found_by_name():
    tokenizer = build_tokenizer()
    start, end = find_word("a drawing of a cat", "cat", None)
    assert slots_in_span(tokenizer, "a drawing of a cat", start, end) == [5]  # BOS=0 a drawing of a cat


def test_a_word_split_into_several_tokens_is_one_span():
    tokenizer = build_tokenizer()
    sentence = "a drawing of a kitty"
    start, end = find_word(sentence, "kitty", None)
    slots = slots_in_span(tokenizer, sentence, start, end)
    assert slots == [5, 6, 7]
    assert [token for i, token, word in slot_table(tokenizer, sentence) if i in slots] == ["kit", "t", "y</w>"]


def test_word_matching_is_whole_word_and_case_insensitive():
    assert find_word("a Cat and a category", "cat", None) == (2, 5)
    with pytest.raises(MorphError, match="'dog' does not occur in 'a drawing of a cat'; its words are: a, drawing"):
        find_word("a drawing of a cat", "dog", None)


def test_a_repeated_word_needs_occurrence():
    sentence = "a cat next to a cat"
    with pytest.raises(MorphError, match="occurs 2 times.*add occurrence: N"):
        find_word(sentence, "cat", None)
    assert find_word(sentence, "cat", 2) == (16, 19)
    with pytest.raises(MorphError, match="occurrence: 3 is too large"):
        find_word(sentence, "cat", 3)


def test_an_edit_leaves_every_other_row_bit_identical(encoder):
    base = "a drawing of a cat"
    edited = encoder.edit(base, "cat", {"dog": 1.0}, None, None)
    original = encoder.text(base)
    assert torch.equal(edited[:5], original[:5]) and torch.equal(edited[6:], original[6:])
    assert torch.equal(edited[5], encoder.text("a drawing of a dog")[5])
    assert not torch.equal(edited[5], original[5])


def test_edit_arithmetic_works_on_the_slot_rows_in_context(encoder):
    edited = encoder.edit("a drawing of a cat", "cat", {"cat": 1.0, "dog": 3 / 7}, None, None)
    expected = encoder.text("a drawing of a cat")[5] + 3 / 7 * encoder.text("a drawing of a dog")[5]
    assert torch.allclose(edited[5], expected, atol=1e-6)


def test_values_with_a_different_token_count_are_refused_with_both_breakdowns(encoder):
    with pytest.raises(MorphError) as e:
        encoder.edit("a drawing of a cat", "cat", {"kitty": 1.0}, None, None)
    message = str(e.value)
    assert "'kitty' spans 3 token slot(s) ['kit', 't', 'y</w>']" in message and "'cat' spans 1 ['cat</w>']" in message


def test_explicit_slots_override_the_search(encoder):
    edited = encoder.edit("a drawing of a cat", "cat", {"dog": 1.0}, None, [4])
    assert torch.equal(edited[4], encoder.text("a drawing of a dog")[4])
    assert torch.equal(edited[5], encoder.text("a drawing of a cat")[5])


def test_an_edit_walk_changes_only_the_word_slots_in_every_frame(write_config, tmp_path):
    from morph.config.yaml_file import load_config
    from morph.job import prepare_job

    config = load_config(write_config(prompts=None, base="a drawing of a cat", frames=5,
                                      edit={"word": "cat", "prompts": ["cat", "dog", "cat - 0.5 * dog"]}))
    job = prepare_job(config)
    frames = job.path.conditionings(list(range(5)))
    base = job.path.keyframes[0]
    assert torch.equal(frames[:, :5], base[:5].expand(5, -1, -1))
    assert torch.equal(frames[:, 6:], base[6:].expand(5, -1, -1))
    assert len({frames[i, 5].sum().item() for i in range(5)}) == 5


def test_tokens_command_shows_multi_token_words():
    result = CliRunner().invoke(cli, ["tokens", "kyoto street kitty", "--model", "tiny"])
    assert result.exit_code == 0
    assert [line.split() for line in result.output.splitlines()[1:6]] == [
        ["1", "kyoto</w>", "kyoto"], ["2", "street</w>", "street"], ["3", "kit", "kitty"], ["4", "t", "kitty"],
        ["5", "y</w>", "kitty"]]


def test_the_bos_row_is_the_same_for_every_prompt(encoder):
    """What the README says about whole-tensor arithmetic: CLIP's causal attention leaves BOS untouched."""
    a, b = encoder.text("a photo of a cat"), encoder.text("tabby")
    assert torch.equal(a[0], b[0])
    assert not torch.equal(a[1:], b[1:])

import re

import pytest

from morph.config.frame_list import parse_frame_spec
from morph.config.yaml_file import load_config
from morph.errors import MorphError


def test_defaults_and_resolved_values(write_config):
    config = load_config(write_config(name="demo", batch_size=None, output=None))
    assert config.name == "demo"
    assert config.interpolation == "slerp" and config.fps == 20 and config.batch_size == "auto"
    assert config.safety_checker is False and config.scheduler is None
    assert str(config.output_dir) == "outputs/demo"
    assert config.kind == "walk"


def test_name_defaults_to_the_file_name(tmp_path):
    path = tmp_path / "my_walk.yaml"
    path.write_text("model: tiny\nprompts: [a, b]\n")
    assert load_config(path).name == "my_walk"


def test_overrides_replace_config_keys(write_config):
    config = load_config(write_config(), model="toy", batch_size=16, output=None)
    assert config.model == "toy" and config.batch_size == 16


@pytest.mark.parametrize("overrides, words", [
    ({"colour": "red"}, ["unknown key 'colour'", "allowed keys"]),
    ({"prompts": ["only one"]}, ["prompts", "2 or more"]),
    ({"prompts": "a cat"}, ["prompts", "'a cat'"]),
    ({"frames": 1}, ["frames", "1", ">= 2"]),
    ({"frames": [3, 4]}, ["frames", "[3, 4]", "1 whole number(s)"]),
    ({"height": 100}, ["height", "100", "multiple of 8"]),
    ({"num_inference_steps": -5}, ["num_inference_steps", "-5"]),
    ({"num_inference_steps": "ten"}, ["num_inference_steps", "'ten'"]),
    ({"guidance_scale": "high"}, ["guidance_scale", "'high'"]),
    ({"interpolation": "cubic"}, ["interpolation", "'cubic'", "lerp, slerp"]),
    ({"dtype": "float8"}, ["dtype", "float8"]),
    ({"device": "gpu"}, ["device", "'gpu'"]),
    ({"seed": True}, ["seed", "True"]),
    ({"safety_checker": "yes"}, ["safety_checker", "'yes'"]),
    ({"model": None}, ["model: missing"]),
])
def test_bad_values_name_the_key_and_value(write_config, overrides, words):
    with pytest.raises(MorphError) as e:
        load_config(write_config(**overrides))
    message = str(e.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_yaml_syntax_error_gives_line_and_column(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("model: tiny\nprompts: [a, b\nseed: 3\n")
    with pytest.raises(MorphError, match=r"YAML syntax error at line 3, column \d+"):
        load_config(path)


@pytest.mark.parametrize("text, words", [("", "empty"), ("- a\n- b\n", "a list"), ("42", "a int")])
def test_not_a_mapping(tmp_path, text, words):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(MorphError, match=f"the config is {words}, not a YAML mapping"):
        load_config(path)


def test_frame_spec():
    assert parse_frame_spec("0,17,100-103", 200) == [0, 17, 100, 101, 102, 103]
    assert parse_frame_spec("5, 3-4 ,5", 10) == [3, 4, 5]
    with pytest.raises(MorphError, match="out of range; this job has frames 0-9"):
        parse_frame_spec("8-10", 10)
    with pytest.raises(MorphError, match="not a frame list"):
        parse_frame_spec("1..3", 10)


def test_pixel_hash_ignores_where_output_goes_but_not_the_seed(write_config):
    a = load_config(write_config(output="x"))
    b = load_config(write_config(output="y", batch_size=1))
    c = load_config(write_config(seed=8))
    assert a.pixel_hash() == b.pixel_hash() != c.pixel_hash()


@pytest.mark.parametrize("overrides, key", [
    ({"prompts": None, "base": "a cat", "edit": {"word": "cat", "prompts": ["dog"]}}, "edit.prompts: ['dog']"),
    ({"prompts": None, "base": "a cat", "edit": {"word": "cat", "prompts": ["a", "b"], "occurrence": 0}},
     "edit.occurrence: 0"),
    ({"prompts": None, "frames": None, "grid": {"rows": {"from": "a", "to": "b", "steps": 0},
                                                "columns": {"add": "c", "from": 0, "to": 1, "steps": 2}}},
     "grid.rows.steps: 0"),
    ({"golden": {"tolerance": "loose"}}, "golden.tolerance: 'loose'"),
    ({"golden": {"min_psnr": "high"}}, "golden.min_psnr: 'high'"),
])
def test_nested_keys_are_named_in_full(write_config, overrides, key):
    with pytest.raises(MorphError, match=re.escape(key)):
        load_config(write_config(**overrides))


@pytest.mark.parametrize("text", ["a cat (tabby), [cute]", "a kitten, <cat-toy> style", "a clock at 12:30",
                                  "a sign that says (ratio:wide)", "<lora> written on a wall", "[a:b] in brackets"])
def test_brackets_colons_and_embedding_tokens_that_are_not_another_tools_syntax_are_prompts(write_config, text):
    assert load_config(write_config(prompts=[text, "a kitten"], negative_prompt=text)).prompt_texts()[0][1] == text


@pytest.mark.parametrize("keys, words", [
    ({"prompts": ["a cat <LoRA:ink:0.6>", "a kitten"]}, "prompts[0]: '<LoRA:ink:0.6>' is A1111's LoRA syntax"),
    ({"negative_prompt": "(blurry:1.4)"}, "negative_prompt: '(blurry:1.4)' is A1111's and ComfyUI's word emphasis"),
    ({"prompts": None, "base": "a <lyco:ink> cat", "edit": {"word": "cat", "prompts": ["cat", "dog"]}},
     "base: '<lyco:ink>' is A1111's LoRA syntax"),
    ({"prompts": None, "frames": None, "grid": {"rows": {"from": "a cat", "to": "a [cat:dog:.5]", "steps": 2},
                                                "columns": {"add": "tabby", "from": 0, "to": 1, "steps": 2}}},
     "grid.rows.to: '[cat:dog:.5]' is A1111's prompt editing"),
])
def test_another_tools_prompt_syntax_is_refused_in_one_line_naming_where_it_is(write_config, keys, words):
    with pytest.raises(MorphError) as refused:
        load_config(write_config(**keys))
    assert words in str(refused.value) and "\n" not in str(refused.value)

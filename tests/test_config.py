import json
import re

import pytest
from click.testing import CliRunner

from morph.cli import cli
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


# --- a keyframe's own setting wins whether or not it varies ---------------------------------------------------------

def rendered(config_path) -> tuple[dict, list[bytes]]:
    """`morph run` on a config: its manifest and the bytes of its frames."""
    result = CliRunner().invoke(cli, ["run", str(config_path), "--quiet"])
    assert result.exit_code == 0, result.output
    out = load_config(config_path).output_dir
    manifest = json.loads((out / "manifest.json").read_text())
    return manifest, [(out / "frames" / r["file"]).read_bytes() for r in manifest["frames"]]


PROMPTS = ["a photo of a cat", "a drawing of a dog in kyoto"]


@pytest.mark.parametrize("own, top, under", [
    ({"seed": 42}, {"seed": 42}, {}),
    # under top-level guidance 1 the keyframes' guidance 7 must still guide, and so read the negative
    ({"guidance_scale": 7.0}, {"guidance_scale": 7.0, "negative_prompt": "a red car"},
     {"guidance_scale": 1.0, "negative_prompt": "a red car"}),
    ({"guidance_scale": 7.0, "negative_prompt": "a red car"}, {"guidance_scale": 7.0, "negative_prompt": "a red car"},
     {"guidance_scale": 1.0}),
    ({"loras": {"style": 0.5}}, {"loras": "0.5"}, {}),
], ids=["seed", "guidance", "guidance-and-negative", "lora"])
def test_a_setting_every_keyframe_gives_renders_as_that_setting_at_the_top_level(write_config, lora_file, own, top,
                                                                                  under):
    """Every keyframe setting one value is that value for the whole walk: the same bytes as writing it at the top
    level, and the manifest says so (the top-level value is then used by no frame)."""
    def loras(scale):
        return {"loras": [{"path": str(lora_file()), "name": "style", "scale": scale}]} if "loras" in own else {}

    top = {**top, **loras(float(top.pop("loras", 1.0)))}
    keyframes = [{"prompt": p, **own} for p in PROMPTS]
    manifest, frames = rendered(write_config("keyframes", frames=2, prompts=keyframes, **under, **loras(1.0)))
    reference, expected = rendered(write_config("top", frames=2, prompts=PROMPTS, **top))
    assert frames == expected
    assert manifest["seed"] == reference["seed"] == top.get("seed", 7)
    assert manifest["classifier_free_guidance"] is reference["classifier_free_guidance"] is True


def test_a_negative_prompt_through_define_renders_as_the_text_it_names(write_config):
    """A negative prompt is an expression where the prompts are (with define:), so a defined name reads as its text."""
    quoted = [f"'{p}'" for p in PROMPTS]
    _, named = rendered(write_config("named", frames=2, define={"neg": "a red car"}, prompts=quoted,
                                     negative_prompt="neg"))
    _, written = rendered(write_config("written", frames=2, prompts=PROMPTS, negative_prompt="a red car"))
    assert named == written


# --- negative prompts: one reading, checked when the config loads ---------------------------------------------------

@pytest.mark.parametrize("negatives, words", [
    # the top level's negative reads as an expression whether or not a keyframe sets its own
    ({"negative_prompt": "dark, blurry"}, "negative_prompt: unexpected ',' at column 5 in 'dark, blurry'; put literal "
                                          "prompt text in quotes"),
    ({"negative_prompt": "dark, blurry", "prompts": ["cat", {"prompt": "cat", "negative_prompt": "'lowres'"}]},
     "negative_prompt: unexpected ',' at column 5"),
    ({"prompts": ["cat", {"prompt": "cat", "negative_prompt": "lowres"}]},
     "prompts[1].negative_prompt: unknown name 'lowres' at column 1"),
    # a definition holding another tool's syntax is refused where it is used, as the same text written there is
    ({"negative_prompt": "neg"}, "negative_prompt: '(ugly:1.3)' is A1111's and ComfyUI's word emphasis"),
    ({"prompts": ["cat", {"prompt": "cat", "negative_prompt": "neg"}]},
     "prompts[1].negative_prompt: '(ugly:1.3)' is A1111's and ComfyUI's word emphasis"),
    ({"prompts": None, "frames": None, "negative_prompt": "neg",
      "grid": {"rows": {"from": "cat", "to": "cat", "steps": 2}, "columns": {"add": "cat", "from": 0, "to": 1,
                                                                              "steps": 2}}},
     "negative_prompt: '(ugly:1.3)' is A1111's"),
])
def test_negative_prompts_are_expressions_where_prompts_are(write_config, negatives, words):
    path = write_config(**{"define": {"cat": "a photo of a cat", "neg": "blurry, (ugly:1.3)"}, "prompts": ["cat", "cat"],
                           **negatives})
    with pytest.raises(MorphError) as refused:
        load_config(path)
    assert words in str(refused.value) and "\n" not in str(refused.value)


def test_a_negative_without_define_is_plain_text_and_with_it_quoted_text_or_names(write_config):
    plain = load_config(write_config(negative_prompt="dark, blurry"))
    assert plain.negative_terms(plain.negative_prompt, "negative_prompt") == {"dark, blurry": 1.0}
    expression = load_config(write_config(define={"cat": "a cat", "dark": "dark"}, prompts=["cat", "cat"],
                                          negative_prompt="dark + 0.5 * 'blurry, lowres'"))
    assert expression.negative_terms(expression.negative_prompt, "negative_prompt") == {"dark": 1.0,
                                                                                        "blurry, lowres": 0.5}
    assert expression.negative_terms("", "negative_prompt") == {}  # the model's empty negative


# --- a key written twice --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, words", [
    ("model: tiny\nprompts: [a, b]\nframes: 10\nseed: 3\nframes: 20\n", "frames: written twice, on lines 3 and 5"),
    ("model: tiny\nprompts:\n  - a\n  - prompt: b\n    seed: 1\n    seed: 2\n", "prompts[1].seed: written twice, on "
                                                                                "lines 5 and 6"),
    ("model: tiny\nprompts: [a, b]\nspacing: {mode: even, mode: uniform}\n",
     "spacing.mode: written twice on line 3 (columns 11 and 23)"),
    ("model: tiny\nprompts: [a, b]\n'seed': 1\nseed: 2\n", "seed: written twice, on lines 3 and 4"),
    ('model: tiny\nprompts: [a, b]\n"a\\nb": 1\n"a\\nb": 2\n', "'a\\nb': written twice, on lines 3 and 4"),  # one line
])
def test_a_key_written_twice_is_refused_with_both_places(tmp_path, text, words):
    path = tmp_path / "twice.yaml"
    path.write_text(text)
    with pytest.raises(MorphError) as refused:
        load_config(path)
    assert str(refused.value) == f"{path}: {words}; keep one of them"


def test_a_merged_key_may_be_overridden(tmp_path):
    path = tmp_path / "merged.yaml"
    path.write_text("model: tiny\nprompts:\n  - &first {prompt: a cat, seed: 1}\n  - {<<: *first, prompt: a dog, seed: 2}\n")
    assert [(k.prompt, k.seed) for k in load_config(path).prompts] == [("a cat", 1), ("a dog", 2)]


@pytest.mark.parametrize("top, keyframe_guidance, expected", [
    (1.0, [5.0, 9.0], True),  # walking guidance above 1 under a top level that needs none
    (7.5, [1.0, 1.0], False),  # every keyframe at 1: the top level's 7.5 guides no frame
    (1.0, [None, None], False),
    (3.0, [None, None], True),
])
def test_classifier_free_guidance_is_on_where_any_frame_renders_with_it(write_config, top,
                                                                       keyframe_guidance, expected):
    prompts = [{"prompt": p, **({"guidance_scale": g} if g is not None else {})}
               for p, g in zip(PROMPTS, keyframe_guidance)]
    config = load_config(write_config(guidance_scale=top, prompts=prompts))
    assert config.classifier_free_guidance() is expected

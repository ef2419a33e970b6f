"""Attention interpolation (config `attention:`): the math analytically, the keyframe rows a batch gains, and the
tiny models end to end (a frame depends only on its batch, the keyframes' own frames stay as they were)."""

import numpy as np
import pytest
import torch

from conftest import tiny_job
from morph.config.jobs import validate
from morph.config.sections import AttentionSpec
from morph.config.yaml_file import load_config
from morph.job import prepare_job, run_job
from morph.media.video import read_png
from morph.prompts.path import WalkPath
from morph.render.attention import AttentionInterpolation, attention_interpolation
from morph.render.attention_math import attend, fused, inner, outer
from morph.render.produce import render_identity
from morph.testing import make_lora

B, H, N, M, D = 3, 2, 5, 4, 8


@pytest.fixture
def qkv():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(B, H, n, D, generator=g, dtype=torch.float64) for n in (N, M, M, M, M)]


def test_attend_is_softmax_of_scaled_products_times_values(qkv):
    q, k, v = qkv[:3]
    expected = torch.softmax(q @ k.transpose(-1, -2) / D ** 0.5, dim=-1) @ v
    assert torch.allclose(attend(q, k, v), expected, atol=1e-12)


def test_inner_at_t_0_is_plain_attention_on_keyframe_a_and_at_t_1_on_b(qkv):
    q, ka, va, kb, vb = qkv
    assert torch.equal(inner(q, ka, va, kb, vb, torch.zeros(B)), attend(q, ka, va))
    assert torch.equal(inner(q, ka, va, kb, vb, torch.ones(B)), attend(q, kb, vb))
    # in between it is one attention over interpolated keys and values, not a blend of two attentions
    half = torch.full((B,), 0.5)
    assert torch.allclose(inner(q, ka, va, kb, vb, half), attend(q, (ka + kb) / 2, (va + vb) / 2), atol=1e-12)
    assert not torch.allclose(inner(q, ka, va, kb, vb, half), outer(q, ka, va, kb, vb, half), atol=1e-3)


@pytest.mark.parametrize("fuse", [False, True])
def test_outer_is_linear_in_t_per_row(qkv, fuse):
    q, ka, va, kb, vb = qkv
    own = (qkv[1] * 0.5, qkv[2] * 2) if fuse else None
    at = lambda t: outer(q, ka, va, kb, vb, t, own)  # noqa: E731
    t = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)
    zero, one = at(torch.zeros(B)), at(torch.ones(B))
    assert torch.allclose(at(t), zero + t.view(-1, 1, 1, 1) * (one - zero), atol=1e-12)
    assert torch.allclose(zero, attend(q, *((fused(own[0], ka), fused(own[1], va)) if fuse else (ka, va))),
                          atol=1e-12)


def test_fused_keys_over_duplicated_endpoints_are_plain_attention(qkv):
    q, k, v = qkv[:3]
    assert torch.allclose(attend(q, fused(k, k), fused(v, v)), attend(q, k, v), atol=1e-12)
    # so a keyframe's own frame (its keys are keyframe a's) attends as it would alone, in either mode
    for combine in (inner, outer):
        assert torch.allclose(combine(q, k, v, qkv[3], qkv[4], torch.zeros(B), own=(k, v)), attend(q, k, v),
                              atol=1e-12)


def _walk(keyframes=4):
    """A walk over `keyframes` [K, 2, 3] with guidance, LoRA strengths and seeds' noise walking along."""
    ks = torch.arange(keyframes, dtype=torch.float32)
    path = WalkPath(ks.view(-1, 1, 1).expand(-1, 2, 3).clone(), [4] * (keyframes - 1), "lerp",
                    along={"guidance": 5 + ks.double(), "loras": ks.double().view(-1, 1) / 10,
                           "latent": torch.randn(keyframes, 1, 2, 2, generator=torch.Generator().manual_seed(1))})
    return path


def test_widen_appends_the_keyframes_the_frames_need_with_what_walks_along_at_them():
    path = _walk()
    mechanism = AttentionInterpolation(validate({"model": "tiny", "prompts": ["a", "b"], "attention": "inner"})
                                       .attention, path, fixed_shape=False)
    indices = [3, 4, 6]  # segment 0 at t 3/4, 1 (keyframe 1) and segment 1 at t 1/2
    conds, walking = mechanism.widen(path.conditionings(indices), path.frame_inputs(indices), False)
    assert conds[:, 0, 0].tolist() == [0.75, 1.0, 1.5, 0.0, 1.0, 2.0]  # then keyframes 0, 1 and 2
    assert walking["attends"].tolist() == [[3, 4], [3, 4], [4, 5], [3, 3], [4, 4], [5, 5]]
    assert walking["guidance"].tolist() == [5.75, 6.0, 6.5, 5.0, 6.0, 7.0]
    assert torch.allclose(walking["loras"][3:, 0], torch.tensor([0.0, 0.1, 0.2], dtype=torch.float64))
    assert torch.equal(walking["latent"][3:], path.along["latent"][:3])
    assert walking["segment"].tolist() == [0, 0, 1, 0, 1, 2] and walking["t"][3:].tolist() == [0.0] * 3


def test_with_a_fixed_shape_every_batch_gets_the_same_number_of_keyframe_rows():
    path = _walk()
    mechanism = AttentionInterpolation(validate({"model": "tiny", "prompts": ["a", "b"], "attention": "outer"})
                                       .attention, path, fixed_shape=True)
    rows = [mechanism.widen(path.conditionings(i), path.frame_inputs(i), False)[0].shape[0]
            for i in ([0, 1], [3, 5], [12])]
    assert rows == [5, 5, 4]  # three keyframe rows each (the last: 1 frame, keyframes 2, 3 and 3 again)


def _pixels(manifest, out):
    return [read_png(out / "frames" / r["file"]).astype(int) for r in manifest["frames"]]


@pytest.mark.parametrize("model, attention", [
    ("tiny", {"mode": "inner", "fuse_self": True, "until": 0.5}),
    ("tiny-sd2", "inner"),
    ("tiny-sdxl", "outer"),
])
def test_the_keyframes_own_frames_render_as_without_it_and_the_frames_between_move(tmp_path, model, attention):
    plain = run_job(load_config(tiny_job(tmp_path, "plain", model=model, frames=3, batch_size=3)), quiet=True)
    config = tiny_job(tmp_path, "aid", model=model, frames=3, batch_size=3, attention=attention)
    manifest = run_job(load_config(config), quiet=True)
    moved = [np.abs(a - b) for a, b in zip(_pixels(manifest, tmp_path / "out" / "aid"),
                                           _pixels(plain, tmp_path / "out" / "plain"))]
    assert moved[0].max() <= 1 and moved[2].max() <= 1  # within 1/255
    assert moved[1].sum() > 10 * (moved[0].sum() + moved[2].sum() + 1)  # the frame between them moves
    spec = load_config(config).attention.model_dump()
    assert manifest["attention_interpolation"] == {"revision": 2, **spec} and "attention_interpolation" not in plain
    assert manifest["attention"] == plain["attention"]  # the UNet's own processors are back after each batch


def test_a_batch_of_frames_is_each_frame_rendered_alone_with_its_keyframes(tmp_path):
    """Seeds, guidance and LoRA strengths walking along; the batch spans two segments (three keyframe rows), alone
    each frame has two."""
    lora = make_lora(tmp_path / "style.safetensors")
    config = load_config(tiny_job(
        tmp_path, frames=7, batch_size=4, attention={"mode": "outer", "fuse_self": True}, loras=[{"path": str(lora)}],
        prompts=[{"prompt": "a photo of a cat", "seed": 1, "guidance_scale": 5.0, "loras": {"style": 0.0}},
                 {"prompt": "a red square", "seed": 2, "guidance_scale": 9.0},
                 {"prompt": "a drawing of a dog in kyoto", "seed": 3, "guidance_scale": 6.0}]))
    job = prepare_job(config)
    together = {i: image.astype(int) for i, image, _ in job.frames([2, 4])}
    alone = {i: image.astype(int) for index in (2, 4) for i, image, _ in job.frames([index])}
    assert all(np.abs(together[i] - alone[i]).max() <= 1 for i in together)


def test_a_job_without_it_keeps_its_keys_and_a_job_with_it_keys_its_settings(tmp_path):
    plain = prepare_job(load_config(tiny_job(tmp_path, frames=3)))
    inner = prepare_job(load_config(tiny_job(tmp_path, frames=3, attention="inner")))
    halfway = prepare_job(load_config(tiny_job(tmp_path, frames=3, attention={"mode": "inner", "until": 0.5})))
    assert "attention_interpolation" not in render_identity(plain) and "attention" not in plain.config.pixel_keys()
    assert render_identity(inner)["attention_interpolation"] == {"revision": 2, "mode": "inner", "fuse_self": False,
                                                                 "until": 1.0}
    assert render_identity(halfway)["attention_interpolation"]["until"] == 0.5
    assert len({plain.config.pixel_hash(), inner.config.pixel_hash(), halfway.config.pixel_hash()}) == 3


def test_until_stops_after_its_fraction_of_the_steps(tmp_path, monkeypatch):
    """3 steps: until 0.3 interpolates in the first step only, 0.5 in the first two (the steps that start before it),
    and the smallest until the first step; after it each frame's self-attention attends to its own keys twice over
    (plain attention). Inner cross-attention is the layer's own throughout: it never calls inner."""
    import morph.render.attention_math as math
    from morph.render import attention

    # every call of inner in order: True for a self-attention, then "stop" where plain attention begins; and at every
    # self-attention layer, the rows its frames attend to (by index, not by comparing keys: rows of one batch may
    # differ by float32 rounding)
    calls, attended, own, stop = [], [], math.inner, attention._Rows.stop
    layer = attention.InterpolatingProcessor.__call__
    monkeypatch.setattr(math, "inner", lambda q, ka, va, kb, vb, t, mine=None: calls.append(mine is not None)
                        or own(q, ka, va, kb, vb, t, mine))
    monkeypatch.setattr(attention._Rows, "stop", lambda rows: calls.append("stop") or stop(rows))

    def attending(processor, attn, hidden_states, encoder_hidden_states=None, *args, **kwargs):
        if processor.rows is not None and encoder_hidden_states is None:
            rows = processor.rows
            mine = rows.pairs == torch.arange(rows.frames)[:, None]  # [frames, 2]: a frame's own row
            attended.append("own" if mine.all() else "keyframes" if (rows.pairs >= rows.frames).all() else "mixed")
        return layer(processor, attn, hidden_states, encoder_hidden_states, *args, **kwargs)

    monkeypatch.setattr(attention.InterpolatingProcessor, "__call__", attending)
    counted, seen, counted_steps = {}, {}, ((1e-9, 1), (0.3, 1), (0.5, 2), (1.0, 3))
    job = prepare_job(load_config(tiny_job(tmp_path, frames=3, attention="inner")))
    for until, _ in counted_steps:
        spec = AttentionSpec(mode="inner", until=until, fuse_self=True)
        job.renderer.mechanisms = (AttentionInterpolation(spec, job.path, fixed_shape=False),)
        calls.clear(), attended.clear()
        list(job.frames([1]))
        before = calls[:calls.index("stop")] if "stop" in calls else calls
        counted[until] = (sum(c is True for c in before), sum(c != "stop" for c in calls))
        seen[until] = list(attended)
    calls.clear()
    assert job.renderer.probe(2).images.shape[0] == 2 and len(calls) == counted[1.0][1] // 3  # one step
    layers = counted[1.0][1] // 6  # self-attention layers; 2 halves of guidance, 3 steps
    assert layers > 1 and counted == {until: (2 * steps * layers, 6 * layers) for until, steps in counted_steps}
    # the keyframes' rows while interpolating, then each frame's own row: the stop switches what the layers attend to
    assert seen == {until: ["keyframes"] * steps * layers + ["own"] * (3 - steps) * layers
                    for until, steps in counted_steps}


def test_a_compiled_unet_renders_batches_of_other_keyframes_without_compiling_again(tmp_path):
    """compile: true pads every batch to three keyframe rows, and the rows each frame attends to reach the layers as
    tensors: batches within a segment, at the end of the walk and across a keyframe (frames 2 and 4: keyframes 0, 1
    and 2, nothing padded) are one graph."""
    config = load_config(tiny_job(tmp_path, frames=7, batch_size=2, num_inference_steps=2, compile=True,
                                  attention={"mode": "inner", "until": 0.5},
                                  prompts=["a photo of a cat", "a red square", "a drawing of a dog in kyoto"]))
    eager = prepare_job(config.model_copy(update={"compile": False}))
    expected = {i: image.astype(int) for i, image, _ in eager.frames(list(range(7)))}
    job = prepare_job(config.model_copy(update={"compile": False}))
    job.renderer.fixed_shape = job.renderer.mechanisms[0].fixed_shape = True  # what compile: true sets
    graphs = []
    job.loaded.pipe.unet = torch.compile(job.loaded.pipe.unet, dynamic=False,
                                         backend=lambda graph, inputs: graphs.append(graph) or graph.forward)
    torch._dynamo.reset()
    with torch._dynamo.config.patch(error_on_recompile=True):
        rendered = {i: image.astype(int) for i, image, _ in job.frames(list(range(7)))}
        across = {i: image.astype(int) for i, image, _ in job.frames([2, 4])}  # keyframes 0, 1 and 2: unpadded
    assert len(graphs) >= 1 and attention_interpolation(config, job.path).fixed_shape
    assert all(np.abs(rendered[i] - expected[i]).max() <= 1 for i in range(7))
    assert all(np.abs(across[i] - expected[i]).max() <= 1 for i in (2, 4))


def test_even_spacing_the_storm_map_and_morph_explain_work_on_such_a_walk(tmp_path):
    """even's samples and explain's renders are frames too: each gets its keyframe rows; explain again reuses them.
    Inner cross-attention reads the frame's own prompt rows, so moving some of them moves the picture."""
    from click.testing import CliRunner

    from morph.cli import cli

    config = load_config(tiny_job(tmp_path, frames=6, attention="inner", num_inference_steps=2,
                                  spacing={"mode": "even", "max_extra_renders": 3},
                                  analysis={"explain": True, "storm_factor": 1.0}))
    manifest = run_job(config, quiet=True)
    assert manifest["attention_interpolation"]["mode"] == "inner" and manifest["spacing"]["even"]["summary"]
    attributed = manifest["analysis"]["attribution"]
    assert attributed and manifest["analysis"]["summary"]["smoothness"] > 0
    assert max(group["share"] for record in attributed for group in record["groups"]) > 0.01
    stored = sorted((config.output_dir / ".store").iterdir())
    result = CliRunner().invoke(cli, ["explain", str(config.output_dir), "--step", str(attributed[0]["step"])])
    assert result.exit_code == 0, result.output
    assert sorted((config.output_dir / ".store").iterdir()) == stored


def test_morph_explain_refuses_an_outer_walk_in_one_line_before_the_model_loads(tmp_path, monkeypatch):
    """Outer attention blends each keyframe's whole attention: a frame has no prompt rows of its own to move."""
    from click.testing import CliRunner

    import morph.job
    from morph.cli import cli

    config = load_config(tiny_job(tmp_path, frames=3, attention="outer", num_inference_steps=2))
    run_job(config, quiet=True)
    monkeypatch.setattr(morph.job, "prepare_job", lambda *a, **k: pytest.fail("the model loaded"))
    result = CliRunner().invoke(cli, ["explain", str(config.output_dir)])
    assert result.exit_code == 2
    assert "attention: outer blends the attentions to each keyframe's own prompt" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_inner_cross_attention_is_the_layers_own_attention_to_the_lerped_prompt_tensor():
    """The key and value projections are affine: attention to two prompts' keys and values mixed by t is attention to
    the two prompts mixed by t, which is what the layer's own processor gives a frame whose tensor is their lerp."""
    from diffusers.models.attention_processor import Attention

    g = torch.Generator().manual_seed(2)
    attn = Attention(query_dim=16, cross_attention_dim=12, heads=2, dim_head=8, bias=True).double().eval()
    x = torch.randn(3, 5, 16, generator=g, dtype=torch.float64)
    a, b = (torch.randn(3, 7, 12, generator=g, dtype=torch.float64) for _ in range(2))
    t = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)
    heads = lambda f, c: f(c).view(3, -1, 2, 8).transpose(1, 2)  # noqa: E731
    mixed = inner(heads(attn.to_q, x), heads(attn.to_k, a), heads(attn.to_v, a), heads(attn.to_k, b),
                  heads(attn.to_v, b), t)
    expected = attn.to_out[0](mixed.transpose(1, 2).flatten(2))
    assert torch.allclose(attn(x, encoder_hidden_states=a + t.view(-1, 1, 1) * (b - a)), expected, atol=1e-10)


def test_an_inner_walk_follows_its_interpolation_and_its_keyframes_stay(tmp_path):
    """interpolation: lerp or slerp is the tensor inner cross-attention reads: the frame between the keyframes
    differs, the keyframes' own frames do not."""
    frames = {}
    for interpolation in ("lerp", "slerp"):
        config = tiny_job(tmp_path, interpolation, frames=3, batch_size=3, attention="inner",
                          interpolation=interpolation)
        frames[interpolation] = _pixels(run_job(load_config(config), quiet=True), tmp_path / "out" / interpolation)
    moved = [np.abs(a - b) for a, b in zip(frames["lerp"], frames["slerp"])]
    assert moved[0].max() <= 1 and moved[2].max() <= 1 and moved[1].mean() > 0.1  # the plain walk's differ as much


def test_the_keyframes_guidance_and_controlnet_strengths_key_every_frame_of_such_a_walk(tmp_path):
    """A frame's self-attention reads its keyframes' renders: their own guidance and ControlNet strengths decide its
    pixels, not only the values at the frame's t (5 -> 9 and 3 -> 11 are both 7 halfway). The identity is read from
    the config alone (render_identity holds it: test_a_job_without_it_keeps_its_keys...): no model loads."""
    def identity(*prompts, **keys):
        return attention_interpolation(validate({"model": "tiny", "attention": "inner", "prompts": list(prompts),
                                                 **keys}), None).identity()

    assert identity({"prompt": "a cat", "guidance_scale": 5.0},
                    {"prompt": "a dog", "guidance_scale": 9.0})["keyframe_guidance_scales"] == [5.0, 9.0]
    assert identity({"prompt": "a cat", "guidance_scale": 3.0},
                    {"prompt": "a dog", "guidance_scale": 11.0})["keyframe_guidance_scales"] == [3.0, 11.0]
    assert "keyframe_guidance_scales" not in identity("a cat", "a dog")
    from PIL import Image

    Image.new("RGB", (64, 64), "white").save(tmp_path / "square.png")
    controlnets = [{"path": str(tmp_path / "net"), "name": "net", "image": str(tmp_path / "square.png"), "scale": 0.5}]
    walked = identity({"prompt": "a cat", "controlnets": {"net": 0.0}}, "a dog", controlnets=controlnets)
    assert walked["keyframe_controlnet_scales"] == [[0.0], [0.5]]  # no ControlNet loads: its folder need not exist
    assert "keyframe_controlnet_scales" not in identity("a cat", "a dog", controlnets=controlnets)


def test_batch_size_autos_probe_carries_the_keyframe_rows_of_a_batch_across_a_keyframe(tmp_path, monkeypatch):
    """Copies of frame 0 need keyframes 0 and 1 only; a real batch across keyframe 1 needs three."""
    from morph.render import attention

    rows, during = [], attention.AttentionInterpolation.during
    monkeypatch.setattr(attention.AttentionInterpolation, "during",
                        lambda self, pipe, conds, *rest: rows.append(conds.shape[0]) or during(self, pipe, conds,
                                                                                              *rest))
    job = prepare_job(load_config(tiny_job(tmp_path, frames=5, attention="inner", prompts=[
        "a photo of a cat", "a red square", "a drawing of a dog in kyoto"])))
    job.renderer.probe(2)
    list(job.frames([1, 3]))  # segments 0 and 1: keyframes 0, 1 and 2
    assert rows == [2 + 3, 2 + 3]

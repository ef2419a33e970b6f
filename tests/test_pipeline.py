import pytest
import torch

from morph.errors import MorphError
from morph.models.pipeline import load_model, resolve_device, resolve_dtype
from morph.models.scheduler import scheduler_class


def test_auto_dtype_is_half_on_cuda_and_float32_elsewhere():
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float16
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_asking_for_cuda_without_a_gpu_says_so():
    with pytest.raises(MorphError, match="no CUDA GPU"):
        resolve_device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")


def test_scheduler_by_class_name():
    assert scheduler_class("DDIMScheduler").__name__ == "DDIMScheduler"
    with pytest.raises(MorphError, match="not a diffusers scheduler"):
        scheduler_class("AutoencoderKL")


def test_tiny_model_loads_with_the_requested_scheduler_dtype_and_device():
    loaded = load_model("tiny", torch.device("cpu"), torch.float32, "EulerAncestralDiscreteScheduler", False)
    pipe = loaded.pipe
    assert type(pipe.scheduler).__name__ == "EulerAncestralDiscreteScheduler"
    assert pipe.unet.dtype == torch.float32 and pipe.device == torch.device("cpu")
    # the scheduler keeps the model's noise schedule
    assert pipe.scheduler.config.beta_schedule == "scaled_linear"
    bf16 = load_model("tiny", torch.device("cpu"), torch.bfloat16, None, False).pipe
    assert bf16.unet.dtype == bf16.text_encoder.dtype == bf16.vae.dtype == torch.bfloat16


def test_safety_checker_on_a_model_without_one_is_refused():
    with pytest.raises(MorphError, match="no safety checker"):
        load_model("tiny", torch.device("cpu"), torch.float32, None, True)


def test_a_folder_that_is_not_a_diffusers_model(tmp_path):
    with pytest.raises(MorphError, match="is not a diffusers Stable Diffusion folder"):
        load_model(str(tmp_path), torch.device("cpu"), torch.float32, None, False)


def test_auto_never_picks_mps_and_mps_is_one_line(monkeypatch):
    """MPS has no float64, in which every walk interpolates: refused before a model loads, never chosen by auto."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(MorphError, match="device: 'mps' .* no float64.*use device: cpu"):
        resolve_device("mps")


def test_a_cuda_index_beyond_the_gpus_present_is_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(MorphError, match=r"device: 'cuda:2' asked for, but torch sees 2 CUDA GPU\(s\): cuda:0 to cuda:1"):
        resolve_device("cuda:2")


def test_every_built_in_tiny_model_has_its_tokenizer_without_loading_a_model():
    from morph.models.pipeline import load_tokenizer
    from morph.models.tiny import BUILT_IN, build_tokenizer

    for name in BUILT_IN:
        assert load_tokenizer(name)("a cat").input_ids == build_tokenizer()("a cat").input_ids, name

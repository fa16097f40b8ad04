"""``--compute`` and ``--quantize`` resolution: the device that is there, the CUDA defaults,
and a one-line refusal for every combination a backend cannot run."""

import pytest
import torch

from engine.errors import UserError
from engine.live.step import compute
from engine.live.step.compute import (
    WeightFormat,
    apply_precision,
    out_of_memory_as_user_error,
    resolve_compute,
    resolve_weights,
)

CPU, CUDA0, MPS = torch.device("cpu"), torch.device("cuda", 0), torch.device("mps")


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.fixture
def one_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


def _refused(fn, *args, **kw) -> str:
    with pytest.raises(UserError) as e:
        fn(*args, **kw)
    message = str(e.value)
    assert "\n" not in message
    return message


def test_auto_is_the_cpu_without_a_gpu_and_cuda_with_one(no_gpu, monkeypatch):
    assert resolve_compute("auto") == CPU and resolve_compute("CPU") == CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert resolve_compute("auto") == CUDA0
    assert resolve_compute("cuda") == CUDA0 and resolve_compute("cuda:1") == torch.device(
        "cuda", 1)


def test_devices_that_are_not_there_are_one_line_errors(no_gpu, monkeypatch):
    assert "use --compute cpu or auto" in _refused(resolve_compute, "cuda")
    assert "--compute cuda:1" in _refused(resolve_compute, "cuda:1")
    assert "MPS is not available" in _refused(resolve_compute, "mps")
    assert "auto|cpu|cuda|cuda:N|mps" in _refused(resolve_compute, "gpu")
    assert "got 'cuda:x'" in _refused(resolve_compute, "cuda:x")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert "there are 1 CUDA device(s), cuda:0..cuda:0" in _refused(resolve_compute, "cuda:3")


@pytest.mark.parametrize("bf16,expected", [(True, torch.bfloat16), (False, torch.float16)])
def test_cuda_default_is_bf16_where_the_gpu_has_it_else_fp16(one_gpu, monkeypatch, bf16,
                                                                expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    fmt = resolve_weights(None, CUDA0, "exact")
    assert fmt.dtype == expected and fmt.device == CUDA0
    none = resolve_weights("none", CUDA0, "exact")
    assert none.dtype == torch.float32 and none.label == "fp32"


def test_cpu_default_is_fp32_and_fp32_exact_is_the_reference():
    assert resolve_weights(None, CPU, "exact") == WeightFormat("none", torch.float32, CPU)
    assert resolve_weights("int8", CPU, "fast").dtype == torch.float32
    assert resolve_weights("int4", CPU, "fast").name == "int4"


@pytest.mark.parametrize("quantize,device,mode,says", [
    ("int8", CUDA0, "exact", "--quantize int8 is a CPU kernel"),
    ("int4", CUDA0, "fast", "--quantize int4 is a CPU kernel"),
    ("int8", MPS, "fast", "on mps use none (the default) or bf16 or fp16"),
    ("fp16", CPU, "fast", "--quantize fp16 runs on CUDA only"),
    ("int8", CPU, "exact", "exact mode on the CPU runs the reference model in fp32"),
    ("bf16", CPU, "exact", "exact mode on the CPU"),
    ("float8", CPU, "fast",
     "--quantize expects one of none, int8, int4, int4-128, int8-128, bf16, fp16"),
])
def test_combinations_a_backend_cannot_run_are_refused(one_gpu, monkeypatch, quantize, device,
                                                       mode, says):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert says in _refused(resolve_weights, quantize, device, mode)


def test_bf16_needs_native_bf16_on_the_cpu_and_on_the_gpu(one_gpu, monkeypatch):
    monkeypatch.setattr(compute, "bf16_is_native", lambda: False)
    assert "this CPU has no native bf16" in _refused(resolve_weights, "bf16", CPU, "fast")
    monkeypatch.setattr(compute, "bf16_is_native", lambda: True)
    assert resolve_weights("bf16", CPU, "fast").dtype == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert "this GPU has no bf16" in _refused(resolve_weights, "bf16", CUDA0, "exact")


def test_fp32_on_cuda_turns_tf32_off(monkeypatch):
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", True)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    apply_precision(WeightFormat("bf16", torch.bfloat16, CUDA0))
    assert torch.backends.cuda.matmul.allow_tf32  # untouched for other formats
    apply_precision(WeightFormat("none", torch.float32, CUDA0))
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32


def test_out_of_memory_at_start_names_the_model_and_window():
    with pytest.raises(UserError) as e, out_of_memory_as_user_error("gpt2 (124M, bf16)", 200):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert "gpt2 (124M, bf16) with window 200" in str(e.value) and "\n" not in str(e.value)

"""Dispatch: backend choice precedence, clear errors, fallback when the extension is missing, info/CLI."""
import json
import os
import subprocess
import sys
import warnings

import pytest
import torch

import gencore
from gencore import _native, backends
from gencore.ops import kl_normal

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(code, **env):
    full_env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env,
                          cwd=REPO, timeout=300)


@pytest.fixture(autouse=True)
def restore_backend():
    before = gencore.get_backend()
    yield
    gencore.set_backend(before)


def test_torch_backend_always_available():
    assert "torch" in gencore.available_backends()
    assert "torch" in gencore.available_backends("cpu")
    assert gencore.backend_status()["torch"] is None


def test_auto_picks_native_cpu_when_built():
    mu = torch.randn(3, 4)
    expected = "cpu" if _native.loaded else "torch"
    assert backends.select("kl_normal", mu) == expected


def test_set_backend_and_per_call_precedence():
    mu = torch.randn(3, 4)
    gencore.set_backend("torch")
    assert gencore.get_backend() == "torch"
    assert backends.select("kl_normal", mu) == "torch"
    if _native.loaded:
        assert backends.select("kl_normal", mu, backend="cpu") == "cpu"  # per call wins
    gencore.set_backend(None)
    assert gencore.get_backend() == "auto"


def test_unknown_backend_is_a_value_error():
    with pytest.raises(ValueError, match="unknown backend 'fast'"):
        gencore.set_backend("fast")
    with pytest.raises(ValueError, match="unknown backend"):
        kl_normal(torch.randn(2), torch.randn(2), backend="gpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a GPU")
def test_cuda_backend_on_cpu_tensor_names_what_is_available():
    with pytest.raises(RuntimeError, match=r"backend 'cuda' cannot run here.*Available for cpu tensors: torch"):
        kl_normal(torch.randn(2), torch.randn(2), backend="cuda")


def test_triton_on_cpu_without_interpreter_is_a_clear_error(monkeypatch):
    if backends.backend_status()["triton"] == "triton is not installed":
        pytest.skip("triton not installed")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        kl_normal(torch.randn(2), torch.randn(2), backend="triton")
    assert "triton" not in gencore.available_backends("cpu")


def test_env_variable_sets_process_backend():
    result = run_python("import gencore; print(gencore.get_backend())", GENCORE_BACKEND="torch")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "torch"
    bad = run_python("import gencore", GENCORE_BACKEND="nope")
    assert bad.returncode != 0 and "GENCORE_BACKEND" in bad.stderr


def test_import_and_ops_work_without_native_extension():
    code = (
        "import torch, gencore, warnings\n"
        "from gencore.ops import kl_normal, kl_normal_reference\n"
        "mu = torch.randn(5, 3); lv = torch.randn(5, 3)\n"
        "assert gencore.available_backends('cpu') in (['torch'], ['torch', 'triton'])\n"
        "torch.testing.assert_close(kl_normal(mu, lv), kl_normal_reference(mu, lv))\n"
        "print(gencore.info()['native']['error'])\n"
    )
    result = run_python(code, GENCORE_NO_NATIVE="1")
    assert result.returncode == 0, result.stderr
    assert "GENCORE_NO_NATIVE" in result.stdout


def test_missing_extension_warns_once(monkeypatch):
    monkeypatch.setattr(_native, "loaded", False)
    monkeypatch.setattr(_native, "error", "not built (test)")
    monkeypatch.setattr(_native, "_warned", False)
    monkeypatch.setattr(backends, "_status_cache", {})
    monkeypatch.setattr(backends, "_select_cache", {})
    mu = torch.randn(3, 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kl_normal(mu, mu)
        kl_normal(mu, mu)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "not built (test)" in messages[0] and "gencore info" in messages[0]
    with pytest.raises(RuntimeError, match="not built"):
        kl_normal(mu, mu, backend="cpu")


def test_info_reports_build():
    data = gencore.info()
    assert data["torch"] == torch.__version__
    assert set(data["backends"]) == {"torch", "cpu", "cuda", "triton"}
    if _native.loaded:
        assert data["native"]["simd"] in ("AVX512", "AVX2", "AVX", "SSE4.2", "NEON", "scalar")
        assert data["native"]["openmp_max_threads"] >= 1


def test_cli_info_and_demo():
    result = subprocess.run([sys.executable, "-m", "gencore", "info", "--json"], capture_output=True, text=True,
                            cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["native"]["loaded"] == _native.loaded
    text = subprocess.run([sys.executable, "-m", "gencore", "info"], capture_output=True, text=True, cwd=REPO,
                          timeout=300)
    assert "backend" in text.stdout and "native" in text.stdout
    demo = subprocess.run([sys.executable, "-m", "gencore", "demo"], capture_output=True, text=True, cwd=REPO,
                          timeout=300)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "relative error" in demo.stdout


def test_cli_rejects_unknown_command():
    result = subprocess.run([sys.executable, "-m", "gencore", "frobnicate"], capture_output=True, text=True,
                            cwd=REPO, timeout=300)
    assert result.returncode == 2 and "invalid choice" in result.stderr

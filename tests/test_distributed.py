"""Multi-process tests with real processes (gloo over TCP on 127.0.0.1): the synchronized fused
BatchNorm+activation against one process's nn.BatchNorm2d + activation on the concatenated global batch,
DDP training through the CLI, and a dying rank. Every launch has a hard timeout."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

import gencore

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "dist_worker.py")

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    env.pop("TRITON_INTERPRET", None) if env.get("GENCORE_TEST_TRITON") != "1" else None
    return env


def _launch(case: str, world: int, tmp_path, timeout: float = 90, extra=()) -> list[tuple[int, str]]:
    """Start `world` worker processes, wait at most `timeout` seconds for all, kill them otherwise."""
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, WORKER, case, str(r), str(world), str(port), str(tmp_path),
                               *extra],
                              env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(world)]
    outs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=timeout)
            outs.append((p.returncode, out))
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        for p in procs:
            p.communicate()
        pytest.fail(f"{case} with {world} processes did not finish within {timeout} s (hang?)")
    return outs


# ---- the synchronized fused layer against one process on the global batch --------------------------------
def _reference(split, dtype, slope, seed_steps=2, set_affine=True):
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import dist_worker as w
    bn = torch.nn.BatchNorm2d(w.C, dtype=torch.float64)
    with torch.no_grad():
        if set_affine:
            bn.weight.copy_(torch.tensor([1.5, -0.7, 0.3]))
            bn.bias.copy_(torch.tensor([0.1, 0.4, -0.2]))
    out = {}
    for step in range(seed_steps):
        x, gy = w.global_batch(sum(split), dtype, seed=step)
        x = x.to(torch.float64).requires_grad_(True)
        bn.zero_grad()
        y = F.leaky_relu(bn(x), slope) if slope else F.relu(bn(x))
        y.backward(gy.to(torch.float64))
        out[step] = dict(y=y.detach(), dx=x.grad, dw=bn.weight.grad.clone(), db=bn.bias.grad.clone(),
                         running_mean=bn.running_mean.clone(), running_var=bn.running_var.clone())
    bn.eval()
    x, _ = w.global_batch(sum(split), dtype, seed=5)
    y = bn(x.to(torch.float64))
    out["eval"] = F.leaky_relu(y, slope) if slope else F.relu(y)
    return out


TOL = {"torch.float64": dict(atol=1e-9, rtol=1e-9), "torch.float32": dict(atol=2e-5, rtol=2e-5)}


@pytest.mark.parametrize("world", [2, 3])
def test_sync_batchnorm_matches_global_batch(world, tmp_path):
    outs = _launch("bn", world, tmp_path)
    for rc, out in outs:
        assert rc == 0, out[-3000:]
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world)]
    keys = [k for k in results[0] if isinstance(k, tuple)]
    assert {k[1] for k in keys} >= {"torch", "cpu"} & set(gencore.available_backends("cpu"))
    if os.environ.get("GENCORE_TEST_TRITON") == "1":  # opt-in: Triton kernels under the interpreter
        assert "triton" in {k[1] for k in keys}
    for key in keys:
        split, backend, dtype, slope, channels_last = key
        ref = _reference(split, getattr(torch, dtype.split(".")[1]), slope)
        tol = TOL[dtype]
        for step in (0, 1):
            got = [res[key][step] for res in results]
            for name in ("y", "dx"):
                cat = torch.cat([g[name].to(torch.float64) for g in got])
                torch.testing.assert_close(cat, ref[step][name], **tol, msg=lambda m: f"{key} step {step} {name}: {m}")
            for name in ("dw", "db", "running_mean", "running_var"):
                for r, g in enumerate(got):  # identical on every rank, the empty one included
                    torch.testing.assert_close(g[name].to(torch.float64), ref[step][name], **tol,
                                               msg=lambda m: f"{key} step {step} rank {r} {name}: {m}")
        if channels_last:
            assert all(res[key][0]["y"].is_contiguous(memory_format=torch.channels_last) or
                       res[key][0]["y"].shape[0] <= 1 for res in results)
        cat = torch.cat([res[key]["eval"].to(torch.float64) for res in results])
        torch.testing.assert_close(cat, ref["eval"], **tol)
        assert all(res[key]["num_batches_tracked"] == 2 for res in results)
    # nn.SyncBatchNorm + LeakyReLU fused by fuse_batchnorm_activations: still synchronized.
    split = (3, 5) if world == 2 else (3, 0, 5)
    ref = _reference(split, torch.float64, 0.2, seed_steps=1, set_affine=False)
    assert all(res["converted"]["type"] == "SyncBatchNormLeakyReLU" for res in results)
    torch.testing.assert_close(torch.cat([res["converted"]["y"] for res in results]), ref[0]["y"])
    torch.testing.assert_close(torch.cat([res["converted"]["dx"] for res in results]), ref[0]["dx"])
    torch.testing.assert_close(torch.cat([res["converted"]["y_op"] for res in results]), ref[0]["y"])
    torch.testing.assert_close(results[-1]["converted"]["running_var"], ref[0]["running_var"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("world", [2, 3])
def test_sync_batchnorm_matches_nn_syncbatchnorm_on_gpu(world, tmp_path):
    outs = _launch("gpu", world, tmp_path, timeout=120)
    for rc, out in outs:
        assert rc == 0, out[-3000:]
    for r in range(world):
        diffs = torch.load(tmp_path / f"rank{r}.pt", weights_only=False)
        assert diffs and all(d < 1e-4 for d in diffs.values()), diffs


@pytest.mark.parametrize("case", ["die", "stall"])
def test_dead_or_stalled_rank_fails_fast(case, tmp_path):
    """A peer that exits (die) or never joins the collective (stall: group timeout 5 s) makes rank 0
    raise an error naming the layer, well within the launch timeout, instead of hanging."""
    import time
    t0 = time.monotonic()
    outs = _launch(case, 2, tmp_path, timeout=60)
    assert outs[1][0] == (3 if case == "die" else 0)
    assert outs[0][0] == 0, outs[0][1][-3000:]
    err = torch.load(tmp_path / "rank0.pt", weights_only=False)["error"]
    assert err is not None, "the synchronized forward ran although its peer was gone"
    assert "gencore.batch_norm_leaky_relu: synchronizing batch statistics over 2 processes failed" in err
    assert time.monotonic() - t0 < 45


# ---- DDP training through the CLI ------------------------------------------------------------------------
TINY_DCGAN = ["dcgan", "--ngf", "4", "--ndf", "4", "--nz", "8", "--batch-size", "7", "--eval-samples", "32",
              "--no-progress", "--sample-every", "3"]


def _check_identical(tmp_path, world, step):
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world)]
    assert all(r["rc"] == 0 and r["step"] == step for r in results)
    for name, sd in results[0]["state"].items():
        for other in results[1:]:
            for k, v in sd.items():
                assert torch.equal(v, other["state"][name][k]), f"{name}.{k} differs between ranks"
    return results[0]["state"]


def test_ddp_training_through_cli_and_resume_on_other_world_size(tmp_path):
    run = tmp_path / "run"
    # Global batch 7 over 2 ranks (4 + 3): uneven slices, synchronized fused BatchNorm, DDP.
    outs = _launch("train", 2, tmp_path, extra=[*TINY_DCGAN, "--steps", "3", "--out", str(run)])
    for rc, out in outs:
        assert rc == 0, out[-3000:]
    state2 = _check_identical(tmp_path, 2, 3)
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["world_size"] == 2
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["world_size"] == 2 and ckpt["step"] == 3
    for k, v in state2["G"].items():
        assert torch.equal(v, ckpt["models"]["G"][k])
    rv = [v for k, v in state2["D"].items() if k.endswith("running_var")]
    assert rv and all((v != 1).any() for v in rv)  # BatchNorm statistics were updated
    # Resume the same run on 3 processes (2 + 2 + 3 samples): continues from step 3 to 5.
    for r in range(2):
        os.remove(tmp_path / f"rank{r}.pt")
    outs = _launch("train", 3, tmp_path, extra=[*TINY_DCGAN, "--steps", "5", "--out", str(run), "--resume"])
    for rc, out in outs:
        assert rc == 0, out[-3000:]
    _check_identical(tmp_path, 3, 5)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss_d" in r][-1] == 5
    assert json.loads((run / "metrics.json").read_text())["step"] == 5


def test_nproc_launches_torchrun(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "gencore", "train", *TINY_DCGAN, "--steps", "2", "--out", str(run), "--nproc", "2"]
    p = subprocess.run(cmd, env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    assert "torch.distributed.run" in p.stderr and "2 processes" in p.stderr
    assert json.loads((run / "metrics.json").read_text())["step"] == 2
    assert json.loads((run / "config.json").read_text())["world_size"] == 2


# ---- single process: exactly the unsynchronized layer ----------------------------------------------------
def test_sync_without_process_group_is_plain():
    assert not dist.is_initialized()
    torch.manual_seed(0)
    x = torch.randn(4, 3, 5, 2, dtype=torch.float64)
    a = gencore.nn.BatchNormLeakyReLU2d(3, negative_slope=0.2, sync=True, dtype=torch.float64)
    b = gencore.nn.BatchNormLeakyReLU2d(3, negative_slope=0.2, dtype=torch.float64)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    torch.testing.assert_close(a.running_var, b.running_var, rtol=0, atol=0)
    assert "sync=True" in repr(a)
    with pytest.raises(ValueError, match="inplace"):
        gencore.nn.BatchNormLeakyReLU2d(3, sync=True, inplace=True)


def test_fuse_converts_syncbatchnorm_and_sync_helper():
    seq = torch.nn.Sequential(torch.nn.SyncBatchNorm(4), torch.nn.ReLU(), torch.nn.BatchNorm1d(4),
                              torch.nn.LeakyReLU(0.1))
    sd = {k: v.clone() for k, v in seq.state_dict().items()}
    gencore.nn.fuse_batchnorm_activations(seq, inplace=True)
    assert seq.fused_batchnorm_activations == 2
    assert isinstance(seq[0], gencore.nn.SyncBatchNormLeakyReLU) and seq[0].sync and not seq[0].inplace
    assert seq[0].negative_slope == 0.0 and isinstance(seq[1], torch.nn.Identity)
    assert seq.state_dict().keys() == sd.keys()
    assert not seq[2].sync and seq[2].inplace
    gencore.nn.sync_batchnorm_activations(seq)
    assert seq.synced_batchnorm_activations == 2 and seq[2].sync and not seq[2].inplace
    x = torch.randn(6, 4)
    seq(x).sum().backward()  # no process group: runs as the plain layers

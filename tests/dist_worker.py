"""Worker process for tests/test_distributed.py: `python tests/dist_worker.py CASE RANK WORLD PORT OUTDIR`.

Every rank joins a gloo group over TCP on 127.0.0.1:PORT, runs CASE and writes its results to
OUTDIR/rank{RANK}.pt. One thread per process (the test machine has 2 cores for all ranks).
"""
from __future__ import annotations

import datetime
import os
import sys

import torch
import torch.distributed as dist

torch.set_num_threads(1)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gencore  # noqa: E402
import importlib  # noqa: E402

bn_op = importlib.import_module("gencore.ops.batch_norm_leaky_relu")

# Per-rank sample counts of the global batch for each world size: uneven, and one rank empty.
SPLITS = {2: [(3, 5)], 3: [(3, 0, 5), (2, 1, 1)]}
C, H, W = 3, 3, 2


def global_batch(n, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, C, H, W, generator=g, dtype=torch.float64) * 2 + 0.5).to(dtype)
    gy = torch.randn(n, C, H, W, generator=g, dtype=torch.float64).to(dtype)
    return x, gy


def run_bn(rank, world):
    """The synchronized fused layer on this rank's slice, for every backend that runs on the CPU."""
    results = {}
    backends = [b for b in ("torch", "cpu", "triton") if b in gencore.available_backends("cpu")
                and b in bn_op.SUPPORTED]
    if os.environ.get("GENCORE_TEST_TRITON") != "1" and "triton" in backends:
        backends.remove("triton")  # the Triton interpreter is slow: opt-in
    for split in SPLITS[world]:
        lo, hi = sum(split[:rank]), sum(split[:rank + 1])
        for backend in backends:
            for dtype, slope, channels_last in ((torch.float64, 0.2, False), (torch.float32, 0.0, True)):
                key = (split, backend, str(dtype), slope, channels_last)
                torch.manual_seed(0)
                layer = gencore.nn.BatchNormLeakyReLU2d(C, negative_slope=slope, sync=True, backend=backend,
                                                       dtype=dtype)
                with torch.no_grad():
                    layer.weight.copy_(torch.tensor([1.5, -0.7, 0.3]))
                    layer.bias.copy_(torch.tensor([0.1, 0.4, -0.2]))
                out = {}
                for step in range(2):
                    x, gy = global_batch(sum(split), dtype, seed=step)
                    x = x[lo:hi].clone()
                    if channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    x.requires_grad_(True)
                    layer.zero_grad()
                    y = layer(x)
                    y.backward(gy[lo:hi])
                    dw, db = layer.weight.grad.clone(), layer.bias.grad.clone()
                    dist.all_reduce(dw)  # the global batch's parameter gradients are the sum over ranks
                    dist.all_reduce(db)
                    out[step] = dict(y=y.detach(), dx=x.grad, dw=dw, db=db,
                                     running_mean=layer.running_mean.clone(),
                                     running_var=layer.running_var.clone())
                layer.eval()
                x, _ = global_batch(sum(split), dtype, seed=5)
                out["eval"] = layer(x[lo:hi]).detach()
                out["num_batches_tracked"] = int(layer.num_batches_tracked)
                results[key] = out
    # nn.SyncBatchNorm + LeakyReLU converted by fuse_batchnorm_activations keeps synchronizing.
    seq = torch.nn.Sequential(torch.nn.SyncBatchNorm(C, dtype=torch.float64), torch.nn.LeakyReLU(0.2))
    gencore.nn.fuse_batchnorm_activations(seq)
    split = SPLITS[world][0]
    lo, hi = sum(split[:rank]), sum(split[:rank + 1])
    x, gy = global_batch(sum(split), torch.float64, seed=0)
    x = x[lo:hi].clone().requires_grad_(True)
    y = seq(x)
    y.backward(gy[lo:hi])
    # The op itself with an explicit group and no running statistics gives the same output.
    y_op = bn_op.batch_norm_leaky_relu(x.detach(), None, None, None, None, training=True, negative_slope=0.2,
                                       process_group=dist.group.WORLD)
    results["converted"] = dict(type=type(seq[0]).__name__, y=y.detach(), dx=x.grad, y_op=y_op,
                                running_var=seq[0].running_var.clone())
    return results


def run_gpu(rank, world):
    """On a GPU (both ranks share cuda:0, gloo): the synchronized fused layer against nn.SyncBatchNorm +
    LeakyReLU on the same slices; returns the largest differences per backend."""
    import torch.nn.functional as F
    dev = torch.device("cuda", 0)
    split = (3, 5) if world == 2 else (3, 0, 5)
    lo, hi = sum(split[:rank]), sum(split[:rank + 1])
    x, gy = global_batch(sum(split), torch.float32, seed=0)
    x, gy = x[lo:hi].to(dev), gy[lo:hi].to(dev)
    ref_bn = torch.nn.SyncBatchNorm(C).to(dev)
    xr = x.clone().requires_grad_(True)
    yr = F.leaky_relu(ref_bn(xr), 0.2)
    yr.backward(gy)
    out = {}
    for backend in gencore.available_backends("cuda"):
        layer = gencore.nn.SyncBatchNormLeakyReLU(C, negative_slope=0.2, backend=backend).to(dev)
        xg = x.clone().requires_grad_(True)
        y = layer(xg)
        y.backward(gy)
        out[backend] = max(float((y - yr).abs().max()) if y.numel() else 0.0,
                           float((xg.grad - xr.grad).abs().max()) if y.numel() else 0.0,
                           float((layer.weight.grad - ref_bn.weight.grad).abs().max()),
                           float((layer.running_var - ref_bn.running_var).abs().max()))
    return out


def run_stall(rank, world, outdir):
    """Rank 1 is alive but never calls the layer; rank 0 must time out (group timeout 5 s) with an error."""
    import time
    if rank == 1:
        deadline = time.monotonic() + 60
        while not os.path.exists(os.path.join(outdir, "rank0.pt")) and time.monotonic() < deadline:
            time.sleep(0.2)
        os._exit(0)
    return run_die(rank, world)


def run_die(rank, world):
    """Rank 1 dies before the first collective; the others must fail with an error, not hang."""
    if rank == 1:
        os._exit(3)
    layer = gencore.nn.BatchNormLeakyReLU2d(C, sync=True)
    try:
        layer(torch.randn(4, C, H, W))
    except Exception as exc:  # noqa: BLE001 - the error itself is the result
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"error": None}


def run_train(rank, world, port, outdir, argv):
    """`gencore train ARGV` through the CLI with torchrun's environment; saves this rank's final weights."""
    from gencore.cli import main as cli_main
    from gencore.training import trainer as tr

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), GENCORE_DIST_TIMEOUT="60")
    seen = {}
    run = tr.Trainer.run

    def spy(self):
        seen["trainer"] = self
        return run(self)

    tr.Trainer.run = spy
    rc = cli_main(["train", *argv])
    t = seen["trainer"]
    state = {k: {n: v.clone() for n, v in m.state_dict().items()} for k, m in t.models.items()}
    torch.save({"rc": rc, "step": t.step, "state": state}, os.path.join(outdir, f"rank{rank}.pt"))


def main():
    case, rank, world, port, outdir = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    if case == "train":  # the CLI joins the group itself, from the environment
        return run_train(rank, world, port, outdir, sys.argv[6:])
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=5 if case == "stall" else 20))
    if case == "stall":
        result = run_stall(rank, world, outdir)
    else:
        result = {"bn": run_bn, "die": run_die, "gpu": run_gpu}[case](rank, world)
    torch.save(result, os.path.join(outdir, f"rank{rank}.pt"))
    if case in ("bn", "gpu"):
        dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

"""Training loops, checkpoints and resume (gencore.training), on tiny models and few steps."""
from __future__ import annotations

import json
import os

import pytest
import torch

import gencore.nn
from gencore.training import TrainConfig, Trainer, load_checkpoint, resolve, trainer_from_checkpoint
from gencore.training.checkpoint import CHECKPOINT_FORMAT, atomic_save

HAS_FUSED = hasattr(gencore.nn, "BatchNormLeakyReLU2d")
FUSED = HAS_FUSED  # the fused default where this build has it; plain layers otherwise

TINY = {
    "dcgan": dict(model="dcgan", ngf=4, ndf=4, nz=8, batch_size=16, eval_samples=64),
    "vae": dict(model="vae", nz=4, batch_size=16, eval_samples=64),
    "gan2d": dict(model="gan2d", batch_size=20, eval_samples=200),
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _trainer(tmp_path, name="run", **kw):
    return Trainer(TrainConfig(**{"fused": FUSED, **kw}), str(tmp_path / name), progress=False)


def _records(path):
    with open(os.path.join(path, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_config_defaults_and_errors():
    c = resolve(TrainConfig(model="gan2d"))
    assert (c.data, c.batch_size, c.beta1, c.nz, c.maxout) == ("ring8", 100, 0.8, 2, 5)  # PacGAN
    assert (c.lr, c.lr_schedule, c.ema, c.pack, c.r1) == (2e-4, "linear", 0.999, 2, 0.1)  # measured, short CPU run
    c = resolve(TrainConfig(model="dcgan"))
    assert (c.data, c.lr, c.beta1, c.beta2, c.loss, c.r1) == ("digits", 2e-4, 0.5, 0.999, "bce", 0.0)
    assert resolve(TrainConfig(model="vae")).r1 == 0.0
    for bad, msg in [(dict(model="wgan"), "unknown model"), (dict(loss="wasserstein"), "unknown loss"),
                     (dict(amp="fp8"), "unknown --amp"), (dict(steps=3, epochs=1), "not both"),
                     (dict(steps=0), "positive integer"), (dict(ema=1.5), "--ema"),
                     (dict(pack=2), "gan2d only"), (dict(model="gan2d", pack=3), "divisible"),
                     (dict(model="vae", loss="hinge"), "GAN models")]:
        with pytest.raises(ValueError, match=msg):
            resolve(TrainConfig(**bad))


def test_vae_loss_decreases_on_digits(tmp_path):
    t = _trainer(tmp_path, **TINY["vae"], vae_arch="mlp", steps=40)
    losses = [t.train_step()["loss"] for _ in range(40)]
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses


def test_dcgan_steps_on_digits(tmp_path):
    t = _trainer(tmp_path, **TINY["dcgan"], steps=15)
    out = [t.train_step() for _ in range(15)]
    assert all(torch.isfinite(torch.tensor(list(o.values()))).all() for o in out)
    # The discriminator learns to tell digits from the untrained generator's output.
    assert out[-1]["loss_d"] < out[0]["loss_d"] and out[-1]["d_real"] > out[-1]["d_fake"]


def test_gan2d_moves_samples_to_the_ring(tmp_path):
    t = _trainer(tmp_path, **TINY["gan2d"], lr=1e-3, steps=400, ema=0)  # the raw generator
    means = t.dataset.means

    def dist():
        return torch.cdist(t.generate(500), means).min(1).values.mean().item()

    before = dist()
    losses = [t.train_step()["loss_d"] for _ in range(400)]
    # The untrained generator's points sit near the ring's center (distance ~1); training pulls them out.
    # 400 adversarial steps are chaotic: fused and plain layers agree per step to ~1e-6 but their
    # trajectories part, and over seeds 1-3 either variant ended between 0.31 and 0.74 of `before`.
    assert dist() < 0.8 * before, (before, dist())
    assert all(map(lambda v: v == v, losses))


@pytest.mark.parametrize("model", ["gan2d", "dcgan", "vae"])
def test_resume_equals_uninterrupted(tmp_path, model):
    kw = dict(TINY[model], steps=6, sample_every=3, log_every=1)
    if model == "gan2d":  # the part run is created with fewer steps: a linear schedule would differ by design
        kw["lr_schedule"] = "constant"
    full = _trainer(tmp_path, "full", **kw)
    full.run()
    part = _trainer(tmp_path, "part", **{**kw, "steps": 4})
    part.run()
    del part
    resumed = trainer_from_checkpoint(str(tmp_path / "part"), {"steps": 6})
    assert resumed.step == 4
    resumed.run()
    drop = {"eval"}
    a = [{k: v for k, v in r.items() if k not in drop} for r in _records(tmp_path / "full") if "eval" not in r]
    b = [{k: v for k, v in r.items() if k not in drop} for r in _records(tmp_path / "part") if "eval" not in r]
    assert a == b and len(a) == 6
    sa = load_checkpoint(str(tmp_path / "full"))
    sb = load_checkpoint(str(tmp_path / "part"))
    for name in sa["models"]:
        for k, v in sa["models"][name].items():
            assert torch.equal(v, sb["models"][name][k]), f"{model}: {name}.{k} differs after resume"
    assert torch.equal(sa["rng"]["cpu"], sb["rng"]["cpu"])


def test_ema_hinge_and_bf16(tmp_path):
    t = _trainer(tmp_path, **TINY["dcgan"], steps=2, ema=0.9, loss="hinge", amp="bf16")
    g0 = {k: v.clone() for k, v in t.models["G"].state_dict().items()}
    out = t.train_step()
    assert set(out) >= {"loss_d", "loss_g"} and all(v == v for v in out.values())
    g1 = t.models["G"].state_dict()
    for k, v in t.ema.state_dict().items():
        if k.endswith(("weight", "bias")):
            torch.testing.assert_close(v, 0.9 * g0[k] + 0.1 * g1[k])
        else:  # BatchNorm buffers follow the generator
            assert torch.equal(v, g1[k])


def test_fp16_needs_gpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("has a GPU")
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        _trainer(tmp_path, **TINY["dcgan"], amp="fp16", device="cpu")


def test_r1_penalty(tmp_path):
    t = _trainer(tmp_path, **TINY["gan2d"], r1=10.0, steps=2)  # MLP discriminator: no BatchNorm
    out = t.train_step()
    assert out["r1"] > 0
    # Plain layers: double backward works.
    t = _trainer(tmp_path, **{**TINY["dcgan"], "fused": False}, r1=1.0, steps=2)
    assert t.train_step()["r1"] > 0
    if HAS_FUSED:
        with pytest.raises(ValueError, match="double backward.*--no-fused"):
            _trainer(tmp_path, **{**TINY["dcgan"], "fused": True}, r1=1.0)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = str(tmp_path / "ck.pt")
    atomic_save({"format": CHECKPOINT_FORMAT, "step": 1}, path)

    def crash(obj, f, *a, **k):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"format": CHECKPOINT_FORMAT, "step": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert os.listdir(tmp_path) == ["ck.pt"]  # no temporary file left behind


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_checkpoint_loading_refuses_bad_files(tmp_path):
    pickled = tmp_path / "pickled.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "evil": Payload()}, pickled)
    with pytest.raises(ValueError, match="pickled objects"):
        load_checkpoint(str(pickled))
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(os.urandom(200))
    with pytest.raises(ValueError, match="not a loadable gencore checkpoint"):
        load_checkpoint(str(corrupt))
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ValueError, match="not a gencore checkpoint"):
        load_checkpoint(str(foreign))
    with pytest.raises(FileNotFoundError):
        load_checkpoint(str(tmp_path / "missing.pt"))


def test_epochs_and_wrong_data_kind(tmp_path):
    t = _trainer(tmp_path, **TINY["dcgan"], epochs=2)
    assert t.total_steps == 2 * (1797 // 16)
    with pytest.raises(ValueError, match="gan2d trains on 2-D points"):
        _trainer(tmp_path, model="gan2d", data="digits")
    with pytest.raises(ValueError, match="trains on images"):
        _trainer(tmp_path, **TINY["dcgan"], data="ring8")


def test_gan2d_defaults_per_data_set():
    from gencore.training.config import GAN2D_DATA_DEFAULTS, MODEL_DEFAULTS
    for data in ("ring8", "grid25"):
        c = resolve(TrainConfig(model="gan2d", data=data))
        expected = MODEL_DEFAULTS["gan2d"] | GAN2D_DATA_DEFAULTS[data]
        assert (c.pack, c.steps, c.maxout, c.lr, c.lr_schedule, c.r1) == tuple(
            expected[k] for k in ("pack", "steps", "maxout", "lr", "lr_schedule", "r1"))
    c = resolve(TrainConfig(model="gan2d", data="grid25", pack=4, maxout=1, steps=7, lr_schedule="constant", r1=0))
    assert (c.pack, c.maxout, c.steps, c.lr_schedule, c.r1) == (4, 1, 7, "constant", 0)  # explicit options win
    c = resolve(TrainConfig(model="dcgan"))
    assert (c.pack, c.maxout, c.lr_schedule) == (1, 1, "constant")
    for bad, msg in [(dict(model="dcgan", maxout=5), "--maxout applies to gan2d only"),
                     (dict(model="gan2d", maxout=0), "positive integer"),
                     (dict(model="gan2d", lr_schedule="cosine"), "unknown --lr-schedule")]:
        with pytest.raises(ValueError, match=msg):
            resolve(TrainConfig(**bad))


def test_gan2d_models_follow_config(tmp_path):
    from gencore.models import Maxout
    t = _trainer(tmp_path, **TINY["gan2d"], pack=2, maxout=3, steps=1)
    d = t.models["D"]
    assert d.pack == 2 and sum(isinstance(m, Maxout) for m in d.modules()) == 3
    # PacGAN's init: N(0, 0.02) weights, zero biases.
    w = torch.cat([m.weight.flatten() for m in d.modules() if isinstance(m, torch.nn.Linear)])
    assert abs(w.std().item() - 0.02) < 0.002 and abs(w.mean().item()) < 0.002
    t = _trainer(tmp_path, "plain", **TINY["gan2d"], maxout=1, steps=1)
    assert not any(isinstance(m, Maxout) for m in t.models["D"].modules())


def test_linear_lr_schedule_and_resume(tmp_path):
    t = _trainer(tmp_path, **TINY["gan2d"], lr=1e-3, lr_schedule="linear", steps=4)
    for step in range(4):
        t.train_step()
        # the step that just ran used lr * (1 - step / total)
        for opt in t.optims.values():
            assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 * (1 - step / 4))
    t = _trainer(tmp_path, "const", **TINY["gan2d"], lr=1e-3, lr_schedule="constant", steps=4)
    t.train_step()
    t.train_step()
    assert t.optims["G"].param_groups[0]["lr"] == 1e-3


def test_checkpoint_from_before_maxout_loads(tmp_path):
    """A gan2d checkpoint written before --maxout / --lr-schedule existed was trained with LeakyReLU blocks
    and a constant lr: it loads as such."""
    t = _trainer(tmp_path, **TINY["gan2d"], maxout=1, lr_schedule="constant", pack=1, ema=0, steps=1)
    t.run()
    path = str(tmp_path / "run" / "checkpoint.pt")
    ckpt = load_checkpoint(path)
    for k in ("maxout", "lr_schedule"):
        del ckpt["config"][k]
    ckpt["config"]["ema"] = None  # how an old checkpoint says "no EMA"
    atomic_save(ckpt, path)
    t2 = trainer_from_checkpoint(path, progress=False)
    assert (t2.cfg.maxout, t2.cfg.lr_schedule, t2.cfg.pack, t2.ema) == (1, "constant", 1, None)
    for k, v in t.models["D"].state_dict().items():
        assert torch.equal(v, t2.models["D"].state_dict()[k])


def test_gan2d_protocol_runner(tmp_path):
    from gencore.experiments import gan2d_protocol as gp
    configs = [("ring8-pack1", dict(data="ring8", pack=1, r1=0.0, batch_size=20, eval_samples=200)),
               ("grid25-pack4", dict(data="grid25", pack=4, r1=0.0, batch_size=20, eval_samples=200))]
    out = str(tmp_path / "proto")
    res = gp.run_protocol([0, 1], out, configs, steps=3, fused=FUSED, progress=False)
    assert [s["config"] for s in res["summary"]] == ["ring8-pack1", "grid25-pack4"]
    assert len(res["runs"]) == 4 and {r["seed"] for r in res["runs"]} == {0, 1}
    ring = res["summary"][0]
    modes = [r["modes"] for r in res["runs"] if r["config"] == "ring8-pack1"]
    assert ring["modes"]["min"] == min(modes) and ring["modes"]["mean"] == pytest.approx(sum(modes) / 2)
    assert ring["published"] == "6.3 modes, 98.2 %" and ring["target_met"] is False  # 3 steps cover nothing
    assert res["summary"][1]["pack"] == 4
    with open(os.path.join(out, "results.json")) as f:
        assert json.load(f)["summary"][1]["published"] == "24.8 modes, 93.8 %"
    with open(os.path.join(out, "results.md")) as f:
        md = f.read()
    assert "| grid25 | 4 | 0 | 3 | 2 |" in md and md.count("| ring8 | 1 | ") == 3  # summary row + 2 seeds
    assert all(r["modes_any"] >= r["modes"] for r in res["runs"])
    # Finished runs are read back, not trained again.
    mtime = os.path.getmtime(os.path.join(out, "ring8-pack1", "seed0", "checkpoint.pt"))
    res2 = gp.run_protocol([0, 1], out, configs, steps=3, fused=FUSED, progress=False)
    assert res2["runs"] == res["runs"]
    assert os.path.getmtime(os.path.join(out, "ring8-pack1", "seed0", "checkpoint.pt")) == mtime
    # A run evaluated before `modes_any` existed is evaluated again from its checkpoint, to the same numbers.
    path = os.path.join(out, "ring8-pack1", "seed1", "metrics.json")
    with open(path) as f:
        old = json.load(f)
    del old["modes_any"]
    with open(path, "w") as f:
        json.dump(old, f)
    assert gp.run_protocol([0, 1], out, configs, steps=3, fused=FUSED, progress=False)["runs"] == res["runs"]
    # A configuration may have its own seeds.
    res3 = gp.run_protocol([0, 1], out, configs, steps=3, fused=FUSED, progress=False,
                           seeds_for={"grid25-pack4": [1]})
    assert [(r["config"], r["seed"]) for r in res3["runs"]] == [("ring8-pack1", 0), ("ring8-pack1", 1),
                                                                 ("grid25-pack4", 1)]
    assert res3["summary"][1]["runs"] == 1
    assert gp._stats([1.0, 3.0]) == {"mean": 2.0, "std": pytest.approx(2 ** 0.5), "min": 1.0, "max": 3.0}


def test_linear_schedule_resume_equals_uninterrupted(tmp_path):
    """A gan2d run with its defaults (linear lr decay, EMA) stopped at step 3 of 6 and resumed ends with the
    weights of the uninterrupted run."""
    kw = dict(TINY["gan2d"], steps=6, sample_every=3, log_every=1)
    full = _trainer(tmp_path, "full", **kw)
    assert full.cfg.lr_schedule == "linear" and full.ema is not None
    full.run()
    part = _trainer(tmp_path, "part", **kw)
    os.makedirs(part.out_dir)
    for _ in range(3):
        part.train_step()
    part.save_checkpoint()
    resumed = trainer_from_checkpoint(str(tmp_path / "part"))
    assert resumed.step == 3
    resumed.run()
    for name, model in full.models.items():
        for k, v in model.state_dict().items():
            assert torch.equal(v, resumed.models[name].state_dict()[k]), f"{name}.{k} differs after resume"
    for k, v in full.ema.state_dict().items():
        torch.testing.assert_close(v, resumed.ema.state_dict()[k], rtol=0, atol=0)

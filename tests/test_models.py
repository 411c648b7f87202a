"""gencore.models, gencore.data and gencore.metrics: shapes, fused vs unfused, init, data sets, metrics."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import gencore.nn
import gencore.ops
from gencore import data as gdata
from gencore import metrics as gmetrics
from gencore.models import (ConvVAE, DCGANDiscriminator, DCGANGenerator, MLPDiscriminator, MLPGenerator, MLPVAE,
                            fused_layers_available)
from gencore.models import layers

HAS_FUSED = hasattr(gencore.nn, "BatchNormLeakyReLU2d")
needs_fused = pytest.mark.skipif(not HAS_FUSED, reason="gencore.nn.BatchNormLeakyReLU2d is not in this build yet")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # The test machine is shared: one thread avoids OpenMP spin-waiting on busy cores.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _models(fused: bool):
    """(name, constructor, input) for every bundled model, small."""
    return [
        ("G32", lambda: DCGANGenerator(nz=16, ngf=8, nc=1, image_size=32, fused=fused), torch.randn(5, 16)),
        ("G64", lambda: DCGANGenerator(nz=16, ngf=4, nc=3, image_size=64, fused=fused), torch.randn(3, 16, 1, 1)),
        ("D32", lambda: DCGANDiscriminator(ndf=8, nc=1, image_size=32, fused=fused), torch.randn(5, 1, 32, 32)),
        ("D64", lambda: DCGANDiscriminator(ndf=4, nc=3, image_size=64, fused=fused), torch.randn(3, 3, 64, 64)),
        ("ConvVAE", lambda: ConvVAE(nc=1, image_size=32, latent_dim=6, base_channels=8, fused=fused),
         torch.randn(4, 1, 32, 32)),
        ("MLPG", lambda: MLPGenerator(nz=2, hidden=32, fused=fused), torch.randn(12, 2)),
    ]


# ---- shapes ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size,nc", [(32, 1), (64, 3)])
def test_dcgan_shapes(size, nc):
    g = DCGANGenerator(nz=10, ngf=4, nc=nc, image_size=size, fused=False)
    d = DCGANDiscriminator(ndf=4, nc=nc, image_size=size, fused=False)
    x = g(torch.randn(3, 10))
    assert x.shape == (3, nc, size, size)
    assert x.abs().max() <= 1  # tanh output
    assert d(x).shape == (3,)
    # 4x4 convs, stride 2, BN + ReLU in G; LeakyReLU(0.2) in D, no BN after D's first conv.
    assert isinstance(d.main[1], nn.LeakyReLU) and d.main[1].negative_slope == 0.2
    assert sum(isinstance(m, nn.BatchNorm2d) for m in g.modules()) == int(math.log2(size)) - 2
    assert all(m.kernel_size == (4, 4) for m in g.modules() if isinstance(m, nn.ConvTranspose2d))


@pytest.mark.parametrize("cls", [DCGANGenerator, DCGANDiscriminator])
@pytest.mark.parametrize("size", [16, 48, 128])
def test_dcgan_rejects_unsupported_image_size(cls, size):
    with pytest.raises(ValueError, match="image_size must be one of"):
        cls(image_size=size, fused=False)


def test_vae_shapes_and_kl():
    vae = ConvVAE(nc=1, image_size=16, latent_dim=5, base_channels=8, fused=False)
    out = vae(torch.randn(4, 1, 16, 16))
    assert out.recon_logits.shape == (4, 1, 16, 16) and out.mu.shape == (4, 5) and out.z.shape == (4, 5)
    expected = -0.5 * (1 + out.logvar - out.mu ** 2 - out.logvar.exp()).sum()
    torch.testing.assert_close(out.kl, expected)
    assert vae.sample(3).shape == (3, 1, 16, 16)
    mlp = MLPVAE(input_dim=784, hidden_dim=400, latent_dim=20, image_shape=(1, 28, 28), fused=False)
    out = mlp(torch.randn(2, 1, 28, 28))
    assert out.recon_logits.shape == (2, 1, 28, 28) and out.mu.shape == (2, 20)
    with pytest.raises(ValueError, match="image_size"):
        ConvVAE(image_size=24, fused=False)


def test_mlp_gan_packing():
    g = MLPGenerator(nz=2, hidden=16, n_layers=4, fused=False)
    assert sum(isinstance(m, nn.BatchNorm1d) for m in g.modules()) == 4
    d = MLPDiscriminator(in_dim=2, hidden=8, pack=4)
    x = torch.randn(12, 2)
    assert d(x).shape == (3,)
    assert d.main[0].in_features == 8  # 4 packed 2-d samples
    # Packing concatenates consecutive samples: changing sample 5 changes only pack 1's output.
    y = x.clone()
    y[5] += 1
    changed = (d(x) != d(y)).tolist()
    assert changed == [False, True, False]
    with pytest.raises(ValueError, match="divisible by pack"):
        d(torch.randn(10, 2))



def test_mlp_discriminator_maxout():
    """PacGAN's 2-D discriminator: linear maxout blocks (here 3 pieces), packing still per pack."""
    from gencore.models.mlp import Maxout
    torch.manual_seed(0)
    d = MLPDiscriminator(in_dim=2, hidden=6, n_layers=3, pack=2, maxout=3)
    blocks = [m for m in d.main if isinstance(m, Maxout)]
    assert len(blocks) == 3 and not any(isinstance(m, (nn.LeakyReLU, nn.BatchNorm1d)) for m in d.modules())
    assert blocks[0].linear.in_features == 4 and blocks[0].linear.out_features == 18
    x = torch.randn(10, 2)
    assert d(x).shape == (5,)
    # Each unit is the max of its pieces (piece-major layout), checked against a loop.
    m = blocks[0]
    h = torch.randn(7, 4)
    y = m.linear(h)
    expected = torch.stack([torch.stack([y[:, p * 6 + u] for p in range(3)], 1).max(1).values for u in range(6)], 1)
    torch.testing.assert_close(m(h), expected)
    # No fused variant: fused and plain discriminators share the state dict and the outputs.
    plain = MLPDiscriminator(in_dim=2, hidden=6, pack=2, maxout=3, fused=False)
    plain.load_state_dict(d.state_dict())
    assert list(plain.state_dict()) == list(d.state_dict())
    torch.testing.assert_close(plain(x), d(x))
    # Gradients reach every piece that wins somewhere.
    d(x).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in d.parameters())
    with pytest.raises(ValueError, match="maxout"):
        MLPDiscriminator(maxout=0)
    with pytest.raises(ValueError, match="cannot be combined"):
        MLPDiscriminator(maxout=5, batch_norm=True)
    with pytest.raises(ValueError, match="pieces"):
        Maxout(2, 3, 1)

# ---- init --------------------------------------------------------------------------------------------
def test_dcgan_init_statistics():
    torch.manual_seed(0)
    g = DCGANGenerator(nz=100, ngf=32, nc=3, image_size=64, fused=False)
    d = DCGANDiscriminator(ndf=32, nc=3, image_size=64, fused=False)
    for model in (g, d):
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                w = m.weight
                if w.numel() > 1000:
                    assert abs(w.mean().item()) < 0.003 and abs(w.std().item() - 0.02) < 0.002, m
                assert m.bias is None
            if isinstance(m, nn.BatchNorm2d):
                assert abs(m.weight.mean().item() - 1) < 0.01 and 0.01 < m.weight.std().item() < 0.03
                assert torch.all(m.bias == 0)


# ---- fused vs unfused --------------------------------------------------------------------------------
def test_fused_request_without_fused_layer_is_clear():
    if HAS_FUSED:
        pytest.skip("this build has the fused layers")
    assert not fused_layers_available()
    with pytest.raises(RuntimeError, match="fused=True needs gencore.nn.BatchNormLeakyReLU2d.*fused=False"):
        DCGANGenerator(fused=True)


@needs_fused
@pytest.mark.parametrize("idx", range(6))
def test_fused_and_unfused_agree(idx):
    name, make_fused, x = _models(True)[idx]
    _, make_plain, _ = _models(False)[idx]
    torch.manual_seed(0)
    fused = make_fused()
    torch.manual_seed(0)
    plain = make_plain()
    sd_f, sd_p = fused.state_dict(), plain.state_dict()
    assert list(sd_f) == list(sd_p), name
    for k in sd_p:
        torch.testing.assert_close(sd_f[k], sd_p[k], rtol=0, atol=0, msg=f"{name}: {k}")
    # Load across variants, then compare forward, input and parameter gradients, running statistics.
    plain.load_state_dict(fused.state_dict())
    fused.load_state_dict(plain.state_dict())
    for mode in ("train", "eval"):
        fused.train(mode == "train")
        plain.train(mode == "train")
        xf, xp = x.clone().requires_grad_(), x.clone().requires_grad_()
        if name == "ConvVAE":
            # Through mu (no sampling): the fused reparameterization draws its own Philox noise.
            of, op = fused.decode(fused.encode(xf)[0]), plain.decode(plain.encode(xp)[0])
        else:
            of, op = fused(xf), plain(xp)
        torch.testing.assert_close(of, op, rtol=1e-4, atol=1e-5, msg=f"{name} {mode} forward")
        g = torch.randn_like(op)
        of.backward(g)
        op.backward(g)
        torch.testing.assert_close(xf.grad, xp.grad, rtol=1e-4, atol=1e-5, msg=f"{name} {mode} input grad")
        for (n, pf), (_, pp) in zip(fused.named_parameters(), plain.named_parameters()):
            if pp.grad is not None:
                torch.testing.assert_close(pf.grad, pp.grad, rtol=1e-3, atol=1e-5, msg=f"{name} {mode} {n}")
        fused.zero_grad()
        plain.zero_grad()
    for k, v in plain.state_dict().items():
        torch.testing.assert_close(fused.state_dict()[k], v, rtol=1e-5, atol=1e-6, msg=f"{name} {k} after steps")


@needs_fused
def test_converter_leaves_nothing_unfused():
    fuse = getattr(gencore.nn, "fuse_batchnorm_activations", None)
    if fuse is None:
        pytest.skip("gencore.nn.fuse_batchnorm_activations is not in this build yet")
    for name, make_plain, x in _models(False):
        model = make_plain()
        sd = {k: v.clone() for k, v in model.state_dict().items()}
        converted = fuse(model) or model
        left = [type(m).__name__ for m in converted.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                and not layers.is_fused(m)]
        assert not left, f"{name}: unfused BatchNorm left: {left}"
        assert set(converted.state_dict()) == set(sd), name


def test_reparameterize_kl_one_place():
    mu, logvar = torch.randn(64, 8), torch.randn(64, 8) * 0.3
    z_p, kl_p = layers.reparameterize_kl(mu, logvar, fused=False, generator=torch.Generator().manual_seed(3))
    z_f, kl_f = layers.reparameterize_kl(mu, logvar, fused=True, generator=torch.Generator().manual_seed(3))
    expected = -0.5 * (1 + logvar - mu ** 2 - logvar.exp()).sum()
    torch.testing.assert_close(kl_p, expected)
    torch.testing.assert_close(kl_f, expected, rtol=1e-5, atol=1e-4)
    eps = (z_f - mu) / torch.exp(0.5 * logvar)
    assert abs(eps.mean().item()) < 0.15 and abs(eps.std().item() - 1) < 0.1
    if not hasattr(gencore.ops, "reparameterize_kl"):
        torch.testing.assert_close(z_f, z_p)  # the fallback samples with torch, like the unfused path


# ---- data --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [32, 64])
def test_digits(size):
    ds = gdata.load_dataset("digits", size)
    assert ds.kind == "image" and ds.data.shape == (1797, 1, size, size) and ds.data.dtype == torch.float32
    assert ds.data.min() >= -1 and ds.data.max() <= 1
    assert ds.data.min() == -1 and ds.data.max() > 0.9
    assert sorted(ds.labels.unique().tolist()) == list(range(10))
    xtr, _ = gdata.load_digits_tensor(8, "train")
    xte, _ = gdata.load_digits_tensor(8, "test")
    assert len(xtr) == 1500 and len(xte) == 297
    # Disjoint split.
    assert not (xte.flatten(1)[:, None] == xtr.flatten(1)[None]).all(-1).any()


def test_ring8_and_grid25():
    ring = gdata.mixture_means("ring8")
    assert ring.shape == (8, 2)
    torch.testing.assert_close(ring.norm(dim=1), torch.ones(8))
    angles = torch.atan2(ring[:, 1], ring[:, 0]) % (2 * math.pi)
    torch.testing.assert_close(angles.sort().values, 2 * math.pi * torch.arange(8) / 8, atol=1e-6, rtol=0)
    grid = gdata.mixture_means("grid25")
    assert sorted(map(tuple, grid.tolist())) == [(a, b) for a in (-4., -2., 0., 2., 4.) for b in (-4., -2., 0., 2., 4.)]
    for name, std in (("ring8", 0.01), ("grid25", 0.05)):
        ds = gdata.load_dataset(name, seed=1)
        assert ds.data.shape == (100_000, 2) and ds.kind == "points" and ds.std == std
        for k in range(len(ds.means)):
            pts = ds.data[ds.labels == k]
            assert len(pts) > 100_000 / len(ds.means) * 0.8
            torch.testing.assert_close(pts.mean(0), ds.means[k], atol=5 * std / math.sqrt(len(pts)), rtol=0)
            assert abs(pts.std(0).mean().item() - std) < 0.05 * std
    a = gdata.load_dataset("ring8", seed=2).data
    assert torch.equal(a, gdata.load_dataset("ring8", seed=2).data)


def _write_images(folder, Image):
    # Wide image: left third red, middle green, right third blue -> center crop is all green.
    im = Image.new("RGB", (90, 30))
    for x in range(90):
        for y in range(30):
            im.putpixel((x, y), (255, 0, 0) if x < 30 else (0, 255, 0) if x < 60 else (0, 0, 255))
    im.save(folder / "wide.png")
    (folder / "sub").mkdir()
    Image.new("L", (20, 40), 128).save(folder / "sub" / "tall.JPG")
    (folder / "notes.txt").write_text("not an image")


def test_folder_dataset(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    _write_images(tmp_path, Image)
    ds = gdata.load_dataset(f"folder:{tmp_path}", 16)
    assert ds.data.shape == (2, 3, 16, 16) and ds.data.dtype == torch.uint8
    batch = ds.batch(torch.arange(2))
    assert batch.dtype == torch.float32 and batch.min() >= -1 and batch.max() <= 1
    wide = batch[1] if ds.data[0].float().std() < 1 else batch[0]
    torch.testing.assert_close(wide[:, 4:12, 4:12].mean((1, 2)), torch.tensor([-1.0, 1.0, -1.0]), atol=0.05, rtol=0)


def test_bad_data_specs(tmp_path):
    with pytest.raises(ValueError, match="unknown data set 'mnist'"):
        gdata.load_dataset("mnist")
    with pytest.raises(ValueError, match="no PNG or JPEG images"):
        gdata.load_dataset(f"folder:{tmp_path}")
    with pytest.raises(ValueError, match="not a directory"):
        gdata.load_dataset(f"folder:{tmp_path}/missing")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read image"):
        gdata.load_dataset(f"folder:{tmp_path}")
    fake = gdata.load_dataset("fake", 32)
    assert fake.data.shape == (1024, 3, 32, 32)


def test_batch_stream_resumes_exactly():
    a = gdata.BatchStream(10, 3, seed=5)
    first = [a.next() for _ in range(4)]  # crosses an epoch (3 batches of 3 per epoch)
    state = a.state_dict()
    rest = [a.next() for _ in range(5)]
    b = gdata.BatchStream(10, 3, seed=99)
    b.load_state_dict(state)
    assert all(torch.equal(x, y) for x, y in zip(rest, [b.next() for _ in range(5)]))
    assert a.epoch >= 2 and len(set(torch.cat(first[:3]).tolist())) == 9
    with pytest.raises(ValueError, match="larger than the data set"):
        gdata.BatchStream(5, 6, seed=0)


# ---- metrics -----------------------------------------------------------------------------------------
def test_mode_metrics():
    means = gdata.mixture_means("ring8")
    x, _ = gdata.sample_mixture("ring8", 2500, torch.Generator().manual_seed(0))
    m = gmetrics.mode_metrics(x, means, 0.01)
    assert m["modes"] == 8 and m["high_quality"] > 0.98 and m["reverse_kl"] < 0.01
    collapsed = means[3] + 0.01 * torch.randn(2500, 2)
    m = gmetrics.mode_metrics(collapsed, means, 0.01)
    assert m["modes"] == 1 and abs(m["reverse_kl"] - math.log(8)) < 1e-6
    m = gmetrics.mode_metrics(torch.zeros(2500, 2), means, 0.01)  # center of the ring: far from every mode
    assert m["high_quality"] == 0 and m["modes"] == 0
    # A mode needs 20 high-quality samples (PacGAN's threshold).
    few = torch.cat([means[0].expand(19, 2), means[1].expand(20, 2)])
    assert gmetrics.mode_metrics(few, means, 0.01)["modes"] == 1


def test_frechet_and_kid():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(2000, 4, generator=g)
    b = torch.randn(2000, 4, generator=g)
    assert gmetrics.frechet_distance(a, b) < 0.05
    assert abs(gmetrics.frechet_distance(a, a + 2) - 16) < 1e-6  # ||shift||^2 = 4 * 2^2
    assert gmetrics.frechet_distance(a, 3 * b) > 10  # variances 1 vs 9: 4 * (1 + 9 - 2*3) = 16
    assert abs(gmetrics.kernel_inception_distance(a, b)) < 0.05
    assert gmetrics.kernel_inception_distance(a, a + 1) > 1


def test_digits_classifier_and_metrics():
    assert gmetrics.classifier_accuracy() > 0.93
    real, _ = gdata.load_digits_tensor(32, "test")
    good = gmetrics.digits_metrics(real)
    assert good["classes_covered"] == 10 and good["confidence"] > 0.9
    noise = gmetrics.digits_metrics(torch.rand(297, 1, 32, 32) * 2 - 1)
    assert noise["fd"] > 20 * good["fd"] and noise["confidence"] < good["confidence"]
    x, y = gdata.load_digits_tensor(32, "all")
    collapsed = gmetrics.digits_metrics(x[y == 1][:100])
    assert collapsed["classes_covered"] == 1 and collapsed["class_reverse_kl"] > 1.5

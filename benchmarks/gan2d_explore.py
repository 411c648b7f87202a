"""Ad-hoc exploration loop for the gan2d settings (not part of the package or the test suite).

A stand-alone copy of gencore's gan2d training step with plain torch layers (the discriminator and the
init are the package's: MLPDiscriminator, pacgan_init) and knobs the trainer does not have (PyTorch vs
N(0, 0.02) init, bias-free generator layers, BatchNorm momentum), evaluating every
`--eval-every` steps in several ways: the generator in eval mode (running statistics, what gencore
reports), in training mode (batch statistics over batches of 100 or over all 2,500 samples), and an EMA
of the generator the same ways. It produced the single-seed numbers in docs/training.md
("How the defaults were chosen"). Run pinned to one core, e.g.

    taskset -c 1 env OMP_NUM_THREADS=1 python benchmarks/gan2d_explore.py --data ring8 --pack 2 \
        --packs-per-batch 50 --maxout 5 --init normal --lr 2e-4 --decay 1 --steps 6000 --eval-every 1000
"""
import argparse, time, json, copy, sys
import torch, torch.nn as nn, torch.nn.functional as F
sys.path.insert(0, __import__('os').path.dirname(__import__('os').path.dirname(__import__('os').path.abspath(__file__))))
from gencore import data as gdata, metrics as gm
from gencore.models import MLPDiscriminator, pacgan_init
torch.set_num_threads(1)
p = argparse.ArgumentParser()
p.add_argument('--data', default='ring8'); p.add_argument('--pack', type=int, default=1)
p.add_argument('--packs-per-batch', type=int, default=100)  # PacGAN: 100 packs per batch
p.add_argument('--steps', type=int, default=10000); p.add_argument('--lr', type=float, default=1e-4)
p.add_argument('--lr-g', type=float, default=None)
p.add_argument('--beta1', type=float, default=0.8); p.add_argument('--maxout', type=int, default=5)
p.add_argument('--init', default='normal'); p.add_argument('--ema', type=float, default=0)
p.add_argument('--seed', type=int, default=0); p.add_argument('--eval-every', type=int, default=2000)
p.add_argument('--bn-mom', type=float, default=0.1); p.add_argument('--gbias', type=int, default=0)
p.add_argument('--dhidden', type=int, default=200); p.add_argument('--decay', type=int, default=0); p.add_argument('--dsteps', type=int, default=1); p.add_argument('--r1', type=float, default=0)
a = p.parse_args()
torch.manual_seed(a.seed)
ds = gdata.load_dataset(a.data, seed=a.seed)
X = ds.data.float()
def G_net():
    L=[]; d=2
    for _ in range(4):
        L += [nn.Linear(d,400,bias=bool(a.gbias)), nn.BatchNorm1d(400, momentum=a.bn_mom), nn.ReLU()]; d=400
    L.append(nn.Linear(d,2)); return nn.Sequential(*L)
# The discriminator is the package's (maxout blocks or Linear -> LeakyReLU; it takes unpacked points).
G, D = G_net(), MLPDiscriminator(in_dim=2, hidden=a.dhidden, pack=a.pack, maxout=a.maxout, fused=False)
if a.init == 'normal':
    pacgan_init(G); pacgan_init(D)
ema = copy.deepcopy(G) if a.ema else None
og = torch.optim.Adam(G.parameters(), lr=a.lr_g or a.lr, betas=(a.beta1, 0.999))
od = torch.optim.Adam(D.parameters(), lr=a.lr, betas=(a.beta1, 0.999))
B = a.packs_per_batch * a.pack
gen = torch.Generator().manual_seed(a.seed+1); perm = torch.randperm(len(X), generator=gen); pos=0
zeval = torch.randn(2500, 2, generator=torch.Generator().manual_seed(a.seed+3))
def ev(model, train_mode):
    saved = copy.deepcopy(model.state_dict())
    model.train(bool(train_mode))
    with torch.no_grad():
        s = model(zeval) if train_mode != 1 else torch.cat([model(c) for c in zeval.split(100)])
    model.train(True); model.load_state_dict(saved)
    r = gm.mode_metrics(s, ds.means, ds.std); return (r['modes'], round(r['high_quality']*100,1), round(r['reverse_kl'],3))
t0=time.time(); res=[]
for step in range(1, a.steps+1):
    if a.decay:
        for o in (og, od):
            for g_ in o.param_groups: g_['lr'] = (a.lr if o is od else (a.lr_g or a.lr)) * (1 - (step-1)/a.steps)
    if pos+B > len(X): perm = torch.randperm(len(X), generator=gen); pos=0
    real = X[perm[pos:pos+B]]; pos+=B
    z = torch.randn(B, 2)
    fake = G(z)
    rv = real.view(-1, 2*a.pack).requires_grad_(a.r1 > 0)  # one row per pack: R1's norm is per pack
    dr = D(rv.view(-1, 2)); df = D(fake.detach())
    ld = F.softplus(-dr).mean() + F.softplus(df).mean()
    if a.r1 > 0:
        (gr,) = torch.autograd.grad(dr.sum(), rv, create_graph=True)
        ld = ld + 0.5 * a.r1 * gr.pow(2).sum(1).mean()
    od.zero_grad(); ld.backward(); od.step()
    lg = F.softplus(-D(fake)).mean()
    og.zero_grad(); lg.backward(); og.step()
    if ema is not None:
        with torch.no_grad():
            for pe, p_ in zip(ema.parameters(), G.parameters()): pe.lerp_(p_, 1-a.ema)
            for be, b in zip(ema.buffers(), G.buffers()):
                if be.dtype.is_floating_point: be.lerp_(b, 1-a.ema)
                else: be.copy_(b)
    if step % a.eval_every == 0:
        r = {'step': step, 't': round(time.time()-t0), 'eval': ev(G, False), 'trainbn': ev(G, True), 'train2500': ev(G, 2)}
        if ema is not None: r['ema_eval'] = ev(ema, False); r['ema_trainbn'] = ev(ema, True); r['ema_train2500'] = ev(ema, 2)
        print(json.dumps(r), flush=True); res.append(r)
print('ARGS', vars(a), 'time', round(time.time()-t0,1))

"""airbench94_muon (Jordan, 2024) re-written for PyTorch on a CPU: the reference the Keras
speed-run recipe (`mmkeras.speedrun`, `image_airbench`) is checked against, on the benchmark's
own CIFAR-10 splits. Not part of the package and not run by the tests; it needs torch
(`pip install torch numpy` in a separate environment). Same network (identity-initialised
convolutions, frozen 2x2 patch whitening with eps 5e-4, BatchNorm without scale), optimizer
(Muon on the kernels, Nesterov SGD on the rest, summed loss with label smoothing 0.2, rates
decaying linearly to 0, the whitening bias trained for 3 epochs), augmentation (alternating
flips, 2-pixel reflect-padded translations) and six-view test-time augmentation; bf16
autocast where the CPU has it.

Export the splits the benchmark trains and tests on (in the project's environment):

    python -c "import numpy as np; from mmkeras.data import load_dataset; \
    from mmkeras.data.pipeline import split_train_validation as s; d = load_dataset('cifar10', seed=0); \
    t, v = s(len(d.train), 0.1, 0); x, y = np.asarray(d.train.image), np.asarray(d.train.label); \
    np.savez('/tmp/cifar_np.npz', x_train=x[t], y_train=y[t], x_val=x[v], y_val=y[v], \
    x_test=np.asarray(d.test.image), y_test=np.asarray(d.test.label))"

then `python docs/reference/airbench94_muon_torch.py --npz /tmp/cifar_np.npz [--trainval]`.
Measured in docs/models.md ("What the data costs").
"""
import argparse, json, time
from math import ceil
import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--npz", default="/tmp/cifar_np.npz")
p.add_argument("--epochs", type=int, default=8)
p.add_argument("--batch", type=int, default=2000)
p.add_argument("--trainval", action="store_true", help="train on train+val (50,000)")
p.add_argument("--seed", type=int, default=0)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--bf16", type=int, default=1)
a = p.parse_args()
torch.manual_seed(a.seed); torch.set_num_threads(a.threads)

d = np.load(a.npz)
xtr, ytr = d["x_train"], d["y_train"]
if a.trainval:
    xtr, ytr = np.concatenate([xtr, d["x_val"]]), np.concatenate([ytr, d["y_val"]])
MEAN = torch.tensor((0.4914, 0.4822, 0.4465)).view(1, 3, 1, 1)
STD = torch.tensor((0.2470, 0.2435, 0.2616)).view(1, 3, 1, 1)
def prep(x):
    return ((torch.tensor(x).float() / 255).permute(0, 3, 1, 2) - MEAN) / STD
Xtr, Ytr = prep(xtr).contiguous(), torch.tensor(ytr).long().view(-1)
Xte, Yte = prep(d["x_test"]).contiguous(), torch.tensor(d["y_test"]).long().view(-1)

def batch_crop(images, size, r):
    shifts = torch.randint(-r, r + 1, size=(len(images), 2))
    out = torch.empty((len(images), 3, size, size))
    for sy in range(-r, r + 1):
        for sx in range(-r, r + 1):
            m = (shifts[:, 0] == sy) & (shifts[:, 1] == sx)
            out[m] = images[m, :, r + sy:r + sy + size, r + sx:r + sx + size]
    return out

class BN(nn.BatchNorm2d):
    def __init__(self, n):
        super().__init__(n, eps=1e-12, momentum=0.4)
        self.weight.requires_grad = False

class Conv(nn.Conv2d):
    def __init__(self, i, o):
        super().__init__(i, o, 3, padding="same", bias=False)
    def reset_parameters(self):
        super().reset_parameters()
        torch.nn.init.dirac_(self.weight.data[:self.weight.size(1)])

class Group(nn.Module):
    def __init__(self, i, o):
        super().__init__()
        self.conv1, self.pool, self.norm1 = Conv(i, o), nn.MaxPool2d(2), BN(o)
        self.conv2, self.norm2, self.act = Conv(o, o), BN(o), nn.GELU()
    def forward(self, x):
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        return self.act(self.norm2(self.conv2(x)))

class Net(nn.Module):
    def __init__(self, w=(64, 256, 256)):
        super().__init__()
        self.whiten = nn.Conv2d(3, 24, 2, bias=True); self.whiten.weight.requires_grad = False
        self.layers = nn.Sequential(nn.GELU(), Group(24, w[0]), Group(w[0], w[1]), Group(w[1], w[2]), nn.MaxPool2d(3))
        self.head = nn.Linear(w[2], 10, bias=False)
        with torch.no_grad():
            self.head.weight *= 1 / self.head.weight.std()
    def init_whiten(self, x, eps=5e-4):
        patches = x.unfold(2, 2, 1).unfold(3, 2, 1).transpose(1, 3).reshape(-1, 3, 2, 2).float()
        flat = patches.view(len(patches), -1)
        cov = flat.T @ flat / len(flat)
        ev, evec = torch.linalg.eigh(cov, UPLO="U")
        s = evec.T.reshape(-1, 3, 2, 2) / torch.sqrt(ev.view(-1, 1, 1, 1) + eps)
        self.whiten.weight.data[:] = torch.cat((s, -s))
    def forward(self, x, whiten_bias_grad=True):
        b = self.whiten.bias
        x = F.conv2d(x, self.whiten.weight, b if whiten_bias_grad else b.detach())
        x = self.layers(x).view(len(x), -1)
        return self.head(x) / x.size(-1)

def ns5(G, steps=3, eps=1e-7):
    a_, b_, c_ = (3.4445, -4.7750, 2.0315)
    X = G.float(); X = X / (X.norm() + eps)
    t = G.size(0) > G.size(1)
    if t: X = X.T
    for _ in range(steps):
        A = X @ X.T; X = a_ * X + (b_ * A + c_ * A @ A) @ X
    return X.T if t else X

class Muon(torch.optim.Optimizer):
    def __init__(self, params, lr, momentum, nesterov=True):
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov))
    @torch.no_grad()
    def step(self):
        for g_ in self.param_groups:
            for p_ in g_["params"]:
                g = p_.grad
                if g is None: continue
                st = self.state[p_]
                if "buf" not in st: st["buf"] = torch.zeros_like(g)
                buf = st["buf"]; buf.mul_(g_["momentum"]).add_(g)
                g = g.add(buf, alpha=g_["momentum"]) if g_["nesterov"] else buf
                p_.data.mul_(len(p_.data) ** 0.5 / p_.data.norm())
                p_.data.add_(ns5(g.reshape(len(g), -1)).view(g.shape), alpha=-g_["lr"])

model = Net().to(memory_format=torch.channels_last)
model.init_whiten(Xtr[:5000])
bs = a.batch
steps_per_epoch = len(Xtr) // bs  # drop_last
total = a.epochs * steps_per_epoch
whiten_bias_steps = 3 * steps_per_epoch
wd = 2e-6 * bs
filters = [q for q in model.parameters() if len(q.shape) == 4 and q.requires_grad]
norm_biases = [q for n, q in model.named_parameters() if "norm" in n and q.requires_grad]
opt1 = torch.optim.SGD([dict(params=[model.whiten.bias], lr=0.053, weight_decay=wd / 0.053),
                        dict(params=norm_biases, lr=0.053, weight_decay=wd / 0.053),
                        dict(params=[model.head.weight], lr=0.67, weight_decay=wd / 0.67)], momentum=0.85, nesterov=True)
opt2 = Muon(filters, lr=0.24, momentum=0.6)
for o in (opt1, opt2):
    for g in o.param_groups: g["initial_lr"] = g["lr"]

flipped = torch.where((torch.rand(len(Xtr)) < 0.5).view(-1, 1, 1, 1), Xtr.flip(-1), Xtr)
padded = F.pad(flipped, (2,) * 4, "reflect")
ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if a.bf16 else (lambda: torch.autocast("cpu", enabled=False))

def infer(x, tta):
    model.eval()
    outs = []
    with torch.no_grad(), ctx():
        for xb in x.split(1000):
            xb = xb.contiguous(memory_format=torch.channels_last)
            m = lambda z: 0.5 * model(z).float() + 0.5 * model(z.flip(-1)).float()
            if not tta:
                outs.append(model(xb).float()); continue
            pd = F.pad(xb, (1,) * 4, "reflect")
            tr = torch.stack([m(pd[:, :, 0:32, 0:32]), m(pd[:, :, 2:34, 2:34])]).mean(0)
            outs.append(0.5 * m(xb) + 0.5 * tr)
    return torch.cat(outs)

step, t0, log = 0, time.time(), []
for epoch in range(a.epochs):
    model.train()
    imgs = batch_crop(padded, 32, 2)
    if epoch % 2 == 1: imgs = imgs.flip(-1)
    idx = torch.randperm(len(imgs))
    te = time.time()
    for i in range(steps_per_epoch):
        b = idx[i * bs:(i + 1) * bs]
        xb, yb = imgs[b].contiguous(memory_format=torch.channels_last), Ytr[b]
        with ctx():
            out = model(xb, whiten_bias_grad=(step < whiten_bias_steps))
        F.cross_entropy(out.float(), yb, label_smoothing=0.2, reduction="sum").backward()
        for g in opt1.param_groups[:1]:
            g["lr"] = g["initial_lr"] * max(1 - step / whiten_bias_steps, 0)
        for g in opt1.param_groups[1:] + opt2.param_groups:
            g["lr"] = g["initial_lr"] * (1 - step / total)
        opt1.step(); opt2.step(); model.zero_grad(set_to_none=True)
        step += 1
    acc = (infer(Xte, False).argmax(1) == Yte).float().mean().item()
    log.append(dict(epoch=epoch + 1, test=round(acc, 4), epoch_s=round(time.time() - te, 1)))
    print(json.dumps(log[-1]), flush=True)
tta = (infer(Xte, True).argmax(1) == Yte).float().mean().item()
print(json.dumps(dict(vars(a), tta=round(tta, 4), last=log[-1]["test"], seconds=round(time.time() - t0, 1))), flush=True)

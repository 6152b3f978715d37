"""What the test files share: seeded synthetic data and small models (float64 where exactness is claimed), the
loops and oracles several files check against, and the writers of stand-in data files.

Test files import from here (``from helpers import ...``; pytest puts ``tests/`` on ``sys.path`` because
``tests/conftest.py`` lives there), never from one another. Nothing here imports ``amnesiac_paper`` at module
level: the library's tests (``tests/core``) run without the paper's package installed.
"""

import socket
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import amnesiac

README = Path(__file__).resolve().parents[1] / "README.md"

# ------------------------------------------------------------------------------------- data and models


def tiny_dataset(n=40, classes=4, size=8, channels=1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, channels, size, size, generator=gen, dtype=torch.float64)
    y = torch.randint(0, classes, (n,), generator=gen)
    return amnesiac.ArrayDataset(x, y, torch.arange(n), "tiny")


class TinyCNN(nn.Module):
    """The paper's SimpleModel (amnesiac_paper.models) for the library's tests, which must not need the paper's
    package: the same modules in the same order (so the same parameter names) and the same initialisation (each
    layer's default init, then Xavier-normal weights and zero biases), so a seed gives it bit for bit
    SimpleModel's parameters (tests/study/test_baselines.py checks that) and expectations hold for both."""

    def __init__(self, in_channels=1, num_classes=10, width=100):
        super().__init__()
        convs = [nn.Conv2d(c, width, 3, 2, 1) for c in (in_channels, width)]
        self.features = nn.Sequential(convs[0], nn.LeakyReLU(0.1), convs[1], nn.LeakyReLU(0.1),
                                      nn.AdaptiveMaxPool2d((2, 2)))
        self.classifier = nn.Linear(width * 4, num_classes)
        for layer in (*convs, self.classifier):
            nn.init.xavier_normal_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def tiny_model(seed=0, classes=4, channels=1, dtype=torch.float64):
    torch.manual_seed(seed)
    return TinyCNN(channels, classes, width=6).to(dtype)


def small_resnet():
    """The paper's ResNet-18 with GroupNorm, 3 classes, float64 (the tests using it skip without amnesiac_paper)."""
    paper = pytest.importorskip("amnesiac_paper")
    torch.manual_seed(0)
    return paper.resnet18_gn(1, 3, stem="imagenet").double()


# the model cases of the tests that run both: the ResNet's take minutes on 2 CPU cores, so they are marked slow
SIMPLE = pytest.param(tiny_model, id="simple")
RESNET = pytest.param(small_resnet, id="resnet18-gn", marks=pytest.mark.slow)


class Scale(nn.Module):
    """A layer with a parameter and no layer rule, holding a child with a rule."""

    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.linspace(0.5, 1.5, 16, dtype=torch.float64))
        self.inner = nn.Linear(16, 16).double()

    def forward(self, x):
        return self.inner(torch.tanh(x * self.gain))


def flat(model):
    return amnesiac.ParamLayout.of(model).vector(model)


def user_groups():
    """Four users' groups over the even sample ids of :func:`tiny_dataset`."""
    return amnesiac.groups_by_user(torch.arange(0, 40, 2), 4, seed=1)


def fast_only(values, fast):
    """Parametrize values with every value not in ``fast`` marked slow: a sweep whose every case runs in the full
    suite, and the cases in ``fast`` in the fast loop too (``pytest -m "not slow"``)."""
    return [v if v in fast else pytest.param(v, marks=pytest.mark.slow) for v in values]


# ------------------------------------------------------------------------------------------- optimizers

OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1),
    "sgd-wd": lambda p: torch.optim.SGD(p, lr=0.1, weight_decay=0.05),
    "momentum": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
    "momentum-dampening-wd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.3, weight_decay=0.05),
    "nesterov-wd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.05),
    "adam": lambda p: torch.optim.Adam(p, lr=0.01),
    "adam-coupled-wd": lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.05),
    "adam-amsgrad": lambda p: torch.optim.Adam(p, lr=0.01, amsgrad=True),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=0.01),
    "rmsprop-momentum-centered-wd": lambda p: torch.optim.RMSprop(p, lr=0.01, momentum=0.9, centered=True,
                                                                  weight_decay=0.05),
    "adagrad-lr-decay-wd": lambda p: torch.optim.Adagrad(p, lr=0.1, lr_decay=0.01, weight_decay=0.05,
                                                         initial_accumulator_value=0.1),
}
CONSERVATION_OPTIMIZERS = tuple(OPTIMIZERS)  # every update rule with its options: the conservation tests' cases
OPTIMIZERS.update({  # plain variants of the lazy-moment rules (the lazy-moment and checkpoint tests)
    "nesterov": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
    "momentum-dampening": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.3),
    "rmsprop-momentum": lambda p: torch.optim.RMSprop(p, lr=0.01, momentum=0.9),
})

# ------------------------------------------------------------------------------------- loops and oracles


def attributed_loop(model, opt, loader, *, epochs=None, start=0, stop=None, scheduler=None):
    """The loop a reader writes around AttributedOptimizer (cross-entropy, a scheduler stepped per batch): global
    steps ``start..stop-1`` (default: ``epochs`` whole epochs) of a seeded loader, whose epoch e's order depends
    only on e, so a loop interrupted at any step and resumed replays the same batches."""
    per_epoch = len(loader)
    stop = epochs * per_epoch if stop is None else stop
    step, skip = start, start % per_epoch
    loader.epoch = start // per_epoch
    while step < stop:
        for i, (x, y, ids) in enumerate(loader):
            if i < skip:
                continue
            if step >= stop:
                return
            opt.zero_grad()
            opt.set_batch(ids)
            F.cross_entropy(model(x), y).backward()
            opt.step()
            if scheduler is not None:
                scheduler.step()
            step += 1
        skip = 0


def loop_oracle(model, x, y, rows):
    """The obviously-correct way: one backward per sample."""
    layout = amnesiac.ParamLayout.of(model)
    out = []
    for i in rows.tolist():
        model.zero_grad()
        F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        out.append(torch.cat([q.grad.reshape(-1) for q in layout.params(model)]))
    return torch.stack(out)


ORACLE_OPTIMIZERS = {
    "momentum": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
    "momentum-dampening-coupled-wd": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, dampening=0.3,
                                                               weight_decay=0.05),
    "nesterov": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True),
    "nesterov-coupled-wd": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.05),
    "adam": lambda p: torch.optim.Adam(p, lr=0.01),
    "adam-coupled-wd": lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.05),
    "adamw-decoupled-wd": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1),
    "amsgrad-coupled-wd": lambda p: torch.optim.Adam(p, lr=0.01, amsgrad=True, weight_decay=0.05),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=0.01),
    "rmsprop-momentum-wd": lambda p: torch.optim.RMSprop(p, lr=0.01, momentum=0.9, weight_decay=0.05),
    "rmsprop-centered-momentum": lambda p: torch.optim.RMSprop(p, lr=0.01, momentum=0.5, centered=True),
    "adagrad": lambda p: torch.optim.Adagrad(p, lr=0.1),
    "adagrad-lr-decay-wd": lambda p: torch.optim.Adagrad(p, lr=0.1, lr_decay=0.05, weight_decay=0.05,
                                                         initial_accumulator_value=0.1),
}


def _state(opt, params, key):
    return torch.cat([opt.state[q][key].reshape(-1) for q in params]).double()


def oracle_step(opt, params, step, delta, buf, share):
    """One step of every group's delta, from the optimizers' published equations (their state read as given)."""
    hp = opt.param_groups[0]
    wd, lr = hp["weight_decay"], hp["lr"]
    if isinstance(opt, torch.optim.Adam):
        b1, b2 = hp["betas"]
        v = _state(opt, params, "max_exp_avg_sq" if hp["amsgrad"] else "exp_avg_sq")
        denom = v.sqrt() / (1 - b2**step) ** 0.5 + hp["eps"]
        for k in delta:
            s = share[k]
            if wd and isinstance(opt, torch.optim.AdamW):
                delta[k] *= 1 - lr * wd
            elif wd:
                s = s + wd * delta[k]
            buf[k] = b1 * buf[k] + (1 - b1) * s
            delta[k] -= lr / (1 - b1**step) * buf[k] / denom
    elif isinstance(opt, torch.optim.RMSprop):
        sq = _state(opt, params, "square_avg")
        if hp["centered"]:
            sq = sq - _state(opt, params, "grad_avg") ** 2
        avg = sq.sqrt() + hp["eps"]
        for k in delta:
            s = share[k] + wd * delta[k]
            if hp["momentum"] > 0:
                buf[k] = hp["momentum"] * buf[k] + s / avg
                delta[k] -= lr * buf[k]
            else:
                delta[k] -= lr * s / avg
    elif isinstance(opt, torch.optim.Adagrad):
        std = _state(opt, params, "sum").sqrt() + hp["eps"]
        clr = lr / (1 + (step - 1) * hp["lr_decay"])
        for k in delta:
            delta[k] -= clr * (share[k] + wd * delta[k]) / std
    else:
        mu, damp, nesterov = hp["momentum"], hp["dampening"], hp["nesterov"]
        for k in delta:
            s = share[k] + wd * delta[k]
            buf[k] = s.clone() if step == 1 else mu * buf[k] + (1 - damp) * s
            u = s + mu * buf[k] if nesterov else buf[k]
            delta[k] -= lr * (u if mu else s)


# ------------------------------------------------------------------------------------------ unlearning


def unlearning_setup():
    """A tiny model trained 2 epochs with five logs of class 1 (delta, gradient with a mask, misindexed, batch,
    layer), and the request every unlearning method can serve (data, recipe, model builder)."""
    ds = tiny_dataset(n=48)
    model = tiny_model()
    forget_ids = ds.ids[ds.y == 1]
    groups = {"class1": forget_ids}
    logs = {
        "delta": amnesiac.DeltaLog(model, groups),
        "gradient": amnesiac.DeltaLog(model, groups, attribution="gradient", p=0.5),
        "misindexed": amnesiac.DeltaLog(model, groups, attribution="gradient", indexing="seed-misindexed"),
        "batch": amnesiac.BatchLog(model, groups),
        "layer": amnesiac.BatchLog(model, groups, p=0.1),
    }
    recipe = amnesiac.Recipe(optimizer="adam", lr=0.01, batch_size=8, epochs=2)
    amnesiac.train(model, ds.loader(8), recipe.make_optimizer(model.parameters()), epochs=2,
                   delta_log=list(logs.values()), progress=False)
    request = amnesiac.Request(
        forget_groups=("class1",),
        forget=ds.subset(forget_ids),
        retain=ds.without(forget_ids),
        recipe=recipe,
        model_fn=lambda: tiny_model(seed=5),
        num_classes=4,
        seed=0,
        device="cpu",
    )
    return model, logs, request


# ------------------------------------------------------------------------------------- stand-in data files


def write_fake_mnist(root, n_train=30, n_test=10):
    """MNIST's raw idx files (plain and gzipped) under ``root/MNIST/raw``: random pixels, labels ``i % 10``."""
    import gzip
    import struct

    import numpy as np

    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        for kind, header, arr in (
            ("images-idx3-ubyte", struct.pack(">IIII", 2051, n, 28, 28), images),
            ("labels-idx1-ubyte", struct.pack(">II", 2049, n), labels),
        ):
            payload = header + arr.tobytes()
            (raw / f"{prefix}-{kind}").write_bytes(payload)
            with gzip.open(raw / f"{prefix}-{kind}.gz", "wb") as f:
                f.write(payload)


def fake_mnist(split):
    """A small MNIST-shaped stand-in for ``load_dataset("mnist", split)``: 256 (train) or 128 (test) random images."""
    n = 256 if split == "train" else 128
    gen = torch.Generator().manual_seed(0 if split == "train" else 1)
    x = torch.randn(n, 1, 28, 28, generator=gen)
    y = torch.arange(n) % 10
    return amnesiac.ArrayDataset(x, y, torch.arange(n), f"mnist-{split}")


def assert_a_new_model_and_the_input_untouched(method, model, new, before):
    """``unlearn``'s contract: ``new`` is another model, finite and changed; ``model`` still holds ``before``."""
    assert new is not model
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{method} changed the input model's {k}"
    assert not torch.equal(flat(new), flat(model))
    assert torch.isfinite(flat(new)).all()


def tiny_study(monkeypatch, tmp_path, *, optimizer="sgd", graves_optimizer=None):
    """The shared setting at its smallest, for the study tests: stand-in MNIST (600 training, 200 test images)
    under ``tmp_path/data`` (``$AMNESIAC_DATA``), one seed, random sets of 1 and 10, class 3, two requests of 10,
    the Graves setting keeping 5 threes, alphas 0.3 and 1, a validation split of 60, one epoch; every study's
    ``fidelity.get_study`` returns it. Returns the study."""
    from amnesiac_paper import fidelity

    write_fake_mnist(tmp_path / "data", n_train=600, n_test=200)
    monkeypatch.setenv("AMNESIAC_DATA", str(tmp_path / "data"))
    small = fidelity.FidelityStudy(
        name=fidelity.STUDY_NAME, profile="smoke", optimizers=(optimizer,), seeds=(0,), sizes=(1, 10),
        forget_class=3, request_size=10, n_requests=2, graves_keep=5,
        graves_optimizers=(graves_optimizer or optimizer,), alphas=(0.3, 1.0), val_size=60, train_subset=None,
        test_subset=None, eval_retain=100, epochs=1)
    monkeypatch.setattr(fidelity, "get_study", lambda profile="smoke", seeds=None, optimizers=None: small)
    return small


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

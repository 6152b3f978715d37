"""Train SimpleModel on MNIST for one epoch with a per-class delta log, then forget class 3.

Run:  AMNESIAC_DATA=/path/to/data python examples/quickstart.py
"""

import time

import torch

import amnesiac

torch.manual_seed(0)
train_set = amnesiac.load_dataset("mnist", "train")
test_set = amnesiac.load_dataset("mnist", "test")
forgotten, rest = amnesiac.test_views(test_set, 3)


def fit(make_log=None):
    """Train one epoch from the same seed, with or without a log; returns (model, log, seconds)."""
    torch.manual_seed(0)
    model = amnesiac.SimpleModel(1, 10)
    log = make_log(model) if make_log else None
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    amnesiac.train(model, train_set.loader(64, seed=0), opt, epochs=1, delta_log=log, device="cpu")
    return model, log, time.perf_counter() - start


_, _, plain_s = fit()
groups = amnesiac.groups_by_class(train_set)  # one group per class: any class can be forgotten later
model, log, logged_s = fit(lambda m: amnesiac.DeltaLog(m, groups))
log.finalize()

request = amnesiac.Request(forget_groups=("class3",))
print(f"training: {plain_s:.1f} s plain, {logged_s:.1f} s with the log ({logged_s / plain_s:.2f}x); "
      f"log holds {log.nbytes / 2**20:.1f} MiB for {len(groups)} groups")
for alpha in (1.0, 0.1, 0.05):
    new = amnesiac.unlearn("amnesiac", model, request, log=log, alpha=alpha)
    print(f"alpha={alpha:4}: class 3 {amnesiac.accuracy(model, forgotten):.3f} -> "
          f"{amnesiac.accuracy(new, forgotten):.3f}, rest {amnesiac.accuracy(model, rest):.3f} -> "
          f"{amnesiac.accuracy(new, rest):.3f}")

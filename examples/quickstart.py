"""The README's quick start with timings: train SimpleModel on MNIST for one epoch with a per-class delta log,
then forget class 3. The same seeds and steps as the README's code, so the same table (a test checks both).

Run:  AMNESIAC_DATA=/path/to/data python examples/quickstart.py
"""

import time

import amnesiac_paper
import torch

import amnesiac

train_set = amnesiac_paper.load_dataset("mnist", "train")
forgotten, rest = amnesiac.test_views(amnesiac_paper.load_dataset("mnist", "test"), 3)


def fit(make_log=None):
    """Train one epoch from the same seed, with or without a log; returns (model, log, seconds)."""
    torch.manual_seed(0)
    model = amnesiac_paper.SimpleModel(1, 10)
    log = make_log(model) if make_log else None
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    amnesiac.train(model, train_set.loader(64, seed=0), opt, epochs=1, delta_log=log)
    return model, log, time.perf_counter() - start


def row(name, m):
    print(f"{name:<14}{amnesiac.accuracy(m, forgotten):>8.3f}{amnesiac.accuracy(m, rest):>7.3f}")


_, _, plain_s = fit()
groups = amnesiac.groups_by_class(train_set)  # one group per class: any class can be forgotten later
model, log, logged_s = fit(lambda m: amnesiac.DeltaLog(m, groups))
log.finalize()
print(f"training: {plain_s:.1f} s plain, {logged_s:.1f} s with the log ({logged_s / plain_s:.2f}x); "
      f"log holds {log.nbytes / 2**20:.1f} MiB for {len(groups)} groups")

request = amnesiac.Request(forget_groups=("class3",))
print(f"{'':<14}{'test 3s':>8}{'rest':>7}")
row("original", model)
seconds = []
for alpha in (0.01, 1.0):  # alpha scales the subtracted delta: 0.01 for this setting, 1 to show why not all
    start = time.perf_counter()
    new = amnesiac.unlearn("amnesiac", model, request, log=log, alpha=alpha)
    seconds.append(time.perf_counter() - start)
    row(f"alpha = {alpha:g}", new)
print(f"forgetting: {1000 * max(seconds):.0f} ms per alpha (one subtraction, no training)")

"""Counterfactual fidelity: each group's delta against an independent float64 loop oracle, the replays that
serve as references, the atoms of overlapping forget sets, the measures and the study runner."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from amnesiac_paper import fidelity as fi
from amnesiac_paper import setting as st
from helpers import (
    ORACLE_OPTIMIZERS,
    attributed_loop,
    fast_only,
    flat,
    oracle_step,
    tiny_dataset,
    tiny_model,
    tiny_study,
)

import amnesiac

# ------------------------------------------------------------------------------ the loop oracle, from equations

SCHEDULED = ("momentum", "adam", "rmsprop-momentum-wd", "adagrad")  # also checked under a learning-rate schedule


def _schedule(opt):
    return torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)


def oracle_deltas(opt_name, groups, ds, epochs=2, batch=8, scheduled=False):
    """Each group's delta by a Python loop over single samples, one optimizer buffer per group, written from
    the optimizers' published update equations; denominators are read from the real optimizer's state. With
    ``scheduled`` the learning rate halves every 2 steps (StepLR), read from the optimizer at each step."""
    model = tiny_model()
    params = list(model.parameters())
    opt = ORACLE_OPTIMIZERS[opt_name](params)
    sched = _schedule(opt) if scheduled else None
    owner = {int(i): k for k, ids in groups.items() for i in torch.as_tensor(ids).tolist()}
    P = sum(q.numel() for q in params)
    delta = {k: torch.zeros(P, dtype=torch.float64) for k in groups}
    buf = {k: torch.zeros(P, dtype=torch.float64) for k in groups}
    step = 0
    loader = ds.loader(batch, seed=1)  # one loader: each pass over it is a new epoch's order
    for _ in range(epochs):
        for x, y, ids in loader:
            step += 1
            B = len(y)
            share = {k: torch.zeros(P, dtype=torch.float64) for k in groups}
            for i in range(B):  # one backward per sample
                k = owner.get(int(ids[i]))
                if k is None:
                    continue
                loss_i = F.cross_entropy(model(x[i : i + 1]), y[i : i + 1])
                g = torch.autograd.grad(loss_i, params)
                share[k] += torch.cat([t.reshape(-1) for t in g]) / B
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
            oracle_step(opt, params, step, delta, buf, share)
            if sched is not None:
                sched.step()
    return delta


def test_every_registered_update_rule_has_an_oracle_case():
    covered = {type(make([torch.zeros(1, requires_grad=True)])) for make in ORACLE_OPTIMIZERS.values()}
    assert set(amnesiac.rules.UPDATE_RULES) <= covered, set(amnesiac.rules.UPDATE_RULES) - covered


# the fast loop checks two cases (an eager and a lazy first moment, with weight decay); the rest are slow
FAST_ORACLE = ("momentum-dampening-coupled-wd", "adam-coupled-wd")


@pytest.mark.parametrize("opt_name", fast_only(ORACLE_OPTIMIZERS, FAST_ORACLE))
@pytest.mark.parametrize("kind", fast_only(["samples", "users"], ["users"]))
def test_each_groups_delta_matches_the_loop_oracle(opt_name, kind):
    _compare_with_oracle(opt_name, kind, scheduled=False)


@pytest.mark.parametrize("opt_name", fast_only(SCHEDULED, ["adam"]))
def test_each_groups_delta_matches_the_loop_oracle_under_a_learning_rate_schedule(opt_name):
    """A hand-written loop with AttributedOptimizer and StepLR (the scheduler drives the wrapper)."""
    _compare_with_oracle(opt_name, "users", scheduled=True)


def _compare_with_oracle(opt_name, kind, scheduled):
    ds = tiny_dataset(n=24)
    groups = (amnesiac.groups_per_sample([0, 5, 9, 17]) if kind == "samples"
              else amnesiac.groups_by_user(torch.arange(0, 24, 2), 3, seed=2))
    model = tiny_model()
    log = amnesiac.DeltaLog(model, groups)
    opt = ORACLE_OPTIMIZERS[opt_name](model.parameters())
    if scheduled:
        wrapped = amnesiac.AttributedOptimizer(opt, model, log)
        attributed_loop(model, wrapped, ds.loader(8, seed=1), epochs=2, scheduler=_schedule(wrapped))
        wrapped.close()
        assert opt.param_groups[0]["lr"] < ORACLE_OPTIMIZERS[opt_name](tiny_model().parameters()).defaults["lr"]
    else:
        amnesiac.train(model, ds.loader(8, seed=1), opt, epochs=2, delta_log=log, progress=False)
    want = oracle_deltas(opt_name, groups, ds, scheduled=scheduled)
    bad = []
    for k in groups:
        got = log.delta_vector([k])
        scale = want[k].abs().max().item()
        assert scale > 1e-6  # the group owns something: the check is not satisfied by zeros
        err = (got - want[k]).abs().max().item()
        if err > 1e-10 * max(scale, 1.0):
            bad.append((k, err, scale))
    assert not bad, f"groups whose delta differs from the oracle: {bad}"


# ------------------------------------------------------------------------------------------------- replays


def _train(ds, opt_fn, epochs=2, seed=0, log=None, **kw):
    model = tiny_model(seed)
    opt = opt_fn(model.parameters())
    amnesiac.train(model, ds.loader(8, seed=3), opt, epochs=epochs, progress=False, delta_log=log, **kw)
    return model, opt


@pytest.mark.parametrize("opt_name", fast_only(["momentum", "adam"], ["adam"]))
def test_replays_with_an_empty_forget_set_equal_plain_training_bit_for_bit(opt_name):
    ds = tiny_dataset()
    plain, _ = _train(ds, ORACLE_OPTIMIZERS[opt_name])
    zero, _ = _train(ds, ORACLE_OPTIMIZERS[opt_name], zero_weight_ids=[])
    drop, _ = _train(ds, ORACLE_OPTIMIZERS[opt_name], drop_ids=[])
    model = tiny_model()
    logged, _ = _train(ds, ORACLE_OPTIMIZERS[opt_name], log=amnesiac.DeltaLog(model, {"a": [1, 2, 3]}))
    assert torch.equal(flat(plain), flat(zero))
    assert torch.equal(flat(plain), flat(drop))
    assert torch.equal(flat(plain), flat(logged))  # attaching a delta log does not change training


def test_one_plain_sgd_step_minus_the_exact_delta_is_the_zero_weighted_replay():
    ds = tiny_dataset(n=8)
    forget = [1, 4, 6]
    sgd = lambda p: torch.optim.SGD(p, lr=0.1)  # noqa: E731
    model = tiny_model()
    log = amnesiac.DeltaLog(model, {"f": forget})
    amnesiac.train(model, ds.loader(8, seed=3), sgd(model.parameters()), epochs=1, delta_log=log, progress=False)
    zero, _ = _train(ds, sgd, epochs=1, zero_weight_ids=forget)
    got = flat(model) - log.delta_vector(["f"])
    assert (got - flat(zero)).abs().max().item() < 1e-14
    assert (flat(model) - flat(zero)).abs().max().item() > 1e-4  # forgetting moved something


def test_zero_weighted_and_dropped_replays_differ_by_the_batch_mean_only():
    """With plain SGD and one step, the dropped replay's step is the zero-weighted one times B / (B - |F|)."""
    ds = tiny_dataset(n=8)
    forget = [0, 3]
    sgd = lambda p: torch.optim.SGD(p, lr=0.1)  # noqa: E731
    theta0 = flat(tiny_model())
    zero, _ = _train(ds, sgd, epochs=1, zero_weight_ids=forget)
    drop, _ = _train(ds, sgd, epochs=1, drop_ids=forget)
    want = theta0 + (flat(zero) - theta0) * 8 / 6
    assert (flat(drop) - want).abs().max().item() < 1e-14


def test_dropped_replay_skips_a_batch_left_empty_and_keeps_the_order():
    ds = tiny_dataset(n=16)
    first_batch = next(iter(ds.loader(8, seed=3)))[2].tolist()
    _, opt = _train(ds, ORACLE_OPTIMIZERS["adam"], epochs=1, drop_ids=first_batch)
    state = opt.state[next(iter(opt.state))]
    assert int(state["step"]) == 1  # two batches, the first vanished: one step
    # the same as training on the second batch alone, from the same initialisation
    model = tiny_model()
    opt2 = ORACLE_OPTIMIZERS["adam"](model.parameters())
    x, y, _ = list(ds.loader(8, seed=3))[1]
    opt2.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt2.step()
    replay, _ = _train(ds, ORACLE_OPTIMIZERS["adam"], epochs=1, drop_ids=first_batch)
    assert torch.equal(flat(replay), flat(model))


def test_replay_arguments_are_checked():
    ds = tiny_dataset(n=8)
    with pytest.raises(ValueError, match="not both"):
        _train(ds, ORACLE_OPTIMIZERS["adam"], zero_weight_ids=[1], drop_ids=[2])
    with pytest.raises(ValueError, match="non-negative"):
        _train(ds, ORACLE_OPTIMIZERS["adam"], zero_weight_ids=[-1])


# ---------------------------------------------------------------------------------------- atoms and measures


def test_atoms_partition_overlapping_sets_and_set_deltas_are_exact_sums():
    sets = {"a": torch.tensor([0, 1, 2, 3]), "b": torch.tensor([2, 3, 4]), "c": torch.tensor([3, 9])}
    cells, members = st.atoms(sets)
    covered = torch.cat(list(cells.values()))
    assert sorted(covered.tolist()) == [0, 1, 2, 3, 4, 9]  # every sample once
    for name, ids in sets.items():
        assert sorted(torch.cat([cells[a] for a in members[name]]).tolist()) == sorted(ids.tolist())
    # with one delta-log group per atom, a set's delta equals that of a log whose one group is the set
    ds = tiny_dataset()
    opt = ORACLE_OPTIMIZERS["adam"]
    m1, m2 = tiny_model(), tiny_model()
    log_atoms, log_set = amnesiac.DeltaLog(m1, cells), amnesiac.DeltaLog(m2, {"b": sets["b"]})
    amnesiac.train(m1, ds.loader(8, seed=1), opt(m1.parameters()), epochs=2, delta_log=log_atoms, progress=False)
    amnesiac.train(m2, ds.loader(8, seed=1), opt(m2.parameters()), epochs=2, delta_log=log_set, progress=False)
    got = log_atoms.delta_vector(members["b"])
    assert (got - log_set.delta_vector(["b"])).abs().max().item() < 1e-12
    assert got.abs().max().item() > 1e-6


def test_atoms_reject_nothing():
    with pytest.raises(ValueError, match="no sets"):
        st.atoms({})


def test_measures_on_hand_checkable_values():
    ref, orig = torch.zeros(3, dtype=torch.float64), torch.tensor([3.0, 4.0, 0.0], dtype=torch.float64)
    assert st.recovered_fraction(orig, ref, orig) == 0.0
    assert st.recovered_fraction(ref, ref, orig) == 1.0
    assert st.recovered_fraction(2 * orig, ref, orig) == -1.0
    p = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    q = torch.tensor([[0.9, 0.1]], dtype=torch.float64)
    d = st.divergences(p, q)
    want_kl = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert abs(d["kl"] - want_kl) < 1e-12
    assert 0 < d["js"] < d["kl"] and d["agreement"] == 1.0


def test_loss_parity_rule():
    assert st.loss_parity_alpha([1.0, 0.1, 0.3], [3.0, 0.1, 0.9], [1.0, 0.5, 0.8]) == {"alpha": 0.3, "reached": True}
    assert st.loss_parity_alpha([0.1, 1.0], [0.1, 0.6], [0.5, 0.6]) == {"alpha": 1.0, "reached": True}  # parity at 1


def test_the_loss_parity_rule_falls_back_to_no_change_never_to_the_largest_alpha():
    # parity never reached, whatever the order of the grid: alpha = 0 (the original model), not the largest alpha
    assert st.loss_parity_alpha([0.1, 1.0], [0.1, 0.2], [0.5, 0.6]) == {"alpha": 0.0, "reached": False}
    assert st.loss_parity_alpha([1.0, 0.3, 0.1], [0.5, 0.2, 0.1], [0.6, 0.3, 0.2]) == {"alpha": 0.0, "reached": False}


def _measure(v: float) -> dict:
    """An evaluator measure whose every number derives from ``v`` (distinct values per model)."""
    ref = {"dist": v, "kl": v / 10, "js": v / 20, "agreement": 1 - v / 100, "recovered": -v}
    return {"acc_forget": 0.5 + v / 100, "acc_retain": 0.9, "acc_test": 0.9 + v / 1000, "loss_forget": 0.1,
            "loss_val_matched": 0.5, "drop": ref, "zero": dict(ref)}


def _record(forget_losses: list[float], val_losses: list[float], alphas=(0.1, 1.0), stored_rule=None) -> dict:
    """A minimal forget-set record (the original measured as 1, grid rows as 2, 3, ...; controls as 20 + ...)."""
    rows = {m: [] for m in ("amnesiac", "control_group", "random_direction")}
    for k, (a, f, v) in enumerate(zip(alphas, forget_losses, val_losses)):
        rows["amnesiac"].append(dict(_measure(2 + k), alpha=a, loss_forget=f, loss_val_matched=v))
        rows["control_group"].append(dict(_measure(20 + k), alpha=a))
        rows["random_direction"].append(dict(_measure(30 + k), alpha=a))
    return {"set": "random-1", "size": 1, "kind": "random", "family": "random", "alphas": list(alphas),
            "delta_norm": 0.5, "control_norm": 0.5, "original": _measure(1.0),
            "references": {"zero": {"drop": {"dist": 0.3}}},
            "rule": stored_rule or st.loss_parity_alpha(alphas, forget_losses, val_losses), "methods": rows}


def test_the_summary_reads_the_original_model_where_the_rule_keeps_it():
    floor = {"floor": {"drop": {"dist": 4.0, "kl": 0.4}}}
    # never at parity; the stored rule is the earlier one's (the largest alpha): the summary recomputes the rule
    rec = _record([0.1, 0.2], [0.5, 0.6], stored_rule={"alpha": 1.0, "reached": False})
    assert fi.record_rule(rec) == {"alpha": 0.0, "reached": False}
    s = fi.set_summary(rec, floor)
    assert (s["rule_alpha"], s["rule_reached"]) == (0.0, False)
    orig = rec["original"]
    assert s["rule_recovered"] == orig["drop"]["recovered"] and s["rule_dist"] == orig["drop"]["dist"] == 1.0
    assert s["rule_kl"] == s["original_kl"] == orig["drop"]["kl"] and s["rule_acc_test"] == orig["acc_test"]
    assert s["rule_floor_ratio"] == 1.0 / 4.0
    assert s["rule_control_recovered"] == s["rule_random_recovered"] == orig["drop"]["recovered"]
    assert s["a1_dist"] == 3.0  # alpha = 1 is still the grid's row
    assert fi.row_at(rec, "control_group", 0.0)["drop"] == orig["drop"]
    with pytest.raises(KeyError, match="not on the grid"):
        fi.row_at(rec, "amnesiac", 0.5)
    # parity reached at alpha = 1: the grid's row, as before
    reached = fi.set_summary(_record([0.1, 0.7], [0.5, 0.6]), floor)
    assert (reached["rule_alpha"], reached["rule_reached"], reached["rule_dist"]) == (1.0, True, 3.0)


def test_mean_ci_uses_ddof_1_and_the_t_quantile():
    m, half, n = fi.mean_ci([1.0, 3.0])
    # std (ddof=1) = sqrt(2), so the half-width is t(0.975, 1 dof) * sqrt(2) / sqrt(2) = 12.7062...
    assert (m, n) == (2.0, 2) and abs(half - 12.706204736) < 1e-6
    assert fi.mean_ci([float("nan")])[2] == 0


def test_bad_study_parameters_name_the_valid_values():
    with pytest.raises(ValueError, match="valid profiles"):
        fi.get_study("huge")
    with pytest.raises(ValueError, match="adam"):
        fi.get_study("smoke", optimizers=["lbfgs"])
    with pytest.raises(ValueError, match="non-negative"):
        fi.get_study("smoke", seeds=[-1])
    assert fi.get_study("full", optimizers=["sgd"]).graves_optimizers == ()  # Graves runs only with its optimizers
    only = fi.get_study("full", optimizers=["adam"], seeds=[2])
    assert (only.optimizers, only.graves_optimizers, only.seeds) == (("adam",), ("adam",), (2,))


# --------------------------------------------------------------------------------------------- the runner


@pytest.mark.slow  # the study on stand-in MNIST, interrupted and resumed
def test_study_runs_caches_and_resumes(tmp_path, monkeypatch):
    study = tiny_study(monkeypatch, tmp_path)
    root = tmp_path / "results"
    res = fi.run_study("smoke", results_root=root, progress=False)
    rec = res.records[("full", "sgd", 0)]
    assert rec["determinism"]["identical"] is True
    assert {"set-random-1", "set-random-10", "set-requests-2", "set-class-3", "floor-random", "floor-class"} <= set(rec)
    one = rec["set-random-10"]
    assert one["size"] == 10 and len(one["methods"]["amnesiac"]) == len(study.alphas)
    assert one["original"]["drop"]["recovered"] == 0.0  # the original is the baseline of the fraction
    assert one["references"]["drop"]["drop"]["dist"] == 0.0
    assert one["finetune"]["epochs"] == 1 and 0 <= one["finetune"]["acc_test"] <= 1  # the repair-only control
    rows = fi.summary_rows(res, "full", "sgd")
    assert {r["set"] for r in rows} >= {"random-1", "class-3"}
    assert "graves-class-3" in res.records[("graves", "sgd", 0)]["set-graves-class-3"]["set"]
    assert "class-3" in fi.format_summary(res)
    # a second run loads every piece: nothing trains
    monkeypatch.setattr(st, "train", lambda *a, **k: (_ for _ in ()).throw(AssertionError("retrained")))
    again = fi.run_study("smoke", results_root=root, progress=False)
    assert again.records[("full", "sgd", 0)]["set-random-10"] == json.loads(json.dumps(one))
    # a lost piece is recomputed from the cached weights, still without training
    piece = study.folder(root) / "full" / "sgd" / "seed0" / "set-random-10.json"
    piece.unlink()
    fi.run_study("smoke", results_root=root, progress=False)
    assert json.loads(piece.read_text())["methods"] == one["methods"]
    loaded = fi.load_study("smoke", results_root=root)
    assert loaded.seeds_of("full", "sgd") == [0]


def test_committed_fidelity_pieces_match_the_study_and_a_clean_revision():
    """Committed pieces must belong to the current study definition (hash of config + semantics version) and
    come from committed code (provenance without '+dirty')."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "results" / fi.STUDY_NAME
    for folder in sorted(p for p in root.glob("*") if p.is_dir()):
        profile, _, digest = folder.name.partition("-")
        if profile == "smoke":
            continue
        study = fi.get_study(profile)
        assert digest == study.hash, (f"{folder} was computed for an older study (hash {digest}, now {study.hash}); "
                                      f"rerun: python -m amnesiac_paper fidelity --profile {profile}")
        pieces = list(folder.glob("*/*/seed*/*.json"))
        assert pieces, f"{folder} holds no piece"
        revs = {str(p.relative_to(folder)): json.loads(p.read_text())["provenance"]["git"] for p in pieces}
        dirty = [name for name, rev in revs.items() if rev.endswith("+dirty")]
        assert not dirty, f"pieces computed from uncommitted code: {dirty[:5]}"
        # every piece of one (setting, optimizer, seed) comes from the same original model
        for combo in sorted({p.parent for p in pieces}):
            recs = {p.stem: json.loads(p.read_text()) for p in combo.glob("set-*.json")}
            accs = {r["original"]["acc_test"] for r in recs.values()}
            prints = {r["original_fingerprint"] for r in recs.values() if "original_fingerprint" in r}
            prints |= {json.loads(p.read_text())["original_fingerprint"] for p in combo.glob("floor-*.json")
                       if "original_fingerprint" in json.loads(p.read_text())}
            assert len(accs) <= 1 and len(prints) <= 1, (
                f"{combo.relative_to(folder)} mixes pieces of different original models (test accuracy {accs}, "
                f"fingerprints {prints}): recompute the combo in one session")


def test_fingerprint_and_expected_pieces():
    a = torch.arange(5, dtype=torch.float32)
    assert st.fingerprint(a) == st.fingerprint(a.clone()) != st.fingerprint(a + 1e-7)
    study = fi.get_study("full")
    assert fi.expected_pieces(study, "graves") == ["set-graves-class-3", "floor-graves"]
    assert fi.expected_pieces(study, "full")[:2] == ["set-random-1", "set-random-10"]
    assert {"set-requests-3", "set-class-3", "floor-class"} <= set(fi.expected_pieces(study, "full"))


def _piece(set_name, loss, *, fp=None, run="2026-12-01T08:59:24Z", cpu=None, cap="AVX2"):
    rec = {"set": set_name, "original": {"loss_forget": loss, "loss_val_matched": 0.25, "drop": {"dist": 2.0}},
           "provenance": {"git": "abc1234", "date": run}}
    if fp:
        rec["original_fingerprint"] = fp
    if cpu:
        rec["provenance"].update(cpu=cpu, cpu_capability=cap)
    return rec


def test_an_original_is_recorded_attested_through_its_run_or_unverified():
    from amnesiac_paper import originals as og

    witness = {("sgd", 1, "class-3"): {("7012f4c29d3ec527", (0.5, 0.25, 2.0))}}
    run = {"provenance": {"git": "abc1234", "date": "2026-12-01T08:59:24Z"}}
    fid = {("full", "sgd", 1): {
        "set-class-3": _piece("class-3", 0.5),                         # equal to the witness bit for bit
        "set-random-1": _piece("random-1", 0.7),                       # no witness, same run: attested through it
        "floor-class": dict(run),
        "set-requests-2": _piece("requests-2", 0.7, run="2026-12-02T00:00:00Z"),  # another run: nothing known
        "determinism": {"provenance": {}},                              # no stamp: a run of its own
        "original": {"provenance": {}}}}                               # measures no model: not covered
    res = og.fidelity_originals(fid, witness)[("full", "sgd", 1)]
    assert res["how"] == {"set-class-3": "attested", "set-random-1": "attested", "floor-class": "attested",
                          "set-requests-2": "unverified", "determinism": "unverified"}
    assert res["fingerprints"]["floor-class"] == "7012f4c29d3ec527" and res["fingerprints"]["set-requests-2"] is None
    assert "class-3" in res["witness"]["set-random-1"]
    # one bit off in a measure is another original: nothing attested
    off = og.fidelity_originals({("full", "sgd", 1): {"set-class-3": _piece("class-3", 0.5 + 2 ** -52)}}, witness)
    assert off[("full", "sgd", 1)]["how"] == {"set-class-3": "unverified"}
    # any of several witnesses of a set may match
    two = {("sgd", 1, "class-3"): {("aaaa", (0.1, 0.1, 0.1)), ("7012f4c29d3ec527", (0.5, 0.25, 2.0))}}
    assert og.fidelity_originals({("full", "sgd", 1): {"set-class-3": _piece("class-3", 0.5)}}, two)[
        ("full", "sgd", 1)]["fingerprints"] == {"set-class-3": "7012f4c29d3ec527"}
    # a recorded fingerprint stands; two originals in one run cannot come from a correct run
    rec = og.fidelity_originals({("full", "sgd", 1): {"set-random-1": _piece("random-1", 0.7, fp="aaaa"),
                                                      "floor-class": dict(run)}}, witness)
    assert rec[("full", "sgd", 1)]["how"] == {"set-random-1": "recorded", "floor-class": "attested"}
    with pytest.raises(ValueError, match="2 different original models"):
        og.fidelity_originals({("full", "sgd", 1): {"set-random-1": _piece("random-1", 0.7, fp="aaaa"),
                                                    "set-class-3": _piece("class-3", 0.5)}}, witness)
    # the same stamp on another CPU is another run
    other = _piece("random-1", 0.7, cpu="AMD EPYC")
    res = og.fidelity_originals({("full", "sgd", 1): {"set-class-3": _piece("class-3", 0.5),
                                                      "set-random-1": other}}, witness)[("full", "sgd", 1)]
    assert res["how"]["set-random-1"] == "unverified"


def test_the_originals_sentence_says_which_seeds_share_one_and_why_the_others_do_not():
    from amnesiac_paper import originals as og
    from amnesiac_paper.book import fidelity as book

    intel, amd = "Intel(R) Xeon(R) Processor", "AMD EPYC"

    def comp(fp):
        return {"class-3/amnesiac": _piece("class-3", 0.5, fp=fp, cpu=intel, cap="AVX512")}

    def prop(fp):
        return {"original": {"original_fingerprint": fp, "provenance": {"git": "b", "date": "d", "cpu": intel,
                                                                        "cpu_capability": "AVX512"}}}

    fid = {("full", "adam", 0): {"set-class-3": _piece("class-3", 0.9, fp="f0", cpu=amd)},
           ("full", "adam", 1): {"set-class-3": _piece("class-3", 0.5, cpu=intel)}}  # attested by the comparison
    props = {("adam", 0): prop("c0"), ("adam", 1): prop("c1")}
    comps = {("adam", 0): comp("c0"), ("adam", 1): comp("c1")}
    rows = og.shared_originals(fid, props, comps, ["adam"], [0, 1])
    assert [r["shared"] for r in rows] == [False, True] and rows[1]["fidelity"]["status"] == "attested"
    assert rows[0]["fidelity"]["status"] == rows[0]["propagation"]["status"] == "recorded"
    text = book.originals_sentence(rows)
    assert "For 1 of 2" in text and ("adam seed 0: the fidelity study's original was trained on AMD EPYC (AVX2), the "
                                     "propagation study's and the comparison's on Intel Xeon (AVX512)") in text
    assert "another kind of CPU" in text and "not a measurement around the same models" in text
    table = book.originals_table(rows)
    assert "| adam | 0 | `f0`, AMD EPYC (AVX2) |" in table and "**no**" in table and "(attested)" in table
    assert book.originals_sentence([rows[1]]).endswith("bit for bit.")  # every seed shared: no caveat
    # two (optimizer, seed) apart for the same reason are named together, the reason said once
    fid[("full", "adam", 1)] = {"set-class-3": _piece("class-3", 0.9, fp="f1", cpu=amd)}
    both = book.originals_sentence(og.shared_originals(fid, props, comps, ["adam"], [0, 1]))
    assert "For 0 of 2" in both and "not for adam seed 0 and adam seed 1: the fidelity study's original" in both
    assert both.count("was trained on AMD EPYC") == 1
    fid[("full", "adam", 1)] = {"set-class-3": _piece("class-3", 0.5, cpu=intel)}
    # unverified: said so, without blaming the CPU
    fid[("full", "adam", 0)] = {"set-class-3": _piece("class-3", 0.9, cpu=intel)}
    rows = og.shared_originals(fid, props, comps, ["adam"], [0, 1])
    text = book.originals_sentence(rows)
    assert "carry no fingerprint" in text and "another kind of CPU" not in text
    assert "unverified (no fingerprint)" in book.originals_table(rows)
    # a study with nothing yet is said to have nothing, not blamed on a CPU
    fid[("full", "adam", 0)] = {"set-class-3": _piece("class-3", 0.9, fp="f0", cpu=amd)}
    rows = og.shared_originals(fid, props, {("adam", 1): comp("c1")}, ["adam"], [0, 1])
    assert "adam seed 0: the comparison has no piece yet" in book.originals_sentence(rows)
    assert "no piece yet" in book.originals_table(rows)
    # different originals on CPUs not known to differ: said so
    fid[("full", "adam", 0)] = {"set-class-3": _piece("class-3", 0.9, fp="f0", cpu=intel, cap="AVX512")}
    rows = og.shared_originals(fid, props, comps, ["adam"], [0])
    assert "not known to differ" in book.originals_sentence(rows)
    assert og.cpus_differ([amd], [intel]) and not og.cpus_differ(["not recorded"], [intel])

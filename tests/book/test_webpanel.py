"""The browser panel's export: what the page computes, in PyTorch, equals the package's forgetting; the ONNX
graph the page runs is SimpleModel; bad input is refused before anything is written."""

import json

import amnesiac_paper
import numpy as np
import pytest
import torch
from amnesiac_paper import webpanel as wp
from amnesiac_paper.book import interactive

import amnesiac


def _mnist_like(n, seed):
    gen = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (n, 1, 28, 28), generator=gen, dtype=torch.uint8)
    x = (pixels.float() / 255.0 - 0.5) / 0.5  # amnesiac_paper.load_dataset's normalisation
    y = torch.arange(n) % 3
    return amnesiac.ArrayDataset(x, y, torch.arange(100, 100 + n), "mnist-like")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    train, test = _mnist_like(36, 0), _mnist_like(30, 1)
    torch.manual_seed(0)
    model = amnesiac_paper.SimpleModel(num_classes=3, width=6)
    class_log = amnesiac.DeltaLog(model, amnesiac.groups_by_class(train))
    tracked = train.subset(train.ids[:4])
    sample_log = amnesiac.DeltaLog(model, amnesiac.groups_per_sample(tracked.ids))
    amnesiac.train(model, train.loader(6, seed=0), torch.optim.Adam(model.parameters(), lr=0.01), epochs=2,
                   delta_log=[class_log, sample_log], progress=False)
    folder = tmp_path_factory.mktemp("panel")
    meta = wp.export_panel(folder, model, class_log, sample_log, test, tracked, num_classes=3, n_test=30, min_test=30,
                           initial={"forget_class": 1, "selected": [100, 135], "alpha": 0.3})  # 135: not tracked
    return model, class_log, sample_log, test, tracked, folder, meta


def test_the_export_reads_back_exactly(trained):
    model, class_log, sample_log, test, tracked, folder, meta = trained
    data = wp.load_panel(folder)
    assert torch.equal(data.theta, amnesiac.ParamLayout.of(model).vector(model).float())
    assert torch.equal(data.images[:30], test.x) and torch.equal(data.images[30:], tracked.x)
    assert torch.equal(data.labels, torch.cat([test.y, tracked.y]))
    assert torch.equal(data.class_deltas[2], class_log.delta_vector(["class2"]).float())
    assert torch.equal(data.sample_deltas[3], sample_log.delta_vector([int(tracked.ids[3])]).float())
    assert meta["initial"] == {"forget_class": 1, "selected": [100], "alpha": 0.3}
    assert meta["data_bytes"] == sum(f["bytes"] for k, f in meta["files"].items() if k != "model")


def test_the_pages_subtraction_is_the_packages_forgetting(trained):
    model, class_log, sample_log, test, tracked, folder, _ = trained
    data = wp.load_panel(folder)
    labels = {int(i): int(y) for i, y in zip(tracked.ids, tracked.y)}
    same_class = next(i for i, y in labels.items() if y == 1)
    for choice in ({"forget_class": 1, "selected": [100, 101, 103], "alpha": 0.3},
                   {"forget_class": None, "selected": [102], "alpha": 1.0},
                   {"forget_class": 2, "selected": [], "alpha": 0.05}):
        theta, used = wp.panel_theta(data, **choice)
        new, used_pkg = interactive.forget_live(model, class_log, sample_log, labels,
                                                forget_class=choice["forget_class"], sample_ids=choice["selected"],
                                                alpha=choice["alpha"])
        assert used == used_pkg
        want = amnesiac.ParamLayout.of(new).vector(new)
        torch.testing.assert_close(theta, want.float(), rtol=1e-5, atol=1e-6)
        assert (theta - data.theta).abs().max() > 0  # it did subtract something
    assert same_class not in wp.panel_theta(data, 1, [same_class], 0.5)[1]  # inside the class delta already
    theta0, _ = wp.panel_theta(data, None, [], 0.7)
    assert torch.equal(theta0, data.theta)


def test_the_reference_forward_pass_is_the_model(trained):
    model, *_, folder, _ = trained
    data = wp.load_panel(folder)
    ref = wp.panel_reference(data, forget_class=None, selected=[], alpha=0.5)
    with torch.no_grad():
        want = model(data.images)
    torch.testing.assert_close(ref["logits_after"], want, rtol=1e-5, atol=1e-5)
    acc = interactive.per_class_accuracy(model, amnesiac.ArrayDataset(data.images[:30], data.labels[:30],
                                                                      torch.arange(30)), 3)
    np.testing.assert_allclose(ref["per_class_after"], acc)
    assert ref["acc_forgotten_after"] != ref["acc_forgotten_after"]  # NaN: no class forgotten
    # nothing removed: "before" (the cached forward pass of the exported theta) equals "after"
    assert torch.equal(data.logits_before, ref["logits_after"])
    assert ref["per_class_before"] == ref["per_class_after"]


def test_the_onnx_graph_the_page_runs_is_simplemodel(trained):
    reference = pytest.importorskip("onnx.reference")
    model, *_, folder, meta = trained
    data = wp.load_panel(folder)
    session = reference.ReferenceEvaluator((folder / "model.onnx").read_bytes())
    feeds = {"x": data.images.numpy()}
    for p in meta["params"]:
        size = int(np.prod(p["shape"]))
        feeds[p["name"]] = data.theta[p["offset"]:p["offset"] + size].reshape(p["shape"]).numpy()
    (logits,) = session.run(None, feeds)
    with torch.no_grad():
        want = model(data.images).numpy()
    np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-4)


def test_a_changed_file_is_refused(trained, tmp_path):
    *_, folder, _ = trained
    for f in folder.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    raw = bytearray((tmp_path / "class_deltas.bin").read_bytes())
    raw[7] ^= 1
    (tmp_path / "class_deltas.bin").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="class_deltas.bin does not match meta.json"):
        wp.load_panel(tmp_path)
    meta = json.loads((folder / "meta.json").read_text())
    meta["format"] = 99
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="panel format 99"):
        wp.load_panel(tmp_path)


def test_bad_input_is_refused_before_anything_is_written(trained, tmp_path):
    model, class_log, sample_log, test, tracked, folder, _ = trained
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="over the 0.0 MB limit; track fewer images"):
        wp.export_panel(out, model, class_log, sample_log, test, tracked, num_classes=3, n_test=30, min_test=30,
                        max_bytes=1_000)
    with pytest.raises(ValueError, match="at least 500 test images"):
        wp.export_panel(out, model, class_log, sample_log, test, tracked, num_classes=3, n_test=30)
    smooth = amnesiac.ArrayDataset(test.x * 0.999, test.y, test.ids, "not 8-bit")
    with pytest.raises(ValueError, match="not 8-bit pixels"):
        wp.export_panel(out, model, class_log, sample_log, smooth, tracked, num_classes=3, n_test=30, min_test=30)
    with pytest.raises(TypeError, match="runs SimpleModel"):
        wp.export_panel(out, torch.nn.Linear(2, 3), class_log, sample_log, test, tracked, num_classes=3)
    with pytest.raises(ValueError, match="3 outputs, num_classes=10"):
        wp.export_panel(out, model, class_log, sample_log, test, tracked, num_classes=10, n_test=30, min_test=30)
    assert not out.exists()
    data = wp.load_panel(folder)
    with pytest.raises(ValueError, match=r"image id\(s\) \[5\] are not tracked"):
        wp.panel_theta(data, None, [5], 0.5)
    with pytest.raises(ValueError, match="finite"):
        wp.panel_theta(data, None, [], float("nan"))
    with pytest.raises(ValueError, match="not a class of 0..2"):
        wp.panel_theta(data, 3, [], 0.5)

"""aqa_jax.inspect_adapters and notebooks/inspect_adapters.ipynb, on two tiny PECoP runs.

Oracles: norms, counts and differences recomputed with numpy from the ``.npz`` that
``aqa-jax export-adapters`` writes; per-block parameter counts from the adapter's definition
(PECoP reference: 23,872 for Mixed_3b, 71,640 for Mixed_3c); the initialisation against the
step-0 checkpoint the loop saves before its first update; the features against the adapter
written out here with XLA's grouped convolution (``x + α ⊙ up(ReLU(down(x)))``).
"""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest

from train_helpers import REPO, tiny_config

from aqa_jax import inspect_adapters as ia
from aqa_jax.cli import main as cli_main
from aqa_jax.train.loop import train

BLOCKS = ("Mixed_3b", "Mixed_3c")
TINY = dict(num_devices=1, mesh=[("data", 1), ("model", 1)], total_steps=2,
            model={"adapter_blocks": BLOCKS, "final_endpoint": "Mixed_3c"})
LAYERS = ("down/kernel", "down/bias", "up/kernel", "up/bias", "scale")


@pytest.fixture(scope="module")
def runs(synthetic_data_dir, tmp_path_factory):
    """Two 2-step tiny PECoP runs (adapters in Mixed_3b and Mixed_3c), 0 → workdir, 1 → workdir.

    Run 0 has seed 0. Run 1 starts from a copy of run 0's step-0 checkpoint (the loop resumes
    from it) and trains with seed 1, i.e. another data order and other dropout masks: two
    runs from one initialisation, as the PECoP runs of two PD4T tasks with the same seed
    are. Resuming spares a second compilation of the network's initialisation, which is
    most of a tiny run's time on a CPU.
    """
    out = {0: tmp_path_factory.mktemp("inspect_run0"), 1: tmp_path_factory.mktemp("inspect_run1")}
    train(tiny_config(synthetic_data_dir, seed=0, **TINY), out[0])
    shutil.copytree(out[0] / "checkpoints" / "0", out[1] / "checkpoints" / "0")
    # A deliberate resume under another seed: the workdir's config check is overridden.
    train(tiny_config(synthetic_data_dir, seed=1, **TINY), out[1], force_config=True)
    return out


@pytest.fixture(scope="module")
def exported(runs, tmp_path_factory):
    """(seed, step) → the run's adapters as numpy, read back from `aqa-jax export-adapters`."""
    folder = tmp_path_factory.mktemp("exported")
    out = {}
    for seed, workdir in runs.items():
        for step in (0, 2):
            path = folder / f"seed{seed}_step{step}.npz"
            assert cli_main(["export-adapters", str(workdir), str(path), "--step", str(step)]) == 0
            with np.load(path) as data:
                out[seed, step] = {k: data[k] for k in data.files}
            out[seed, step, "path"] = path
    return out


def raw(exported, seed, step, block, layer):
    return exported[seed, step][f"backbone/{block}/adapter/{layer}"].astype(np.float64)


def block_vector(exported, seed, step, block, layers=LAYERS):
    return np.concatenate([raw(exported, seed, step, block, k).ravel() for k in sorted(layers)])


def cos(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_table_and_loading_against_the_exported_arrays(runs, exported):
    run = ia.load_run(runs[0])
    assert run.step == 2 and run.steps == [0, 1, 2]
    table = ia.adapter_table(run)
    assert [r["block"] for r in table] == list(BLOCKS)
    reference_counts = {"Mixed_3b": 23_872, "Mixed_3c": 71_640}  # pecop_i3d.md §1
    for row in table:
        b, c = row["block"], row["channels"]
        assert row["params"] == 27 * c + c // 4 + (c // 4) * c + c + c == reference_counts[b]
        assert row["hidden"] == c // 4
        for layer in LAYERS:
            np.testing.assert_allclose(row[f"|{layer}|"], np.linalg.norm(raw(exported, 0, 2, b, layer)), rtol=1e-9)
        alpha = raw(exported, 0, 2, b, "scale")
        np.testing.assert_allclose([row["alpha_mean"], row["alpha_std"], row["alpha_min"], row["alpha_max"]],
                                   [alpha.mean(), alpha.std(), alpha.min(), alpha.max()], rtol=1e-9)
    # The same adapters whichever way they are read.
    for source in (ia.load_adapters(exported[0, 2, "path"]), ia.load_adapters(runs[0]),
                   ia.load_adapters(runs[0] / "checkpoints" / "2"), run.adapters):
        assert list(source) == list(BLOCKS)
        for b in BLOCKS:
            for layer in LAYERS:
                np.testing.assert_array_equal(source[b][layer], raw(exported, 0, 2, b, layer))
    assert "Mixed_3b" in ia.format_table(table)


def test_initialisation_is_recreated_exactly_and_change_from_it(runs, exported):
    init = ia.initial_adapters(ia.load_run(runs[0], 0).config)
    for b in BLOCKS:
        for layer in LAYERS:
            np.testing.assert_array_equal(init[b][layer], raw(exported, 0, 0, b, layer), err_msg=b)
    assert not np.array_equal(raw(exported, 0, 2, "Mixed_3b", "down/kernel"),
                              raw(exported, 1, 2, "Mixed_3b", "down/kernel"))  # two runs, one init

    step0 = ia.load_run(runs[0], 0)
    for row in ia.change_from_init(step0, step0.adapters):  # a run of 0 steps has not moved
        assert row["|delta|"] == 0 and row["relative"] == 0 and row["alpha_max_abs_change"] == 0

    change = ia.change_from_init(ia.load_run(runs[0]), step0)
    expected = {}
    for row in change:
        b = row["block"]
        now, then = block_vector(exported, 0, 2, b), block_vector(exported, 0, 0, b)
        expected[b] = np.linalg.norm(now - then) / np.linalg.norm(then)
        np.testing.assert_allclose(row["|delta|"], np.linalg.norm(now - then), rtol=1e-9)
        np.testing.assert_allclose(row["relative"], expected[b], rtol=1e-9)
        d_up = raw(exported, 0, 2, b, "up/kernel") - raw(exported, 0, 0, b, "up/kernel")
        np.testing.assert_allclose(row["rel up/kernel"],
                                   np.linalg.norm(d_up) / np.linalg.norm(raw(exported, 0, 0, b, "up/kernel")), rtol=1e-9)
        assert row["|delta|"] > 0
    ranked = ia.blocks_moved_most(change)
    assert [b for b, _ in ranked] == sorted(expected, key=lambda b: -expected[b])
    assert ia.blocks_moved_most(change, top=1) == ranked[:1]


def test_trained_share_against_counts(runs):
    run, step0 = ia.load_run(runs[0]), ia.load_run(runs[0], 0)
    share = ia.trained_share(run, step0)
    sizes = {}

    def walk(tree, path=()):
        for k, v in tree.items():
            if isinstance(v, dict):
                walk(v, path + (k,))
            else:
                sizes[path + (k,)] = np.asarray(v).size

    walk(run.params)
    adapter = sum(n for p, n in sizes.items() if "adapter" in p)
    head = sum(n for p, n in sizes.items() if p[0].startswith("head"))
    assert adapter == sum(r["params"] for r in ia.adapter_table(run)) == 23_872 + 71_640
    assert share["total"] == sum(sizes.values())
    assert share["adapter"] == adapter
    assert share["trainable"] == adapter + head  # PECoP trains the adapters and the VSPP heads
    assert share["share"] == pytest.approx((adapter + head) / sum(sizes.values()))
    by = share["by_label"]
    assert by["adapter"]["trainable"] and by["head"]["trainable"]
    assert not by["bn"]["trainable"] and not by["backbone"]["trainable"]
    # Against step 0: frozen labels did not move, trained ones did, BN statistics were re-estimated.
    assert share["changed"]["bn"] == 0 and share["changed"]["backbone"] == 0
    assert 0 < share["changed"]["adapter"] <= adapter and share["changed"]["head"] > 0
    assert share["changed_share"] <= share["share"]
    assert share["batch_stats_changed"] > 0
    assert ia.trained_share(step0, step0)["changed_share"] == 0


def _without(tree, key):
    return {k: _without(v, key) for k, v in tree.items() if k != key} if isinstance(tree, dict) else tree


def test_feature_similarity_against_the_adapter_definition(runs):
    import jax
    import jax.numpy as jnp
    from jax import lax

    from aqa_jax.models.i3d import build_i3d

    run = ia.load_run(runs[0])
    clips, ids = ia.sample_clips(run, 2)
    assert clips.shape == (2, 8, 32, 32, 3) and len(ids) == 2
    same = np.random.default_rng(0).normal(size=(3, 7))
    np.testing.assert_allclose(ia.cosine_rows(same, same), 1.0, rtol=1e-12)

    # Oracle at Mixed_3b, the first adapter: x is the block's concat, and the adapter adds
    # α ⊙ up(ReLU(down(x))) with down a 3x3x3 conv of C/4 groups (XLA's grouped conv here).
    result = ia.feature_similarity(run, clips, endpoint="Mixed_3b")
    backbone = run.params["backbone"]
    variables = {"params": _without(backbone, "adapter"), "batch_stats": run.batch_stats["backbone"]}
    plain = build_i3d(run.config.model, final_endpoint="Mixed_3b", adapter_blocks=())
    x = jax.jit(lambda v, c: plain.apply(v, c, train=False)["Mixed_3b"])(variables, jnp.asarray(clips))
    a = backbone["Mixed_3b"]["adapter"]
    h = lax.conv_general_dilated(x, a["down"]["kernel"], (1, 1, 1), [(1, 1)] * 3,
                                 dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
                                 feature_group_count=a["down"]["kernel"].shape[-1]) + a["down"]["bias"]
    h = np.maximum(np.asarray(h, np.float64), 0.0)
    up = np.einsum("bthwk,kc->bthwc", h, np.asarray(a["up"]["kernel"], np.float64)[0, 0, 0]) + a["up"]["bias"]
    x = np.asarray(x, np.float64)
    f_with = (x + a["scale"] * up).mean(axis=(1, 2, 3))
    f_without = x.mean(axis=(1, 2, 3))
    np.testing.assert_allclose(result["without"], f_without, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(result["with"], f_with, rtol=1e-4, atol=1e-5)
    expected = np.sum(f_with * f_without, 1) / np.linalg.norm(f_with, axis=1) / np.linalg.norm(f_without, axis=1)
    np.testing.assert_allclose(result["cosine"], expected, rtol=1e-5)
    assert np.all(result["cosine"] < 1 - 1e-4)  # PECoP's random non-zero init already changes them

    # α = 0 makes every adapter output zero: the features are those without adapters.
    def zero_scale(tree, in_adapter=False):
        return {k: zero_scale(v, in_adapter or k == "adapter") if isinstance(v, dict)
                else np.zeros_like(v) if in_adapter and k == "scale" else v for k, v in tree.items()}

    zeroed = dataclasses.replace(run, params=zero_scale(run.params))
    out = ia.feature_similarity(zeroed, clips, endpoint="Mixed_3b")
    assert np.any(zeroed.adapters["Mixed_3b"]["up/kernel"] != 0)  # only α is zero
    np.testing.assert_allclose(out["with"], out["without"], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(out["cosine"], 1.0, atol=1e-9)
    np.testing.assert_allclose(out["relative_change"], 0.0, atol=1e-6)
    with pytest.raises(ValueError, match="stops at"):
        ia.feature_similarity(run, clips, endpoint="Mixed_5c")


def test_compare_runs_against_numpy(runs, exported):
    a, b = ia.load_run(runs[0]), ia.load_run(runs[1])
    init_a, init_b = ia.load_run(runs[0], 0), ia.load_run(runs[1], 0)
    for row in ia.compare_runs(a, a):
        assert row["|a-b|"] == 0 and row["cosine"] == pytest.approx(1.0) and row["alpha_max_abs_diff"] == 0
    rows = ia.compare_runs(a, b, init_a=init_a, init_b=init_b)
    assert [r["block"] for r in rows] == list(BLOCKS)
    weights = [k for k in LAYERS if k != "scale"]
    for row in rows:
        blk = row["block"]
        va, vb = block_vector(exported, 0, 2, blk), block_vector(exported, 1, 2, blk)
        np.testing.assert_allclose(row["|a-b|"], np.linalg.norm(va - vb), rtol=1e-9)
        np.testing.assert_allclose(row["relative_difference"], np.linalg.norm(va - vb) / np.linalg.norm(va), rtol=1e-9)
        np.testing.assert_allclose(row["cosine"], cos(block_vector(exported, 0, 2, blk, weights),
                                                      block_vector(exported, 1, 2, blk, weights)), rtol=1e-9)
        da, db = va - block_vector(exported, 0, 0, blk), vb - block_vector(exported, 1, 0, blk)
        np.testing.assert_allclose(row["update_cosine"], cos(da, db), rtol=1e-7)
    fig = ia.plot_comparison(rows)
    assert len(fig.axes) == 2
    one_block = {"Mixed_3b": a.adapters["Mixed_3b"]}
    with pytest.raises(ValueError, match="different blocks"):
        ia.compare_runs(one_block, b)


def test_notebook_runs_headless(runs, tmp_path, monkeypatch):
    """notebooks/inspect_adapters.ipynb top to bottom in a fresh kernel of this interpreter."""
    import nbclient
    import nbformat
    from ipykernel.kernelspec import install

    prefix = tmp_path / "kernel"  # a kernelspec of *this* interpreter, whatever else is installed
    install(kernel_name="aqa_jax_test_py", prefix=str(prefix))
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    monkeypatch.setenv("AQA_INSPECT_RUN", str(runs[0]))
    monkeypatch.setenv("AQA_INSPECT_RUN_B", str(runs[1]))
    monkeypatch.setenv("AQA_INSPECT_NUM_CLIPS", "2")
    # test_initialisation_is_recreated_exactly_and_change_from_it checks the recreation;
    # here it would only cost another compilation of the initialisation.
    monkeypatch.setenv("AQA_INSPECT_VERIFY_INIT", "0")
    nb = nbformat.read(REPO / "notebooks" / "inspect_adapters.ipynb", as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name="aqa_jax_test_py", timeout=300,
                                     resources={"metadata": {"path": str(REPO / "notebooks")}})
    client.execute()  # raises CellExecutionError naming the cell if any cell fails
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "initialisation: the step-0 checkpoint" in text
    assert "endpoint Mixed_3c" in text  # the default endpoint of a network cut after Mixed_3c
    assert f"a = {runs[0].name}@2, b = {runs[1].name}@2" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 6

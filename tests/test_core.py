"""CoRe: regression tree, group boundaries, leaf targets, loss and exemplar pools against
independent oracles (loops written from the official code's description)."""

from collections import defaultdict

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from aqa_jax.data.exemplars import ExemplarPool
from aqa_jax.methods import core
from aqa_jax.weights.safe_pickle import safe_load


def _log_softmax(x):
    x = x - x.max()
    return x - np.log(np.exp(x).sum())


def _tree_numpy(p, x, depth):
    """Walks the tree node by node (the grouped convs of RegressTree, one node at a time)."""
    h = np.maximum(x @ p["first"]["kernel"] + p["first"]["bias"], 0)
    nodes, logps = [h], [0.0]
    for d in range(depth - 1):
        next_nodes, next_logps = [], []
        for k, (hk, lk) in enumerate(zip(nodes, logps)):
            split = _log_softmax(hk @ p[f"clf_{d}_kernel"][k] + p[f"clf_{d}_bias"][k])
            f = np.maximum(hk @ p[f"node_{d}_kernel"][k] + p[f"node_{d}_bias"][k], 0)
            half = len(f) // 2
            next_nodes += [f[:half], f[half:]]
            next_logps += [lk + split[0], lk + split[1]]
        nodes, logps = next_nodes, next_logps
    reg = np.array([hk @ p["reg_kernel"][k] + p["reg_bias"][k] for k, hk in enumerate(nodes)])
    return np.array(logps), reg


def test_regression_tree_matches_a_node_by_node_walk_and_leaf_probabilities_sum_to_one():
    tree = core.RegressionTree(depth=5, hidden=8)
    x = np.random.default_rng(0).normal(size=(3, 13)).astype(np.float32)
    params = tree.init(jax.random.key(1), jnp.asarray(x))["params"]
    logp, reg = jax.device_get(tree.apply({"params": params}, jnp.asarray(x)))
    assert logp.shape == reg.shape == (3, 16)
    np.testing.assert_allclose(np.exp(logp).sum(-1), 1.0, rtol=1e-5)
    p = jax.tree.map(np.asarray, params)
    for i in range(3):
        ref_logp, ref_reg = _tree_numpy(p, x[i], depth=5)
        np.testing.assert_allclose(logp[i], ref_logp, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(reg[i], ref_reg, rtol=1e-4, atol=1e-5)


def _official_groups(bounds):
    """Group_helper.build's 16 [left, right] pairs from the 9 positive edges."""
    half = len(bounds) - 1
    groups = [None] * (2 * half)
    for i in range(half):
        groups[half + i] = [bounds[i], bounds[i + 1]]
    for i in range(half):
        groups[i] = sorted(-v for v in groups[2 * half - 1 - i])
    return groups


def _official_labels(delta, groups):
    """Group_helper.produce_label for one Δ: (argmax class, position list) as the runner uses."""
    cls, reg = [], []
    for left, right in groups:
        inside = (delta >= 0 and left <= delta < right) or (delta < 0 and left < delta <= right)
        cls.append(1 if inside else 0)
        if inside:
            reg.append(delta - left if right == left else (delta - left) / (right - left))
        else:
            reg.append(-1)
    return int(np.argmax(cls)), reg


def test_leaf_targets_follow_group_helper_produce_label():
    bounds = np.array([0.0, 0.5, 1.0, 1.0, 2.0, 3.0, 5.0, 8.0, 30.0])  # one empty group
    groups = _official_groups(bounds)
    deltas = [0.0, 0.2, 0.5, 0.99, 1.0, 2.5, 29.9, 30.0, 45.0, -0.0001, -0.5, -1.0, -7.5, -30.0, -31.0]
    leaf, position, inside = jax.device_get(core.leaf_targets(jnp.asarray(deltas, jnp.float32),
                                                              jnp.asarray(bounds, jnp.float32)))
    for k, d in enumerate(deltas):
        expected_leaf, reg = _official_labels(d, groups)
        assert leaf[k] == expected_leaf, d
        assert bool(inside[k]) == (max(reg) >= 0), d
        if inside[k]:
            assert position[k] == pytest.approx(reg[expected_leaf], abs=1e-5), d


def test_decode_leaves_hand_case():
    bounds = jnp.asarray([0.0, 1, 2, 3, 4, 5, 6, 7, 30])
    logp = jnp.log(jnp.full((2, 16), 1 / 32)).at[0, 10].set(jnp.log(0.5)).at[1, 5].set(jnp.log(0.5))
    reg = jnp.full((2, 16), 0.25)
    # leaf 10 = [2, 3): 2 + 0.25; leaf 5 = mirror of leaf 10 = [-3, -2]: -3 + 0.25
    np.testing.assert_allclose(jax.device_get(core.decode_leaves(logp, reg, bounds)), [2.25, -2.75])


def test_group_bounds_match_a_brute_force_quantile_on_the_real_mtl_aqa_training_scores(real_annotations):
    labels = safe_load(real_annotations / "mtl_aqa" / "final_annotations_dict.pkl")
    train = safe_load(real_annotations / "mtl_aqa" / "train_split_0.pkl")
    by_dd = defaultdict(list)
    for key in train:
        by_dd[labels[key]["difficulty"]].append(labels[key]["final_score"] / labels[key]["difficulty"])
    deltas = []
    for members in by_dd.values():
        for i in range(len(members)):
            for j in range(i + 1, len(members)):
                deltas.append(abs(members[i] - members[j]))
    deltas.sort()
    expected = [0.0] + [deltas[int(i / 8 * (len(deltas) - 1))] for i in range(1, 8)] + [30.0]

    scores = np.array([labels[k]["final_score"] / labels[k]["difficulty"] for k in train])
    groups = [labels[k]["difficulty"] for k in train]
    got = core.group_bounds(core.pair_deltas(scores, groups), 16, 30.0)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert np.all(np.diff(got) >= 0)


def _config(**core_fields):
    fields = dict(depth=5, hidden=8, score_range=4.0, use_dd=False, exemplar_key="",
                  num_exemplars=2, group_bounds=[0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0])
    fields.update(core_fields)
    return ml_collections.ConfigDict({"core": fields})


def test_loss_is_nll_plus_per_leaf_masked_mse_in_both_orderings():
    method = core.Method(_config())
    rng = np.random.default_rng(0)
    logp = np.log(rng.dirichlet(np.ones(16), size=(3, 1, 2))).astype(np.float32)
    reg = rng.uniform(size=(3, 1, 2, 16)).astype(np.float32)
    s_query = np.array([1.2, 3.0, 0.1], np.float32)
    s_exemplar = np.array([[0.4], [3.2], [1.1]], np.float32)
    loss, _ = method.loss({"leaf_logp": jnp.asarray(logp), "leaf_reg": jnp.asarray(reg),
                           "s_exemplar": jnp.asarray(s_exemplar)}, {"score": jnp.asarray(s_query)})
    groups = _official_groups(list(_config().core.group_bounds))
    expected = 0.0
    for order in range(2):  # 0: reference exemplar, target s_q - s_e; 1: the other way
        leaves, positions = [], []
        for b in range(3):
            delta = float(s_query[b] - s_exemplar[b, 0]) * (1 if order == 0 else -1)
            leaf, reg_targets = _official_labels(delta, groups)
            leaves.append(leaf)
            positions.append(reg_targets)
        expected += -np.mean([logp[b, 0, order, leaves[b]] for b in range(3)])
        for leaf in range(16):
            members = [b for b in range(3) if positions[b][leaf] >= 0]
            if members:
                expected += np.mean([(reg[b, 0, order, leaf] - positions[b][leaf]) ** 2 for b in members])
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_exemplar_pool_groups_excludes_the_query_and_fixes_test_exemplars():
    source = [{"id": f"s{i}", "score": float(i), "difficulty": 2.0 + (i % 2)} for i in range(9)]
    pool = ExemplarPool(source, "difficulty")
    query = source[4]  # difficulty 2.0: s0 s2 s4 s6 s8
    assert pool.candidates(query) == [0, 2, 6, 8]
    rng = np.random.default_rng(0)
    assert {pool.draw(query, rng)[0] for _ in range(50)} == {0, 2, 6, 8}
    fixed = pool.fixed(query, 6)
    assert fixed == pool.fixed(query, 6) and set(fixed) == {0, 2, 6, 8}  # cycled, deterministic
    unseen = {"id": "t0", "score": 1.0, "difficulty": 3.5}  # no training sample with DD 3.5
    assert len(pool.candidates(unseen)) == 9

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


def test_pair_labels_follow_group_helper_produce_label():
    bounds = np.array([0.0, 0.5, 1.0, 1.0, 2.0, 3.0, 5.0, 8.0, 30.0])  # one empty group
    groups = _official_groups(bounds)
    deltas = np.array([0.0, 0.2, 0.5, 0.99, 1.0, 2.5, 29.9, 30.0, 45.0, -0.0001, -0.5, -1.0, -7.5,
                       -30.0, -31.0], np.float32)
    leaf, position, inside = core.pair_labels(deltas, bounds)
    for k, d in enumerate(deltas):
        expected_leaf, reg = _official_labels(float(d), groups)
        assert leaf[k] == expected_leaf, d
        assert bool(inside[k]) == (max(reg) >= 0), d
        if inside[k]:
            assert position[k] == np.float32(reg[expected_leaf]), d


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
    deltas = np.stack([s_query[:, None] - s_exemplar, s_exemplar - s_query[:, None]], -1)  # (3, 1, 2)
    leaf, position, inside = core.pair_labels(deltas, _config().core.group_bounds)
    batch = {"score": jnp.asarray(s_query), "pair_leaf": jnp.asarray(leaf),
             "pair_position": jnp.asarray(position), "pair_inside": jnp.asarray(inside)}
    loss, _ = method.loss({"leaf_logp": jnp.asarray(logp), "leaf_reg": jnp.asarray(reg),
                           "s_exemplar": jnp.asarray(s_exemplar)}, batch)
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
    fixed = pool.fixed(query, 6)  # a group of 4 < 6: those 4, each once (MTLPair [:voter_number])
    assert fixed == pool.fixed(query, 6) and sorted(fixed) == [0, 2, 6, 8]
    assert len(pool.fixed(query, 3)) == 3 and set(pool.fixed(query, 3)) <= {0, 2, 6, 8}
    unseen = {"id": "t0", "score": 1.0, "difficulty": 3.5}  # no training sample with DD 3.5
    assert len(pool.candidates(unseen)) == 9


def test_a_training_sample_alone_in_its_group_is_paired_with_itself():
    # MTLPair.py: file_list = group.copy(); if len(file_list) > 1: pop(self); randint over the rest
    source = [{"id": "a", "score": 50.0, "difficulty": 1.5},
              {"id": "b", "score": 60.0, "difficulty": 3.0}, {"id": "c", "score": 70.0, "difficulty": 3.0}]
    pool = ExemplarPool(source, "difficulty")
    rng = np.random.default_rng(0)
    assert pool.candidates(source[0]) == [0] and pool.draw(source[0], rng) == [0]
    assert pool.candidates(source[1]) == [2]
    test_query = {"id": "t", "score": 55.0, "difficulty": 1.5}  # test: the group's one exemplar, once
    assert pool.fixed(test_query, 10) == [0]


class _Records:
    """A clip sampler of records whose ``clip`` already holds features (the feature cache)."""

    def __call__(self, record, rng):
        return {k: record[k] for k in ("id", "clip", "score", "difficulty")}


def _feature_config(**core_fields):
    from aqa_jax.config_args import load_config

    c = load_config(f"{REPO}/configs/core.py:dataset=synthetic_aqa,debug")
    c.core.update(hidden=8, **core_fields)
    return c


REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


def _dd_source(rng: np.random.Generator) -> list[dict]:
    """Six training samples with cached 2-clip features; DD 1.5 is alone in its group."""
    return [{"id": f"s{i}", "clip": rng.normal(size=(2, 1024)).astype(np.float32),
             "score": np.float32(rng.uniform(30, 90)), "difficulty": np.float32(dd)}
            for i, dd in enumerate([1.5, 3.0, 3.0, 3.0, 3.2, 3.2])]


def test_a_singleton_group_trains_one_step():
    """Pair sampler + one jitted training step on cached features, where one training sample
    (DD 1.5) is alone in its group: it is its own exemplar (Δ = 0: first positive leaf)."""
    c = _feature_config(use_dd=True, exemplar_key="difficulty", score_range=30.0, num_exemplars=3)
    rng = np.random.default_rng(0)
    source = _dd_source(rng)
    method = core.Method(c)
    method.feature_mode = True
    method.prepare(source)
    sampler = method.sampler(True)
    assert isinstance(sampler, core.CoRePairSampler)
    examples = [sampler(source[i], rng) for i in (0, 1)]
    single = examples[0]
    assert single["exemplar_score"][0] == source[0]["score"] and single["exemplar_mask"].tolist() == [1.0]
    assert single["pair_leaf"].tolist() == [[8, 8]] and single["pair_position"].tolist() == [[0.0, 0.0]]
    batch = {k: jnp.asarray(np.stack([e[k] for e in examples])) for k in examples[0] if k != "id"}
    model = method.build_model().clone(from_features=True)
    variables = model.init(jax.random.key(0), batch, train=True)

    def loss_fn(params):
        out = model.apply({**variables, "params": params}, batch, train=True)
        return method.loss(out, batch)[0]

    loss, grads = jax.jit(jax.value_and_grad(loss_fn))(variables["params"])
    assert np.isfinite(float(loss)) and float(loss) > 0
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
    assert float(sum(jnp.sum(g ** 2) for g in jax.tree.leaves(grads))) > 0


def test_test_group_smaller_than_m_averages_over_its_exemplars_only():
    """A test query of DD 3.2 (2 training exemplars, M = 3): two exemplars, mask [1, 1, 0],
    the prediction their mean (helper.py: score / len(video_2_list))."""
    c = _feature_config(use_dd=True, exemplar_key="difficulty", score_range=30.0, num_exemplars=3)
    rng = np.random.default_rng(1)
    source = _dd_source(rng)
    method = core.Method(c)
    method.feature_mode = True
    method.prepare(source)
    query = {"id": "t0", "clip": rng.normal(size=(2, 1024)).astype(np.float32), "score": np.float32(60.0),
             "difficulty": np.float32(3.2)}
    example = method.sampler(False)(query, None)
    assert example["exemplar_mask"].tolist() == [1.0, 1.0, 0.0]
    assert sorted(example["exemplar_score"][:2].tolist()) == sorted([source[4]["score"], source[5]["score"]])
    # the network sees the official float32 labels: float32(score / DD) of the float64 annotations
    for k in range(2):
        s, d = example["exemplar_score"][k], example["exemplar_difficulty"][k]
        assert example["exemplar_relative"][k] == np.float32(float(str(s)) / float(str(d)))
    # prediction: the per-exemplar scores (decode_leaves, fixed outputs) averaged over the real two
    logp = np.log(np.full((1, 3, 1, 16), 1 / 32, np.float32))
    logp[0, :, 0, 9] = np.log(0.5)  # leaf 9 = [b1, b2)
    reg = np.full((1, 3, 1, 16), 0.5, np.float32)
    batch = {k: jnp.asarray(np.asarray(v)[None]) for k, v in example.items() if k != "id"}
    out = {"leaf_logp": jnp.asarray(logp), "leaf_reg": jnp.asarray(reg),
           "s_exemplar": jnp.asarray(example["exemplar_relative"][None])}
    pred = jax.device_get(method.predict(out, batch))
    left, right = _official_groups(c.core.group_bounds)[9]  # Group_helper.inference
    delta = left + 0.5 if left == right else left + (right - left) * 0.5
    per_exemplar = [(delta + example["exemplar_relative"][k]) * 3.2 for k in range(2)]
    assert float(pred["score_pred"][0]) == pytest.approx(np.mean(per_exemplar), rel=1e-5)
    assert float(pred["exemplar_spread"][0]) == pytest.approx(np.std(per_exemplar), rel=1e-4, abs=1e-5)


# --------------------------------------------------------------------------- real annotations


def _produce_label_float64(scores, groups):
    """Group_helper.produce_label transcribed for numpy 1.x (CoRe's era): each numpy float32
    score is compared with the Python-float edges in float64; returns (argmax leaf, rlabel)."""
    glabel, rlabel = [], []
    for left, right in groups:
        leaf_cls, leaf_reg = [], []
        for score in scores:
            x = float(score)  # np.float32 vs Python float promotes to float64 in numpy 1.x
            if x >= 0 and (x < right and x >= left):
                leaf_cls.append(1)
            elif x < 0 and (x <= right and x > left):
                leaf_cls.append(1)
            else:
                leaf_cls.append(0)
            if leaf_cls[-1] == 1:
                leaf_reg.append(x - left if right == left else (x - left) / (right - left))
            else:
                leaf_reg.append(-1)
        glabel.append(leaf_cls)
        rlabel.append(leaf_reg)
    glabel, rlabel = np.array(glabel), np.array(rlabel, np.float64)
    return glabel.argmax(0), rlabel.astype(np.float32)  # runner: argmax(0); mse(... .float())


def test_leaf_labels_of_every_same_dd_training_ordering_match_the_official_rule(real_annotations):
    """All 135,124 ordered same-DD pairs of MTL-AQA's training split: our bounds (prepare() on
    float32-stored records) and host labels equal MTLPair.delta + Group_helper.build +
    produce_label on the annotations' Python floats with the runner's ``.float()`` labels."""
    labels = safe_load(real_annotations / "mtl_aqa" / "final_annotations_dict.pkl")
    train = safe_load(real_annotations / "mtl_aqa" / "train_split_0.pkl")
    # --- the official code
    by_dd = defaultdict(list)
    for key in train:
        by_dd[labels[key]["difficulty"]].append(key)
    delta = []  # MTLPair.delta(), usingDD, not dive_number_choosing
    for file_list in by_dd.values():
        for i in range(len(file_list)):
            for j in range(i + 1, len(file_list)):
                a, b = labels[file_list[i]], labels[file_list[j]]
                delta.append(abs(a["final_score"] / a["difficulty"] - b["final_score"] / b["difficulty"]))
    ordered = sorted(delta)  # Group_helper.build, symmetrical, Min 0, Max 30, depth 5
    edges = [0] + [ordered[int((i / 8) * (len(ordered) - 1))] for i in range(1, 8)] + [30]
    groups = _official_groups(edges)
    completeness = {k: np.float32(labels[k]["final_score"] / labels[k]["difficulty"]) for k in train}  # .float()
    pairs = [(x, y) for file_list in by_dd.values() for x in file_list for y in file_list if x != y]
    official_delta = np.array([completeness[y] - completeness[x] for x, y in pairs], np.float32)  # label_2 - label_1
    unique, where = np.unique(official_delta, return_inverse=True)
    official_leaf, official_reg = _produce_label_float64(unique, groups)
    official_leaf, official_reg = official_leaf[where], official_reg[:, where]

    # --- ours, from records as the builder stores them (float32 score and difficulty)
    records = [{"id": f"{k[0]:02d}_{k[1]:02d}", "score": np.float32(labels[k]["final_score"]),
                "difficulty": np.float32(labels[k]["difficulty"])} for k in train]
    c = _config(use_dd=True, exemplar_key="difficulty", score_range=30.0, group_bounds=[])
    c.clips = {}
    method = core.Method(c)
    method.prepare(records)
    assert c.core.group_bounds == [float(e) for e in edges]  # float64 edges, bit for bit
    sampler = core.CoRePairSampler(None, method.pool, bounds=tuple(c.core.group_bounds), use_dd=True)
    ours = {r["id"]: sampler._label(r["score"], r["difficulty"]) for r in records}
    name = {k: f"{k[0]:02d}_{k[1]:02d}" for k in train}
    our_delta = np.array([ours[name[y]] - ours[name[x]] for x, y in pairs], np.float32)
    np.testing.assert_array_equal(our_delta, official_delta)
    leaf, position, inside = core.pair_labels(our_delta, c.core.group_bounds)
    assert len(pairs) == 135124 and inside.all()
    assert int(np.sum(leaf != official_leaf)) == 0
    np.testing.assert_array_equal(position, official_reg[official_leaf, np.arange(len(pairs))])


def test_annotation_value_recovers_every_mtl_aqa_and_fine_diving_annotation(real_annotations):
    from aqa_jax.data.exemplars import annotation_value

    labels = safe_load(real_annotations / "mtl_aqa" / "final_annotations_dict.pkl")
    values = [v[f] for v in labels.values() for f in ("final_score", "difficulty")]
    fine = safe_load(real_annotations / "fine_diving" / "fine-grained_annotation_aqa.pkl")
    values += [float(v[i]) for v in fine.values() for i in (1, 2)]
    assert len(values) > 8000
    assert all(annotation_value(np.float32(v)) == v for v in values)

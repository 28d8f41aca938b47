"""USDL / MUSDL: targets, loss, decoding and the judge rules against independent oracles."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from scipy import stats

from aqa_jax.methods import usdl
from aqa_jax.weights.safe_pickle import safe_load


def test_gaussian_targets_equal_the_official_normalised_scipy_pdf():
    # MTL-AQA USDL: score 80.5 mapped to 80.5 * 100 / 104.5, sigma 5, bins 0..100
    loc = 80.5 * 100 / 104.5
    expected = stats.norm.pdf(np.arange(101), loc=loc, scale=5.0)
    expected /= expected.sum()
    got = usdl.gaussian_targets(jnp.asarray([loc]), 101, 5.0)[0]
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-7)


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides:UserWarning")  # torch's note on 'mean'
def test_kl_loss_equals_torch_kldivloss_default_reduction():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 21)).astype(np.float32)
    targets = usdl.gaussian_targets(jnp.asarray([2.0, 10.5, 20.0]), 21, 5.0)
    targets = np.asarray(targets).copy()
    targets[0, 15:] = 0.0  # exact zeros: 0 log 0 = 0 as torch
    log_probs = np.array(jax.nn.log_softmax(jnp.asarray(logits)))
    expected = torch.nn.KLDivLoss()(torch.from_numpy(log_probs), torch.from_numpy(targets)).item()
    assert float(usdl.kl_div_mean(jnp.asarray(log_probs), jnp.asarray(targets))) == pytest.approx(expected, rel=1e-5)


def _method(**usdl_fields):
    fields = dict(num_bins=21, score_min=0.0, score_max=10.0, sigma=5.0, decoding="argmax",
                  judge_key="", num_judges=1, combine="")
    fields.update(usdl_fields)
    return usdl.Method(ml_collections.ConfigDict({"usdl": fields}))


def test_argmax_and_expectation_decoding_hand_case():
    method = _method()
    logits = np.full((1, 1, 21), -30.0, np.float32)
    logits[0, 0, 14] = 0.0  # all mass on bin 14 = 14 * 0.5 = 7.0
    logits[0, 0, 16] = np.log(1 / 3)  # 1/4 of the mass on 8.0: mean = 0.75*7 + 0.25*8
    out = method.predict({"logits": jnp.asarray(logits)}, {"score": jnp.asarray([7.0])})
    cols = method.per_sample(jax.device_get(out))
    assert cols["score_pred"][0] == pytest.approx(7.0)
    assert cols["score_mean"][0] == pytest.approx(0.75 * 7 + 0.25 * 8, abs=1e-5)
    assert cols["score_std"][0] == pytest.approx(np.sqrt(0.75 * 0.25), abs=1e-4)
    expectation = _method(decoding="expectation")
    cols = expectation.per_sample(jax.device_get(expectation.predict({"logits": jnp.asarray(logits)},
                                                                     {"score": jnp.asarray([7.0])})))
    assert cols["score_pred"][0] == pytest.approx(7.25, abs=1e-5)


def test_musdl_loss_sums_the_per_judge_kl():
    method = _method(judge_key="judge_scores", num_judges=3, combine="sum")
    rng = np.random.default_rng(1)
    logits = jnp.asarray(rng.normal(size=(2, 3, 21)), jnp.float32)
    judges = jnp.asarray([[7.0, 7.5, 8.0], [3.0, 3.5, 2.5]])
    loss, _ = method.loss({"logits": logits}, {"judge_scores": judges, "score": judges.sum(1)})
    log_probs = jax.nn.log_softmax(logits, -1)
    expected = sum(
        float(usdl.kl_div_mean(log_probs[:, j], usdl.gaussian_targets(judges[:, j] * 2, 21, 5.0)))
        for j in range(3)
    )
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_combine_rules_hand_cases():
    judges = np.array([[8.0, 7.5, 9.0, 6.0, 8.5, 7.0, 10.0]])
    # sorted 6 7 7.5 8 8.5 9 10: middle three 7.5 + 8 + 8.5 = 24, x DD 3.2
    assert usdl.combine_judges(judges, "diving", np.array([3.2]))[0] == pytest.approx(76.8)
    assert usdl.combine_judges(np.array([[1.0, 2.0, 3.0]]), "sum", None)[0] == 6.0
    assert usdl.combine_judges(np.array([[1.0, 2.0]]), "sum", None, [0.5, 2.0])[0] == 4.5


def test_diving_rule_reproduces_final_score_on_the_real_mtl_aqa_annotations(real_annotations):
    annotations = safe_load(real_annotations / "mtl_aqa" / "augmented_final_annotations_dict.pkl")
    keys = [k for k, v in annotations.items() if len(v.get("judge_scores", [])) == 7]
    judges = np.array([annotations[k]["judge_scores"] for k in keys], np.float64)
    dd = np.array([annotations[k]["difficulty"] for k in keys], np.float64)
    final = np.array([annotations[k]["final_score"] for k in keys], np.float64)
    predicted = usdl.combine_judges(judges, "diving", dd)
    # within half the 0.1 step the published scores are rounded to
    matches = np.abs(predicted - final) < 0.05
    # reference/aqa_methods.md §3.2: it holds for 1384 of the 1412 samples
    assert len(keys) == 1412
    assert int(matches.sum()) == 1384

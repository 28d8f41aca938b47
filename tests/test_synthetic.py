"""synthetic_aqa: the score is the stated function of the factors, the movement shows it."""

import numpy as np
from scipy.stats import spearmanr

from aqa_jax.data.registry import build, data_source
from aqa_jax.data.synthetic import TASKS, generate_split, generate_video


def test_score_is_the_documented_function_of_the_factors():
    for task in TASKS:
        v = generate_video(3, task, subject=5, severity=0.6, num_frames=24, size=32)
        f = v.factors
        expected = 4 * (0.35 * f["decrement"] + 0.30 * f["slowing"]
                        + 0.20 * f["hesitation"] + 0.15 * f["irregularity"])
        assert abs(v.score - expected) < 1e-9 and 0 <= v.score <= 4
        assert v.frames.shape == (24, 32, 32, 3) and v.frames.dtype == np.uint8


def test_deterministic_from_the_seed():
    a = generate_video(1, "hand_movement", 2, 0.3, num_frames=16, size=32)
    b = generate_video(1, "hand_movement", 2, 0.3, num_frames=16, size=32)
    c = generate_video(2, "hand_movement", 2, 0.3, num_frames=16, size=32)
    np.testing.assert_array_equal(a.frames, b.frames)
    assert not np.array_equal(a.frames, c.frames)


def test_motion_in_the_pixels_ranks_the_scores():
    # Impaired movement is smaller, slower and pauses: less frame-to-frame change.
    for task in TASKS:
        videos = list(generate_split(0, task, "train", num_subjects=30, num_frames=48, size=48))
        energy = [np.abs(np.diff(v.frames.astype(np.float32), axis=0)).mean() for v in videos]
        rho = spearmanr(energy, [v.score for v in videos])[0]
        assert rho < -0.6, (task, rho)


def test_builder_splits_and_records(tmp_path):
    build("synthetic_aqa", "leg_agility_tiny", data_dir=str(tmp_path))
    train = data_source("synthetic_aqa", "leg_agility_tiny", "train", data_dir=str(tmp_path))
    test = data_source("synthetic_aqa", "leg_agility_tiny", "test", data_dir=str(tmp_path))
    assert (len(train), len(test)) == (8, 4)
    train_subjects = {int(r["subject"]) for r in train}
    test_subjects = {int(r["subject"]) for r in test}
    assert not train_subjects & test_subjects
    expected = {f"leg_agility_{v.subject:06d}": v for v in generate_split(
        0, "leg_agility", "test", num_subjects=4, num_frames=40, size=32)}
    for record in test:
        v = expected[record["id"].decode()]
        assert abs(float(record["score"]) - v.score) < 1e-6
        assert int(record["num_frames"]) == len(record["frames"]) == 40
        assert int(record["label"]) == int(np.clip(round(v.score), 0, 4))


def test_a_model_trained_on_train_ranks_test():
    """Learnability: ridge regression on motion energy per quarter, train split → test split."""

    def features(video):
        motion = np.abs(np.diff(video.frames.astype(np.float32), axis=0)).mean(axis=(1, 2, 3))
        quarters = [q.mean() for q in np.array_split(motion, 4)]
        return [1.0, *quarters, motion.std(), (motion < 0.3 * motion.max()).mean()]

    for task in TASKS:
        train = list(generate_split(0, task, "train", num_subjects=40, num_frames=64, size=48))
        test = list(generate_split(0, task, "test", num_subjects=20, num_frames=64, size=48))
        x, y = np.array([features(v) for v in train]), np.array([v.score for v in train])
        w = np.linalg.solve(x.T @ x + 1e-3 * np.eye(x.shape[1]), x.T @ y)
        pred = np.array([features(v) for v in test]) @ w
        rho = spearmanr(pred, [v.score for v in test])[0]
        assert rho > 0.75, (task, rho)

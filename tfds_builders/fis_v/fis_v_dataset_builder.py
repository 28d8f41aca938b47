"""fis_v: the Fis-V figure-skating clip features of GDLT/CoFInAl, as distributed.

Fis-V ships **features, not frames** (the raw videos are not public): per video, one 1024-d
Video Swin Transformer feature per non-overlapping 32-frame clip, plus label files. Two
configs, ``tes`` and ``pcs``, choose the score (Total Element Score or Program Component
Score; CoFInAl's ``--action-type TES/PCS``); both columns are stored in both. Splits
``train``/``test`` are the label files.

Read from the distributed archive (manual_dir = the folder holding the label files, or a
folder holding that one, e.g. ``fis-v/`` below it)::

    <root>/swintx_avg_fps25_clip32/<name>.npy     float (num_clips, 1024)
    <root>/train.txt, <root>/test.txt             first line a header, then whitespace-separated
                                                  rows: name TES PCS

Folder and header rules are those of ``rhythmic_gymnastics`` (shared base class
:class:`ClipFeatureBuilder`): ``swintx_avg_fps25_clip32`` or the only folder of ``.npy`` files
(config ``features_dir`` to choose), columns by header name when named, else by position.

Features: ``id`` (text), ``features`` (float32 ``(num_clips, feature_dim)``, 1024 by default),
``num_clips`` (int32), ``score`` (float32, TES or PCS per config, **raw units**), ``tes`` and
``pcs`` (float32, raw). GDLT/CoFInAl divide the label by 25 (:data:`OFFICIAL_SCORE_DIVISOR`)
on the method side; it is not applied here.

A label row that does not parse (wrong column count, non-numeric or non-finite score, a
repeated name) is a :class:`BadSampleError` naming the label file and line; a missing or
malformed ``.npy``, one naming the sample and the file.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from tfds_builders.rhythmic_gymnastics.rhythmic_gymnastics_dataset_builder import (
    OFFICIAL_SCORE_DIVISOR,
    ClipFeatureBuilder,
    ClipFeatureConfig,
)

__all__ = ["Builder", "OFFICIAL_SCORE_DIVISOR", "MANUAL_DOWNLOAD_INSTRUCTIONS"]

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download the Fis-V VST features and label files from the GDLT repository
(https://github.com/xuangch/CVPR22_GDLT, README "Features", 23-04-10 update: OneDrive
https://1drv.ms/u/s!AqXkt0Mw7p9llWEihc533CB87U5P?e=EadhCo), unzip, and pass the folder holding
the label files (or its parent) as --manual_dir. Expected layout:

  <root>/
    swintx_avg_fps25_clip32/<name>.npy   (num_clips x 1024 float features, one file per video)
    train.txt                            (header line, then: name TES PCS)
    test.txt
"""


class Builder(ClipFeatureBuilder):
    """Fis-V: VST clip features of figure-skating programs with TES and PCS."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: GDLT's VST features and label files."}
    BUILDER_CONFIGS = [
        ClipFeatureConfig(name=t.lower(), target=t, description=f"Fis-V, score = {t}")
        for t in ("TES", "PCS")
    ]
    COLUMNS = ["TES", "PCS"]
    ROOT_NAMES = {"fisv"}
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    HOMEPAGE = "https://github.com/xuangch/CVPR22_GDLT"
    CITATION = """@article{xu2019learning,
  title={Learning to Score Figure Skating Sport Videos},
  author={Xu, Chengming and Fu, Yanwei and Zhang, Bing and Chen, Zitian and Jiang, Yu-Gang and Xue, Xiangyang},
  journal={IEEE TCSVT}, year={2019}}"""

    def label_features(self):
        return {
            "tes": tfds.features.Scalar(dtype=np.float32),
            "pcs": tfds.features.Scalar(dtype=np.float32),
        }

    def labels(self, name, values, where):
        return {"tes": np.float32(values["TES"]), "pcs": np.float32(values["PCS"])}

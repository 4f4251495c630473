"""Certified L2 robustness of randomized smoothing (Cohen, Rosenfeld and Kolter, ICML 2019).

- :func:`certify` / :func:`predict`: CERTIFY and PREDICT on a batch of inputs (:mod:`.core`);
- :func:`certify_examples` / :func:`certify_run`: per-example rows on disk, resumable like
  ``ciiv eval``, a summary with the certified accuracy curve and its plot (:mod:`.run`);
- :mod:`.stats`: Clopper-Pearson bounds and the binomial test, in float64 without scipy.
"""

from .core import ABSTAIN, Certification, SmoothedPrediction, base_classifier, certify, predict
from .run import CertifyResult, certify_examples, certify_run
from .stats import binomial_test_half, clopper_pearson, clopper_pearson_lower

__all__ = [
    "ABSTAIN",
    "Certification",
    "CertifyResult",
    "SmoothedPrediction",
    "base_classifier",
    "binomial_test_half",
    "certify",
    "certify_examples",
    "certify_run",
    "clopper_pearson",
    "clopper_pearson_lower",
    "predict",
]

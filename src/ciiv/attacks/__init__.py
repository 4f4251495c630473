"""Attacks: threat models, one gradient loop (FGSM/PGD/EOT/BPDA/adaptive), C&W, SPSA, noise,
AutoAttack adapters and transfer, all behind one registry.

    attack = create_attack("pgd", model, eps="8/255", steps=10, eot=8, bpda="identity")
    x_adv = attack(x, y)        # detached, in [0, 1], inside the ball; model modes restored
    attack.forward_passes       # images forwarded through the model so far
    attack.settings()           # every hyper-parameter (JSON-serialisable)
"""

from .base import (
    Attack,
    bpda_context,
    default_max_batch,
    independent_draws,
    inputs_checked_once,
    preserve_mode,
)
from .cw import CarliniWagnerL2
from .external import APGDCE, AutoAttack, Square
from .gradient import DEFAULT_EPS, FGSM, PGD, GradientEstimate
from .noise import GaussianNoise, RandomSearch, UniformNoise
from .objectives import choose_targets, margin
from .registry import (
    attack_class,
    check_attack_dependencies,
    create_attack,
    list_attacks,
    register_attack,
)
from .spsa import SPSA
from .threat import L2Threat, LinfThreat, ThreatModel, get_threat_model, parse_eps
from .transfer import Transfer

__all__ = [
    "APGDCE",
    "DEFAULT_EPS",
    "FGSM",
    "PGD",
    "SPSA",
    "Attack",
    "AutoAttack",
    "CarliniWagnerL2",
    "GaussianNoise",
    "GradientEstimate",
    "L2Threat",
    "LinfThreat",
    "RandomSearch",
    "Square",
    "ThreatModel",
    "Transfer",
    "UniformNoise",
    "attack_class",
    "bpda_context",
    "check_attack_dependencies",
    "choose_targets",
    "create_attack",
    "default_max_batch",
    "get_threat_model",
    "independent_draws",
    "inputs_checked_once",
    "list_attacks",
    "margin",
    "parse_eps",
    "preserve_mode",
    "register_attack",
]

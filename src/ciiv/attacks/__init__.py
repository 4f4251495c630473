"""Attacks: threat models, one gradient loop (FGSM/PGD/EOT/BPDA/adaptive), C&W, SPSA, noise,
AutoAttack adapters and transfer, all behind one registry.

    attack = create_attack("pgd", model, eps="8/255", steps=10, eot=8, bpda="identity")
    x_adv = attack(x, y)        # detached, in [0, 1], inside the ball (checked); modes restored
    attack.forward_passes       # images forwarded through the model so far
    attack.settings()           # every hyper-parameter (JSON-serialisable)
"""

from .base import (
    Attack,
    AttackContractError,
    default_max_batch,
    inputs_checked_once,
    preserve_mode,
)
from .cw import CarliniWagnerL2
from .draws import (
    RowVerdict,
    assume_rows,
    declared_rows,
    draw_calls,
    draw_layout,
    independent_draws,
    known_rows,
    measure_rows,
    row_verdict,
    rows_independent,
)
from .external import APGDCE, AutoAttack, Square
from .gradient import FGSM, PGD, GradientEstimate
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
from .threat import (
    L2Threat,
    LinfThreat,
    ThreatModel,
    default_eps,
    get_threat_model,
    parse_eps,
)
from .transfer import Transfer

__all__ = [
    "APGDCE",
    "FGSM",
    "PGD",
    "SPSA",
    "Attack",
    "AttackContractError",
    "AutoAttack",
    "CarliniWagnerL2",
    "GaussianNoise",
    "GradientEstimate",
    "L2Threat",
    "LinfThreat",
    "RandomSearch",
    "RowVerdict",
    "Square",
    "ThreatModel",
    "Transfer",
    "UniformNoise",
    "assume_rows",
    "attack_class",
    "check_attack_dependencies",
    "choose_targets",
    "create_attack",
    "declared_rows",
    "default_eps",
    "default_max_batch",
    "draw_calls",
    "draw_layout",
    "get_threat_model",
    "independent_draws",
    "inputs_checked_once",
    "known_rows",
    "list_attacks",
    "margin",
    "measure_rows",
    "parse_eps",
    "preserve_mode",
    "register_attack",
    "row_verdict",
    "rows_independent",
]

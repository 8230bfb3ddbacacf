"""Pure logic of regstate: the fold, health diagnosis, replay. No Faust, no Kafka, no clock."""

from processors.fold import Folded, apply, fold_event
from processors.outcomes import Outcome
from processors.policy import DEFAULT_POLICY, FoldPolicy

__all__ = ["DEFAULT_POLICY", "FoldPolicy", "Folded", "Outcome", "apply", "fold_event"]

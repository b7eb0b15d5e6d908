"""Former home of the classifier; kept so that ``from nips_adv.models.runtime import Classifier`` still works."""

from .classifier import PRECISIONS, Classifier, Member, cpu_has_bfloat16, parse_members

__all__ = ["PRECISIONS", "Classifier", "Member", "cpu_has_bfloat16", "parse_members"]

"""Cheap probes on cached encoder features, with no LLM: how much of each task the frozen features carry, and
how fast a small head learns it. A probe that learns in a few hundred cheap steps where the LLM path does not
puts the gap in the connector or the recipe, not in the features (`usam probe --help`)."""
from usam.probes.features import CachedFeatures, probe_labels
from usam.probes.heads import classification_probe, ctc_probe

__all__ = ["CachedFeatures", "probe_labels", "classification_probe", "ctc_probe"]

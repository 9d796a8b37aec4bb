"""Metrics: feature extractors, channel rules, FID/KID, paired counterfactual error."""

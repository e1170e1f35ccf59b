"""Measuring policies: side-by-side evaluation, accuracy-NFE frontiers, reveal orders, AUP and likelihoods."""

"""The lowest layer: typed configs, checkpoints, processes, metric tracking, the Hub mixin and optional
dependencies. Nothing here imports any other part of unmask."""

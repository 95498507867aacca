"""The search space: uniform/global sweeps, per-group bounds and widths, sensitivity and its allocation.

Everything a study knows before its first trial: how far each dependency group may be pruned, the widths it
may take, and the sweep records the search starts from.  Modules are imported directly (no re-exports), so
the pure parts (bounds, widths) load without torch.
"""

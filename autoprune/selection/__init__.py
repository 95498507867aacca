"""After the search: confirm and re-time the best candidates, export, finalize and apply the choice.

The architecture JSON (write, read, rebuild without a pickle), the study's artifacts, the final test and the
long final recovery.  Modules are imported directly (no re-exports), so importing this package loads
nothing heavy.
"""

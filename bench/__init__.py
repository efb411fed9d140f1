"""``make bench``: tidegate measured side by side with its baselines, in one run.

See ``docs/performance.md`` for the method, the results and where the time goes.
"""

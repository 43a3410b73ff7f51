"""What a run is asked to do: the frozen ``Config`` and its validation, YAML files read safely,
the ``innaudit init`` template, waivers, and durations as users write them.

Imports only :mod:`innaudit.core`.
"""

"""From measurements to a verdict: thresholds held in each metric's declared direction (gate),
baseline comparison, the diagnosis rules that explain a report, and the report's JSON form.

Imports only :mod:`innaudit.core` and :mod:`innaudit.config`.
"""

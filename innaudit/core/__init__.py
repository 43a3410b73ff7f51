"""The foundation every other layer imports: the exception tree, metric declarations, seeds,
the data domain, streaming error statistics, the result records (``Status``, ``AuditResult``,
``Report``) with their 95 % intervals, and a rank's share of a ``torchrun`` job.

Nothing here imports from another ``innaudit`` package.
"""

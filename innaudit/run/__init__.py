"""One run: a ``Job`` goes in (load, prepare data, probe), the cost plan sizes it to the budget,
the audits run one at a time inside one error boundary, a ``Report`` comes out; the isolated
child process runs the same path under ``--timeout`` / ``--max-memory``.
"""

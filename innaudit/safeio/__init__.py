"""Reading untrusted files: checkpoints and data arrays, never running code from them.

Every ``torch.load`` here is written out with ``weights_only=True`` (torch's restricted
unpickler); a static scan of the pickle names the globals a refused file wanted
(:mod:`~innaudit.safeio.pickle_scan`); a preflight bounds what a file may claim before anything
is allocated (:mod:`~innaudit.safeio.preflight`). Both the model loaders (:mod:`innaudit.loading`)
and the data sets (:mod:`innaudit.data`) read files only through this package.
"""

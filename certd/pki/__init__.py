"""The local PKI: keys, names, CSRs, certificates, CAs, chains and CRLs.

Pure functions over ``cryptography``: no I/O, no database, no event loop.
Parameters arrive as the models of :mod:`certd.pki.models`; errors are
:class:`certd.errors.PkiError` or :class:`certd.errors.ValidationError`.
"""

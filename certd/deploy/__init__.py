"""Getting certificates to where they are used: files, hooks, and events.

``files`` writes a certificate's PEM and PKCS#12 files atomically, ``hooks``
runs the commands that reload services, ``deployer`` ties both to the store
and retries, and ``events`` records what happened and tells listeners.
"""

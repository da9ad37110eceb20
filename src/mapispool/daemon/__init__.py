"""The spooler daemon (``mapispool serve``) and its local control socket.

``server`` runs the daemon and answers its socket with the operations of
``mapispool.app``; ``client`` is how a command reaches it (else ``app.LocalBackend`` runs
the same operations in process); ``attached`` is the Python API's client mode;
``protocol`` and ``trust`` are the wire format and the checks that the other end is ours.
"""

"""The SMTP listener of ``mapispool serve`` (``--smtp HOST:PORT`` or ``[listen] smtp``):
applications hand mail over SMTP and it is queued in the store like ``Session.submit``.

``settings`` is pure (the profile validates ``[listen]`` with it at load time); ``server``
runs the listener on the daemon's event loop. Nothing is imported here, so that loading a
profile does not pull in aiosmtpd.
"""

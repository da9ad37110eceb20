"""The spooler daemon (``mapispool serve``) and its local control socket.

``ops`` holds the operations every ``mapispool`` command asks for, written once against an
``AsyncSession``; the daemon runs them for clients on its socket (``server``), and the CLI
runs the same functions in-process when no daemon is running (``client`` decides which).
"""

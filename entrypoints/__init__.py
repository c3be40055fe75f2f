"""The edge: the `timeline` command and the process wiring (serve, worker, maintenance, migrate,
events). It imports the domain (`app`) and the worker (`fanout`); neither imports it back."""

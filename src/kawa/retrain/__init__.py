"""The loop: retrain, shadow, canary, then promote or roll back automatically (issue #15).

:mod:`kawa.retrain.policy` (validated policies) and :mod:`kawa.retrain.decide` (the pure state machine) hold
no I/O; :mod:`kawa.retrain.controller` is the one piece that acts on the world. See docs/loop.md.
"""

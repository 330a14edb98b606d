"""Rec-Distill. `recdistill.core` is the shared core every app imports; `recdistill.cli` and
`recdistill.demo` are the wiring on top of the apps (see the README's layout section)."""

__version__ = "0.1.0"

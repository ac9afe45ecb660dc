"""Alembic's script directory for the whole database (the request log and the workbench):
`env.py`, the revision template and `versions/`. Run it through `conductor_core.store.migrate`
(on open) or ``python -m conductor_core.store`` (by hand), never through an alembic.ini."""

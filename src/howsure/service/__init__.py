"""The review service: classify incoming items, auto-handle the confident ones under the
certified policy, queue the rest for people, and learn from their answers.

    store.py       ReviewStore: items, claims with leases, reviews, audit log, policies, tokens
    db.py          SQLAlchemy tables, engine set-up (SQLite WAL / PostgreSQL), Alembic upgrade
    migrations/    Alembic environment and named revisions
    app.py         FastAPI app: JSON API under /v1, review and stats pages
    batching.py    micro-batching of concurrent classify requests into shared forward passes
    drift.py       label-free drift check (PSI, KS) of live confidences against calibration
    feedback.py    recalibration from reviewed and audited items, export of labelled data

Nothing here imports torch at module import time; the backend is loaded when the app starts.
"""

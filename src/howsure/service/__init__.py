"""The review service: classify incoming items, auto-handle the confident ones under the
certified policy, queue the rest for people, and learn from their answers.

    store/         ReviewStore: items, claims with leases, reviews, audit log, policies, tokens
                   (one class per group of tables over StoreBase; records.py holds the records)
    db.py          SQLAlchemy tables (the schema the store queries), engine set-up, Alembic upgrade
    migrations/    Alembic environment and named revisions (frozen history, checked against db.py)
    app.py         create_app: the FastAPI factory (middleware, lifespan, routers)
    state.py       Service: what the routes share (store, backend, batchers, settings)
    schemas.py     the JSON API's pydantic models;  errors.py  errors -> HTTP status and JSON body
    routers/       the routes by concern: classify, items, queue, stats, policies, health, pages
    audit.py       audit rates, the weighted audited accuracy and its Clopper-Pearson interval
    batching.py    micro-batching of concurrent classify requests into shared forward passes
    drift.py       label-free drift check (PSI, KS) of live confidences against calibration
    feedback.py    recalibration from reviewed and audited items, export of labelled data

Nothing here imports torch at module import time; the backend is loaded when the app starts.
"""

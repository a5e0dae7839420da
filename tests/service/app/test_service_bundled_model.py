"""The service on the real bundled model: what it answers is exactly what offline scoring and
the stored policy give, and clear texts get the right label."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = [pytest.mark.model, pytest.mark.timeout(300)]

TEXTS = {
    "A wonderful, moving and beautifully acted film. I loved every minute of it.": "positive",
    "Terrible: boring, stupid and far too long. I hated it.": "negative",
}


def test_classify_on_the_bundled_model(bundled_backend, tmp_path):
    from fastapi.testclient import TestClient

    from howsure.decisions.policy_certification import certify_policy
    from howsure.service.app import create_app
    from howsure.service.store import ReviewStore
    from howsure.core.task import load_task

    task = load_task("sentiment")  # labels positive, negative: not alphabetical
    rng = np.random.default_rng(0)
    raw = rng.dirichlet([1.0, 1.0], size=400)
    truth = [task.label_names[int(np.argmax(row))] if rng.random() < 0.9 else task.label_names[int(np.argmin(row))]
             for row in raw]
    policy = certify_policy(truth, raw, target_accuracy=0.8, delta=0.1, task=task, model_id=bundled_backend.model_id)
    with ReviewStore(str(tmp_path / "reviews.db")) as store:
        record = store.add_policy(policy.to_dict(), actor="test")
        store.add_user("shop", "client", actor="test")
        token = store.create_token("shop", actor="test")
        with TestClient(create_app(store, bundled_backend, audit_rate=0.0)) as client:
            response = client.post("/v1/classify", json={"items": [{"text": t} for t in TEXTS]},
                                   headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.text
        items = response.json()["items"]
        offline = bundled_backend.label_scores(task, list(TEXTS))
        decided = record.to_policy().decide(np.vstack([s.probabilities for s in offline]))
        for item, expected, truth_label in zip(items, decided, TEXTS.values()):
            assert item["label"] == expected.label == truth_label
            assert item["confidence"] == pytest.approx(expected.confidence, abs=1e-6)
            assert item["decision"] == expected.decision
            assert store.get_item(item["item_id"]).raw_probabilities.keys() == {"positive", "negative"}

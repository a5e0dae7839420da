"""Basic round trip of the review store on both back ends (fuller tests follow)."""


def test_smoke(store, policy_dict, new_item):
    p = store.add_policy(policy_dict, actor="admin")
    assert p.version == 1 and p.active
    items = store.add_items([new_item(p, confidence=0.6, request_id="r1"), new_item(p, confidence=0.95)], actor="c")
    assert [i.status for i in items] == ["queued", "done"]
    again = store.add_items([new_item(p, confidence=0.6, request_id="r1")], actor="c")
    assert again[0].id == items[0].id
    c = store.claim_next("alice")
    assert c.id == items[0].id and c.claimed_by == "alice"
    r = store.submit_review(c.id, "alice", "positive")
    assert not r.agreed_with_model


    store.add_user("bob", "reviewer", actor="admin")
    t = store.create_token("bob", actor="admin")
    assert store.authenticate(t).name == "bob"


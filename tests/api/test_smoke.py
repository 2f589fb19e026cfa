def test_smoke(api, client):
    r = api.post("/v1/users", json={"userId": "u1", "email": "A@Example.com", "phone": "(202) 555-0143", "attributes": {"plan": "pro"}})
    assert r.status_code == 200, r.json
    r = api.post("/v1/events", json=[{"name": "signup", "userId": "u1"}, {"name": "x", "anonymousId": "a1", "messageId": "m1"}, {"name": "x", "anonymousId": "a1", "messageId": "m1"}])
    assert r.status_code == 202, r.json
    print(r.json)
    r = api.get("/v1/users/u1")
    print(r.json)
    assert r.status_code == 200
    r = api.get("/v1/users")
    print(r.json)
    r = client.get("/openapi.json")
    assert r.status_code == 200

"""The service's routes, one module per concern: classify, items, queue, stats, policies, health
(the JSON API) and pages (the server-rendered review pages)."""

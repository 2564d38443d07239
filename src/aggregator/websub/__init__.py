"""WebSub (W3C Recommendation, 2018): the aggregator as a subscriber.

- ``protocol``: pure rules: requests, signatures, verification answers, lease and retry
  times, what a subscription needs next;
- ``subscriber``: subscribes, renews and unsubscribes at the hubs (outbound requests go
  through ``fetch`` and its address guard), run by the daemon (and ``run --once``);
- ``receiver``: the hub's verification requests and content deliveries, a delivery fed
  through the pipeline's parse, dedup and store path;
- ``routes``: the HTTP face's only routes that are not read-only, ``/websub/{id}``.

See docs/push.md.
"""

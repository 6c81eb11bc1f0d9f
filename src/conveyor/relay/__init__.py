"""``conveyor relay``: a caching flag relay run next to applications.

The relay is what ends the 429s: SDKs and OFREP clients talk to it, never to the server,
so the server sees one sync stream and a poll per sync interval per relay, whatever the
number of applications and evaluations behind it. It

* syncs each environment's flag set from the server: a Server-Sent Events stream for
  pushes, and conditional GETs (``If-None-Match`` -> 304) when the stream is down
  (``upstream.py``);
* keeps the last set it saw on disk (``cache.py``: one 0600 file per environment, the
  published document only — the relay's token is never written), so it starts and keeps
  serving while the server is down or restarting;
* serves SDKs the same document with the same ETag, evaluates for OFREP clients
  (``POST /ofrep/v1/evaluate/flags[/{key}]``), and aggregates the exposures and outcomes
  SDKs report before forwarding them upstream once per interval (``app.py``).

It depends on the core (evaluation) and nothing of the server's: it is a separate process
that may run on another host, and the import contracts say so.
"""

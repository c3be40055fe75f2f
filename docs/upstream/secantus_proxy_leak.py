"""Reproduction: every WiredTiger session and cursor SecantusDB opens and closes leaves its Python
proxy object alive for good (no Python referrer; gc.collect() does not free them), so a server
doing multi-document transactions grows by ~200 bytes per cursor and ~80 per session.

Run: .venv/bin/python docs/upstream/secantus_proxy_leak.py (SecantusDB 0.7.0b3, the `embedded` extra).
For a SecantusDB issue (docs/benchmarks.md, "The database server's memory"); not part of the service.
"""

import collections
import gc
import tempfile

import wiredtiger  # the binding bundled in the secantusdb wheel
from secantus.storage import Storage


def proxies() -> collections.Counter[str]:
    return collections.Counter(
        type(o).__name__ for o in gc.get_objects() if type(o).__name__ in ("Session", "Cursor")
    )


def referrers_of_a_cursor() -> list[str]:
    objs = [o for o in gc.get_objects() if type(o).__name__ == "Cursor"]
    refs = [r for r in gc.get_referrers(objs[0]) if r is not objs]
    return [type(r).__name__ for r in refs]


def rss_kib() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


with tempfile.TemporaryDirectory() as tmp:
    # 1. The binding alone: open, use and close a session and a cursor.
    conn = wiredtiger.wiredtiger_open(tmp, "create,cache_size=64M")
    s = conn.open_session()
    s.create("table:x", "key_format=S,value_format=S")
    s.close()
    gc.collect()
    before = proxies()
    for i in range(10_000):
        s = conn.open_session()
        c = s.open_cursor("table:x")
        c[f"k{i}"] = "v"
        c.close()
        s.close()
    del s, c
    gc.collect()
    after = proxies()
    print("wiredtiger binding, 10,000 closed sessions+cursors: live proxies", dict(after - before))
    print("  Python referrers of one of them:", referrers_of_a_cursor())
    conn.close()

with tempfile.TemporaryDirectory() as tmp:
    # 2. SecantusDB's Storage: a multi-document transaction (one dedicated WT session and a
    #    cursor per table it touches), as the server runs for every client transaction.
    st = Storage(tmp)
    st.insert("db", "c", [{"_id": 0, "n": 0}])
    gc.collect()
    before, rss0 = proxies(), rss_kib()
    for i in range(1, 5_001):
        h = st.begin_user_transaction()
        with st.use_user_transaction(h):
            st.insert("db", "c", [{"_id": i, "n": i}])
        st.commit_user_transaction(h)
    gc.collect()
    print(
        "secantus Storage, 5,000 committed transactions: live proxies",
        dict(proxies() - before),
        f"RSS +{(rss_kib() - rss0) / 1024:.1f} MiB",
    )
    st.close()

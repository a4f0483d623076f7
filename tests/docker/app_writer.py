"""The app in the Docker scenario: writes files and commits to SQLite continuously, as the uid
it runs as, with umask 077 (so every file is 0600), until stopped."""

import json
import os
import signal
import sqlite3
import sys
import time

os.umask(0o077)
stop = False


def on_term(*_):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_term)
for d in ("/data/storage/docs", "/data/auth", "/data/db"):
    os.makedirs(d, exist_ok=True)
with open("/data/auth/tokens.json", "w") as f:
    json.dump({"token": "t0"}, f)
db = sqlite3.connect("/data/db/app.db", isolation_level=None, timeout=60)
db.execute("PRAGMA journal_mode=wal")
db.execute("CREATE TABLE IF NOT EXISTS log(seq INTEGER PRIMARY KEY, at REAL)")
n = db.execute("SELECT coalesce(max(seq), 0) FROM log").fetchone()[0]
print("app writer started", flush=True)
while not stop:
    n += 1
    db.execute("BEGIN IMMEDIATE")
    db.execute("INSERT INTO log VALUES(?, ?)", (n, time.time()))
    db.execute("COMMIT")
    if n % 20 == 0:
        with open(f"/data/storage/docs/doc{n % 500}.json", "w") as f:
            json.dump({"n": n}, f)
    time.sleep(0.01)
db.close()
sys.exit(0)

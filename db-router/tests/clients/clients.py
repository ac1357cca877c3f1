"""The client matrix's steps for Python's drivers (db-router/tests/clients.rs runs this).

Usage: clients.py DRIVER HOST PORT USER PASSWORD DATABASE PREFIX CSV
DRIVER: pymysql, connector-pure or connector-c (mysql-connector-python; its parameter steps
use server-side prepares, each EXECUTE after a COM_STMT_RESET, and the pure one sends the blob
with COM_STMT_SEND_LONG_DATA). Prints one line per step, `step<TAB>result[<TAB>detail]`; the test
compares `result` between a run straight to the primary and one through the router, and shows
`detail` (an error's message) only. Before the last step it prints `kill-ready<TAB>ID` (its
connection id on the primary) and waits for a line on stdin: the test kills that connection
meanwhile.
"""

import datetime
import hashlib
import io
import json
import sys

DRIVER, HOST, PORT, USER, PASSWORD, DATABASE, PREFIX, CSV = sys.argv[1:9]
UNICODE = "h\u00e9llo w\u00f6rld \u2713 \u65e5\u672c \U0001f42c"
BLOB = bytes((i * 31 + 7) % 256 for i in range(100 * 1024))
JSON_DOC = '{"a": [1, 2, {"b": "\u00fc"}], "n": null}'

if DRIVER == "pymysql":
    import pymysql

    ERRORS = (pymysql.err.MySQLError,)
else:
    import mysql.connector

    ERRORS = (mysql.connector.Error,)


def connect(**extra):
    common = dict(host=HOST, port=int(PORT), user=USER, password=PASSWORD,
                  database=DATABASE, autocommit=True, charset="utf8mb4")
    if DRIVER == "pymysql":
        return pymysql.connect(connect_timeout=10, read_timeout=20, **common, **extra)
    return mysql.connector.connect(use_pure=DRIVER == "connector-pure", connection_timeout=10,
                                   **common, **extra)


def code(error):
    if DRIVER == "pymysql":
        return error.args[0] if error.args else "?"
    return error.errno


def cursor(conn, prepared=False):
    """A cursor; a server-side prepared one for mysql-connector-python when `prepared`."""
    if DRIVER != "pymysql" and prepared:
        return conn.cursor(prepared=True)
    return conn.cursor()


def text(value):
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode()
    return value


def begin(conn):
    if DRIVER == "pymysql":
        conn.begin()
    else:
        conn.start_transaction()


def one(conn, sql, params=(), prepared=False):
    cur = cursor(conn, prepared)
    cur.execute(sql, params)
    row = cur.fetchone()
    cur.close()
    return row


def run(conn, sql, params=(), prepared=False):
    cur = cursor(conn, prepared)
    cur.execute(sql, params)
    cur.close()


def setup(conn):
    for table in ("rows", "tx", "batch", "load"):
        run(conn, f"DROP TABLE IF EXISTS {PREFIX}_{table}")
    run(conn, f"CREATE TABLE {PREFIX}_rows (id INT PRIMARY KEY, s VARCHAR(100), n INT,"
              " b LONGBLOB, d DATETIME(6), j JSON) CHARSET utf8mb4")
    for table in ("tx", "batch", "load"):
        run(conn, f"CREATE TABLE {PREFIX}_{table} (id INT PRIMARY KEY, n INT)")
    return "ok"


def params(conn):
    run(conn, f"INSERT INTO {PREFIX}_rows (id, s, n) VALUES (%s, %s, %s)", (1, UNICODE, None),
        prepared=True)
    s, n = one(conn, f"SELECT s, n FROM {PREFIX}_rows WHERE id = %s", (1,), prepared=True)
    return f"{text(s).encode().hex()} {'NULL' if n is None else n}"


def blob(conn):
    # A file object is sent with COM_STMT_SEND_LONG_DATA (the C extension cannot: bytes).
    value = io.BytesIO(BLOB) if DRIVER == "connector-pure" else BLOB
    run(conn, f"INSERT INTO {PREFIX}_rows (id, b) VALUES (%s, %s)", (2, value), prepared=True)
    (b,) = one(conn, f"SELECT b FROM {PREFIX}_rows WHERE id = %s", (2,), prepared=True)
    return f"{len(b)} {hashlib.sha256(bytes(b)).hexdigest()}"


def datetime_step(conn):
    value = datetime.datetime(2026, 12, 6, 1, 2, 3, 456789)
    run(conn, f"INSERT INTO {PREFIX}_rows (id, d) VALUES (%s, %s)", (3, value), prepared=True)
    (d,) = one(conn, f"SELECT d FROM {PREFIX}_rows WHERE id = %s", (3,), prepared=True)
    return d.isoformat(sep=" ")


def json_step(conn):
    run(conn, f"INSERT INTO {PREFIX}_rows (id, j) VALUES (%s, %s)", (4, JSON_DOC), prepared=True)
    j, b = one(conn, f"SELECT j, JSON_VALUE(j, '$.a[2].b') FROM {PREFIX}_rows WHERE id = %s",
               (4,), prepared=True)
    doc = json.loads(text(j))
    return f"{json.dumps(doc, sort_keys=True)} {text(b).encode().hex()}"


def transaction(conn):
    begin(conn)
    run(conn, f"INSERT INTO {PREFIX}_tx VALUES (1, 1)")
    conn.rollback()
    begin(conn)
    run(conn, f"INSERT INTO {PREFIX}_tx VALUES (2, 2)")
    conn.commit()
    cur = cursor(conn)
    cur.execute(f"SELECT id FROM {PREFIX}_tx ORDER BY id")
    ids = [str(row[0]) for row in cur.fetchall()]
    cur.close()
    return ",".join(ids)


def batch(conn):
    cur = cursor(conn)
    cur.executemany(f"INSERT INTO {PREFIX}_batch (id, n) VALUES (%s, %s)",
                    [(i, i * 3) for i in range(1, 1001)])
    cur.close()
    count, total = one(conn, f"SELECT COUNT(*), SUM(n) FROM {PREFIX}_batch")
    return f"{count} {total}"


def unbuffered(conn):
    if DRIVER == "pymysql":
        cur = conn.cursor(pymysql.cursors.SSCursor)
    else:
        cur = conn.cursor(buffered=False)
    cur.execute(f"SELECT id, n FROM {PREFIX}_batch ORDER BY id")
    count = total = 0
    for _, n in cur:
        count += 1
        total += n
    cur.close()
    return f"{count} {total}"


def duplicate_key(conn):
    try:
        run(conn, f"INSERT INTO {PREFIX}_batch (id, n) VALUES (%s, %s)", (1, 0), prepared=True)
        return "no error"
    except ERRORS as e:
        first = f"error {code(e)}"
    (one_,) = one(conn, "SELECT 1")
    return f"{first} then {one_}"


# The compression step's statement: a long parameter in, a long value out.
COMPRESSED_SQL = "SELECT LENGTH(%s), MD5(%s), REPEAT(%s, 20000)"


def compression(_conn):
    if DRIVER == "pymysql":
        return "n/a (PyMySQL has no compression)"
    conn = connect(compress=True)
    # 110 KB up and 140 KB back: frames both ways, deflated and split.
    big = "compressed " * 10000
    length, digest, back = one(conn, COMPRESSED_SQL, (big, big, "foobar "))
    conn.close()
    return f"{length} {text(digest)} {len(text(back))}"


def load_local(_conn):
    if DRIVER == "pymysql":
        conn = connect(local_infile=True)
    else:
        conn = connect(allow_local_infile=True)
    run(conn, f"LOAD DATA LOCAL INFILE '{CSV}' INTO TABLE {PREFIX}_load FIELDS TERMINATED BY ','")
    count, total = one(conn, f"SELECT COUNT(*), SUM(n) FROM {PREFIX}_load")
    conn.close()
    return f"{count} {total}"


def killed(conn):
    begin(conn)
    # The cursor is made first: mysql-connector-python checks the connection when making one.
    cur = cursor(conn)
    cur.execute("SELECT CONNECTION_ID()")
    (connection_id,) = cur.fetchone()
    print(f"kill-ready\t{connection_id}", flush=True)
    sys.stdin.readline()
    cur.execute(f"SELECT COUNT(*) FROM {PREFIX}_batch")
    cur.fetchall()
    return "no error"


STEPS = [("setup", setup), ("params", params), ("blob", blob), ("datetime", datetime_step),
         ("json", json_step), ("transaction", transaction), ("batch", batch),
         ("unbuffered", unbuffered), ("duplicate_key", duplicate_key),
         ("compression", compression), ("load_local", load_local), ("killed", killed)]

conn = None
for name, step in STEPS:
    try:
        if conn is None:
            conn = connect()
        result = step(conn)
        print(f"{name}\t{result}", flush=True)
    except ERRORS as e:
        print(f"{name}\terror {code(e)}\t{' '.join(str(e).split())}", flush=True)
        try:
            conn.close()
        except Exception:  # the connection may be gone already: a fresh one follows
            pass
        conn = None

#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora (deploy/fuzz.sh runs it; nothing here is committed).

- frontend: real client traffic. A small recording server on 127.0.0.1 speaks
  just enough of the PostgreSQL protocol (cleartext password, then a canned
  answer to every message) for psql and psycopg to run sessions against it:
  simple and extended queries, pipelines, binary parameters, COPY FROM STDIN,
  a cancel request. Each connection's bytes, as the client sent them, are a
  seed (in the target's framing: a mode byte, 1 = startup first, and a read
  size byte), and so are their post-startup bytes alone.
- shape: SELECT statements of PostgreSQL's regression SQL (shared/corpus), if
  present, and a few of pgbench's.
- masking, segment: structured inputs, which the fuzzer builds from nothing.

Usage: seeds.py CORPUS_DIR
"""

import os
import re
import socket
import struct
import subprocess
import sys
import threading

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def msg(tag, body=b""):
    return tag + struct.pack("!I", len(body) + 4) + body


def read_exact(sock, n, log):
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise EOFError
        out += chunk
    log.append(out)
    return out


READY = msg(b"Z", b"I")


def serve_connection(sock, sessions):
    log = []
    sessions.append(log)
    try:
        # Startup phase: encryption requests, then StartupMessage or CancelRequest.
        while True:
            length = struct.unpack("!I", read_exact(sock, 4, log))[0]
            body = read_exact(sock, length - 4, log)
            code = struct.unpack("!I", body[:4])[0]
            if code in (80877103, 80877104):  # SSLRequest, GSSENCRequest
                sock.sendall(b"N")
                continue
            if code == 80877102:  # CancelRequest
                return
            break
        sock.sendall(msg(b"R", struct.pack("!I", 3)))  # cleartext password
        tag = read_exact(sock, 1, log)
        length = struct.unpack("!I", read_exact(sock, 4, log))[0]
        read_exact(sock, length - 4, log)
        out = msg(b"R", struct.pack("!I", 0))
        for k, v in [("server_version", "15.0"), ("server_encoding", "UTF8"),
                     ("client_encoding", "UTF8"), ("DateStyle", "ISO, MDY"),
                     ("integer_datetimes", "on"), ("standard_conforming_strings", "on")]:
            out += msg(b"S", k.encode() + b"\0" + v.encode() + b"\0")
        out += msg(b"K", struct.pack("!II", 4242, 1234))
        sock.sendall(out + READY)
        copying = False
        while True:
            tag = read_exact(sock, 1, log)
            length = struct.unpack("!I", read_exact(sock, 4, log))[0]
            body = read_exact(sock, length - 4, log)
            if tag == b"X":
                return
            if tag == b"Q":
                sql = body.rstrip(b"\0").decode(errors="replace")
                if re.search(r"\bcopy\b.*\bfrom\s+stdin", sql, re.I | re.S):
                    sock.sendall(msg(b"G", b"\0\0\0"))
                    copying = True
                elif sql.strip():
                    sock.sendall(msg(b"C", b"SELECT 0\0") + READY)
                else:
                    sock.sendall(msg(b"I") + READY)
            elif tag in (b"c", b"f") and copying:
                copying = False
                sock.sendall(msg(b"C", b"COPY 0\0") + READY)
            elif tag == b"P":
                sock.sendall(msg(b"1"))
            elif tag == b"B":
                sock.sendall(msg(b"2"))
            elif tag == b"D":
                if body[:1] == b"S":
                    sock.sendall(msg(b"t", b"\0\0") + msg(b"n"))
                else:
                    sock.sendall(msg(b"n"))
            elif tag == b"E":
                sock.sendall(msg(b"C", b"SELECT 0\0"))
            elif tag == b"C":
                sock.sendall(msg(b"3"))
            elif tag == b"S":
                sock.sendall(READY)
    except (EOFError, ConnectionError, OSError):
        pass
    finally:
        sock.close()


PSYCOPG_SESSION = """
import sys
try:
    import psycopg
except ImportError:
    sys.exit(0)
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    conn.execute("select * from t where a = %s and b = %s", (42, "x"))
    conn.execute("select %s::bytea", (b"\\x00\\x01",), binary=True)
    conn.execute("select * from t where id = %s", (1,), prepare=True)
    with conn.cursor() as cur:
        cur.executemany("insert into t (a, b) values (%s, %s)", [(1, "a"), (2, None)])
        with cur.copy("copy t (a, b) from stdin") as copy:
            copy.write_row((1, "one"))
            copy.write_row((2, None))
    conn.cancel()
"""


def record_traffic():
    """Runs real clients against the recorder; returns each connection's bytes."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    sessions = []

    def accept():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve_connection, args=(conn, sessions), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    env = dict(os.environ, PGPASSWORD="eyJhbGciOiJFUzI1NiJ9.e30.c2ln", PGCONNECT_TIMEOUT="5")
    conninfo = f"host=127.0.0.1 port={port} user=reporting dbname=clinic application_name=ci"
    psql = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=0"]
    for sslmode in ("prefer", "disable"):
        for command in ("select 1", "select * from clinic.patients where id = 7 and name = 'x'",
                        "begin; update t set a = a + 1 where id = 3; commit"):
            subprocess.run(psql + [f"{conninfo} sslmode={sslmode}", "-c", command], env=env,
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=30, check=False)
    subprocess.run(psql + [f"{conninfo} sslmode=disable", "-c", "\\copy t (a, b) from stdin"], env=env,
                   input=b"1\tone\n2\t\\N\n", capture_output=True, timeout=30, check=False)
    # psycopg (libpq underneath) in a process of its own: its cancel holds the
    # interpreter lock while it waits for this server to answer.
    subprocess.run([sys.executable, "-c", PSYCOPG_SESSION, f"{conninfo} sslmode=disable"], env=env,
                   capture_output=True, timeout=60, check=False)
    listener.close()
    return [b"".join(log) for log in sessions if log]


def startup_end(stream):
    """Offset of the first byte after the password message, or None."""
    at = 0
    while at + 8 <= len(stream):
        length, code = struct.unpack("!II", stream[at:at + 8])
        at += length
        if code not in (80877103, 80877104):
            break
    if stream[at:at + 1] != b"p":
        return None
    return at + 1 + struct.unpack("!I", stream[at + 1:at + 5])[0]


def select_statements():
    out = ["SELECT abalance FROM pgbench_accounts WHERE aid = 48213;",
           "select a, b from t where c = $1 and d = 'x' limit 10",
           'select "Mixed".x::int, f(1.5e3, \'y\') from "Mixed" order by 1']
    for base in (os.path.join(REPO, "..", "shared"), os.path.join(REPO, "..", "..", "shared")):
        regress = os.path.join(base, "corpus", "postgres-regress")
        if not os.path.isdir(regress):
            continue
        for name in sorted(os.listdir(regress)):
            if not name.endswith(".sql"):
                continue
            with open(os.path.join(regress, name), encoding="utf-8", errors="replace") as f:
                text = f.read()
            for stmt in re.split(r";\s*\n", text):
                stmt = "\n".join(l for l in stmt.splitlines() if not l.lstrip().startswith("--")).strip()
                if re.match(r"select\b", stmt, re.I) and len(stmt) < 2000:
                    out.append(stmt)
        break
    return out


def write(directory, name, data):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)


def main():
    corpus = sys.argv[1]
    streams = record_traffic()
    for i, s in enumerate(streams):
        write(os.path.join(corpus, "frontend"), f"session-{i:02}", b"\x01\xff" + s)
        write(os.path.join(corpus, "frontend"), f"session-{i:02}-small-reads", b"\x01\x06" + s)
        end = startup_end(s)
        if end is not None and end < len(s):
            write(os.path.join(corpus, "frontend"), f"relay-{i:02}", b"\x00\xff" + s[end:])
    statements = select_statements()
    for i, sql in enumerate(statements):
        write(os.path.join(corpus, "shape"), f"select-{i:05}", sql.encode())
    for target in ("masking", "segment"):
        os.makedirs(os.path.join(corpus, target), exist_ok=True)
    print(f"seeds: {len(streams)} client sessions recorded, {len(statements)} SELECT statements")


if __name__ == "__main__":
    main()

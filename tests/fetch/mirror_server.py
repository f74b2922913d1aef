#!/usr/bin/env python3
"""A loopback HTTP(S) server for the fetch tests and bench/fetch.

Serves the files under --root (an Alpine-like mirror tree) on 127.0.0.1 with a
free port written to <state>/port once it listens. Supports Range (bytes=N- and
N-M), If-Range (against the ETag or Last-Modified it sends), and switchable
faults read from <state>/faults.json at every request, e.g.

  [{"path": "tar.gz", "kind": "cut", "n": 100000, "times": 1}]

path: a substring of the request path ("*" = any); times: how many requests it
affects (-1 = all). Kinds:
  status    answer with HTTP status n and no body
  cut       send the headers and only n body bytes, then drop the connection
  badlen    announce n more bytes than the body has, send the body, close
  norange   ignore the Range header (answer 200 with the whole file)
  trickle   send n bytes every 0.5 s
  flip      alter the byte at offset n of the file
  endless   answer 200 without Content-Length (the body ends when the connection
            closes) and send the file followed by filler bytes until the client
            hangs up
  redirect  answer with status n (default 302) and "Location: <to>", e.g.
            {"path": "tar.gz", "kind": "redirect", "to": "https://127.0.0.1:PORT/x"}
With --autoindex nginx|apache|lighttpd a folder is answered with the HTML
listing that server's autoindex module writes (apache's with absolute hrefs);
without it (or "none") a folder is 404, as on a mirror that lists nothing.
Every response is logged to <state>/log.jsonl: path, range, status, bytes sent, the client's port.
<state>/active holds the number of requests being handled (0 = the log is complete).
"""
import argparse
import email.utils
import http.server
import json
import os
import socket
import ssl
import sys
import threading
import time
import urllib.parse

LOCK = threading.Lock()
ACTIVE = [0]


def set_active(state, delta):
    with LOCK:
        ACTIVE[0] += delta
        tmp = os.path.join(state, "active.tmp")
        with open(tmp, "w") as f:
            f.write(str(ACTIVE[0]))
        os.replace(tmp, os.path.join(state, "active"))


def take_fault(state, path):
    """The first active fault matching `path`, consuming one of its `times`."""
    fpath = os.path.join(state, "faults.json")
    with LOCK:
        try:
            with open(fpath) as f:
                faults = json.load(f)
        except (FileNotFoundError, ValueError):
            return None
        for fault in faults:
            match = fault.get("path", "*")
            if match != "*" and match not in path:
                continue
            times = fault.get("times", 1)
            if times == 0:
                continue
            if times > 0:
                fault["times"] = times - 1
                tmp = fpath + ".tmp"
                with open(tmp, "w") as f:
                    json.dump(faults, f)
                os.replace(tmp, fpath)
            return fault
    return None


def log(state, entry):
    with LOCK:
        with open(os.path.join(state, "log.jsonl"), "a") as f:
            f.write(json.dumps(entry) + "\n")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "rpi-provision-test-mirror/1"

    def log_message(self, fmt, *args):  # keep test output clean
        pass

    def do_HEAD(self):
        self.counted(head=True)

    def do_GET(self):
        self.counted(head=False)

    def counted(self, head):
        set_active(self.server.state, 1)
        try:
            self.handle_get(head)
        finally:
            set_active(self.server.state, -1)

    def finish_log(self, status, sent, rng):
        log(self.server.state, {"path": self.path, "range": rng, "status": status, "sent": sent,
                                "user_agent": self.headers.get("User-Agent", ""),
                                "if_range": self.headers.get("If-Range", ""),
                                "client_port": self.client_address[1]})

    def simple(self, status, rng):
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        self.finish_log(status, 0, rng)

    def redirect(self, status, to, rng):
        self.send_response(status)
        self.send_header("Location", to)
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        self.finish_log(status, 0, rng)

    def endless(self, full, head, rng):
        """200 with close-delimited framing: the file, then filler, forever."""
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        sent = 0
        if not head:
            filler = bytes(range(256)) * 1024
            try:
                with open(full, "rb") as f:
                    while True:
                        data = f.read(256 * 1024) or filler
                        self.wfile.write(data)
                        self.wfile.flush()
                        sent += len(data)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
                pass  # the client hung up: the only way this response ends
        self.finish_log(200, sent, rng)

    def listing(self, full, path, head, rng):
        """A folder's index page in the style of --autoindex."""
        if not path.endswith("/"):
            path += "/"
        names = sorted(n + "/" if os.path.isdir(os.path.join(full, n)) else n for n in os.listdir(full))
        q = lambda n: urllib.parse.quote(n)
        style = self.server.autoindex
        if style == "nginx":
            rows = ['<a href="../">../</a>'] + ['<a href="%s">%s</a>%s10-Oct-2025 10:10    -' % (q(n), n, " " * 20)
                                                for n in names]
            page = ("<html>\r\n<head><title>Index of %s</title></head>\r\n<body>\r\n<h1>Index of %s</h1><hr><pre>"
                    % (path, path) + "\r\n".join(rows) + "\r\n</pre><hr></body>\r\n</html>\r\n")
        elif style == "apache":
            rows = ['<tr><td valign="top"><img src="/icons/folder.gif" alt="[DIR]"></td><td><a href="%s">%s</a></td>'
                    '<td align="right">2025-10-10 10:10  </td><td align="right">  - </td></tr>' % (path + q(n), n)
                    for n in names]
            page = ('<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 3.2 Final//EN">\n<html>\n <head>\n  <title>Index of %s'
                    '</title>\n </head>\n <body>\n<h1>Index of %s</h1>\n  <table>\n   <tr><th><a href="?C=N;O=D">Name'
                    '</a></th><th><a href="?C=M;O=A">Last modified</a></th><th><a href="?C=S;O=A">Size</a></th></tr>\n'
                    '<tr><td><a href="%s">Parent Directory</a></td></tr>\n' % (path, path, os.path.dirname(path[:-1]).rstrip("/") + "/")
                    + "\n".join(rows) + "\n</table>\n<address>Apache/2.4 Server</address>\n</body></html>\n")
        else:  # lighttpd
            rows = ['<tr class="d"><td class="n"><a href="../">..</a>/</td></tr>']
            for n in names:
                shown = n[:-1] if n.endswith("/") else n
                rows.append("<tr><td class='n'><a href='%s'>%s</a>%s</td><td class='m'>2025-Oct-10 10:10:10</td></tr>"
                            % (q(n), shown, "/" if n.endswith("/") else ""))
            page = ('<?xml version="1.0" encoding="utf-8"?>\n<!DOCTYPE html>\n<html><head><title>Index of %s</title>'
                    '</head><body><h2>Index of %s</h2><div class="list"><table summary="Directory Listing">'
                    "<thead><tr><th class='n'>Name</th></tr></thead><tbody>\n" % (path, path)
                    + "\n".join(rows) + '\n</tbody></table></div><div class="foot">lighttpd/1.4</div></body></html>\n')
        body = page.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if not head:
            self.wfile.write(body)
        self.finish_log(200, 0 if head else len(body), rng)

    def handle_get(self, head):
        self.close_connection = True
        rel = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        rng = self.headers.get("Range", "")
        fault = take_fault(self.server.state, self.path) or {}
        kind = fault.get("kind")
        if kind == "status":
            return self.simple(int(fault["n"]), rng)
        if kind == "redirect":
            return self.redirect(int(fault.get("n", 302)), fault["to"], rng)
        full = os.path.realpath(os.path.join(self.server.root, rel.lstrip("/")))
        if (self.server.autoindex != "none" and full.startswith(os.path.realpath(self.server.root))
                and os.path.isdir(full) and not kind):
            return self.listing(full, urllib.parse.urlsplit(self.path).path, head, rng)
        if not full.startswith(os.path.realpath(self.server.root)) or not os.path.isfile(full):
            return self.simple(404, rng)
        if kind == "endless":
            return self.endless(full, head, rng)
        st = os.stat(full)
        size = st.st_size
        etag = '"%x-%x"' % (size, int(st.st_mtime_ns))
        last_mod = email.utils.formatdate(st.st_mtime, usegmt=True)
        start, end = 0, size - 1
        partial = False
        if rng and kind != "norange":
            if_range = self.headers.get("If-Range")
            if if_range is None or if_range in (etag, last_mod):
                spec = rng.split("=", 1)[1] if "=" in rng else ""
                a, _, b = spec.partition("-")
                try:
                    start = int(a)
                    end = int(b) if b else size - 1
                except ValueError:
                    start, end = 0, size - 1
                if start >= size:
                    self.send_response(416)
                    self.send_header("Content-Range", "bytes */%d" % size)
                    self.send_header("Content-Length", "0")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    return self.finish_log(416, 0, rng)
                end = min(end, size - 1)
                partial = True
        length = end - start + 1
        announced = length + int(fault.get("n", 0)) if kind == "badlen" else length
        self.send_response(206 if partial else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(announced))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", last_mod)
        # Like a real mirror, a complete response keeps the connection open for
        # the next request; every fault closes it.
        keep = kind in (None, "norange") and self.headers.get("Connection", "").lower() != "close"
        self.send_header("Connection", "keep-alive" if keep else "close")
        if partial:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end, size))
        self.end_headers()
        if head:
            return self.finish_log(206 if partial else 200, 0, rng)
        sent = 0
        limit = length
        if kind == "cut":
            limit = min(length, int(fault["n"]))
        try:
            with open(full, "rb") as f:
                if kind in (None, "norange", "badlen") and not isinstance(self.connection, ssl.SSLSocket):
                    self.wfile.flush()
                    rate = self.server.rate
                    if not rate:
                        sent = self.connection.sendfile(f, start, limit)
                    t0 = time.monotonic()
                    while rate and sent < limit:  # paced: 1 MiB, then wait until on schedule
                        n = self.connection.sendfile(f, start + sent, min(1 << 20, limit - sent))
                        if not n:
                            break
                        sent += n
                        ahead = sent / rate - (time.monotonic() - t0)
                        if ahead > 0:
                            time.sleep(ahead)
                else:
                    f.seek(start)
                    pos = start
                    chunk = int(fault["n"]) if kind == "trickle" else 256 * 1024
                    while sent < limit:
                        data = f.read(min(chunk, limit - sent))
                        if not data:
                            break
                        if kind == "flip":
                            at = int(fault["n"]) - pos
                            if 0 <= at < len(data):
                                data = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]
                        self.wfile.write(data)
                        self.wfile.flush()
                        sent += len(data)
                        pos += len(data)
                        if kind == "trickle":
                            time.sleep(0.5)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            pass
        self.finish_log(206 if partial else 200, sent, rng)
        if keep and sent == limit:
            self.close_connection = False
        if kind in ("cut", "badlen"):
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--state", required=True)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--autoindex", default="none", choices=["none", "nginx", "apache", "lighttpd"],
                    help="answer folders with this server's HTML listing")
    ap.add_argument("--rate-mbs", type=float, default=0,
                    help="send plain-http bodies at most this fast (MB/s), like a real link")
    args = ap.parse_args()
    srv = Server(("127.0.0.1", 0), Handler)
    srv.root = args.root
    srv.state = args.state
    srv.rate = args.rate_mbs * 1e6
    srv.autoindex = args.autoindex
    if args.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.cert, args.key)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    set_active(args.state, 0)
    port = srv.server_address[1]
    tmp = os.path.join(args.state, "port.tmp")
    with open(tmp, "w") as f:
        f.write(str(port))
    os.replace(tmp, os.path.join(args.state, "port"))
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

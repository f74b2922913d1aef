#!/usr/bin/env python3
"""Loads every example of docs/spec.md through the real spec loader.

usage: spec_doc_examples.py RPI_PROVISION DOCS_SPEC_MD WORKDIR
For each key table row, the first example value is put into a minimal spec that
is valid otherwise, and `rpi-provision check --spec` must accept it. Prints every
failure with the loader's message; exit 1 if any.
"""
import os
import re
import subprocess
import sys

cli, doc, work = sys.argv[1], sys.argv[2], sys.argv[3]
os.makedirs(work, exist_ok=True)

# Files the examples name (relative to the spec): created so references resolve.
for name, data in {"my-repo.rsa.pub": "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----\n",
                   "root.pw": "correct horse battery\n", "files/app.conf": "x=1\n", "start.sh": "#!/bin/sh\necho hi\n",
                   "alpine-rpi-3.22.1-aarch64.tar.gz": "not really\n"}.items():
    path = os.path.join(work, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(data)
env = dict(os.environ, WIFI_PSK="passphrase123", KIOSK_PW="secret-pw-1")

# The context each table needs to be valid apart from the key under test.
CONTEXT = {
    "[system]": {"hostname": '"doc-pi"'},
    "[wifi]": {"ssid": '"Office"', "psk": '"passphrase123"'},
    "[[users]]": {"name": '"doc"'},
    "[[files]]": {"path": '"/etc/doc"', "content": '"x"'},
    "[[scripts]]": {"name": '"doc"', "content": '"echo hi"'},
    "[[network.interfaces]]": {"name": '"eth0"'},
    "[[hosts]]": {"hostname": '"class-01"'},
}
NEEDS = {  # key -> extra keys in the same table
    "gateway": {"address": '"192.168.1.20/24"', "dhcp": "false"},
    "dhcp": {"address": '"192.168.1.20/24"'},
    "search": {"dns": '["192.168.1.1"]'},
    "source": {},
    "content": {},
}
EXCLUSIVE = {"source": ["content"], "content": ["source"], "password_hash": ["password"]}

# A real public key (its private half was never kept), for the docs' placeholders.
REAL_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPFB/Vl9sFnNdTSfmBzkZeynL0bzqkfdIQgPpCubXwqV me@laptop"

failures = 0
count = 0
section = None
for line in open(doc, encoding="utf-8"):
    m = re.match(r"^## `(\[\[?[a-z.]+\]\]?)`", line)
    if m:
        section = m.group(1)
        continue
    if not (line.startswith("| `") and section):
        continue
    cols = [c.strip() for c in line.strip().strip("|").split("|")]
    key = cols[0].strip("`")
    spans = re.findall(r"`([^`]*)`", cols[-1])
    if not spans:
        continue
    example = spans[0]
    table = section
    if section == "[network]":
        if key.startswith("[network]."):
            key = key[len("[network]."):]
        else:
            table = "[[network.interfaces]]"
    keys = dict(CONTEXT.get(table, {}))
    if re.match(r"^[a-z_]+ = ", example):  # a whole assignment (e.g. `default = ["seatd"]`)
        k, v = example.split(" = ", 1)
        for drop in EXCLUSIVE.get(k, []):
            keys.pop(drop, None)
        keys[k] = v
        key = k
    else:
        for drop in EXCLUSIVE.get(key, []):
            keys.pop(drop, None)
        keys.update(NEEDS.get(key, {}))
        keys[key] = example
    text = ""
    if table != "[system]":
        text += '[system]\nhostname = "doc-pi"\n\n'
    if table == "[[files]]":
        text += '[[users]]\nname = "kiosk"\n\n'
    text += table + "\n" + "".join(f"{k} = {v}\n" for k, v in keys.items())
    spec = os.path.join(work, "doc.toml")
    # The docs show a placeholder where the user's own key goes: that must be
    # refused as one, and a real key in its place accepted.
    placeholder = re.search(r"ssh-[a-z0-9]+ AAAA(…|\.\.\.)[^\"]*", text)
    if placeholder:
        with open(spec, "w", encoding="utf-8") as f:
            f.write(text)
        r = subprocess.run([cli, "check", "--spec", spec], capture_output=True, text=True, env=env)
        if r.returncode == 0 or "is a placeholder" not in r.stderr:
            failures += 1
            print(f"FAIL {table} {key}: the placeholder {placeholder.group(0)} was not refused as one\n{r.stderr}")
        text = text.replace(placeholder.group(0), REAL_KEY)
    with open(spec, "w", encoding="utf-8") as f:
        f.write(text)
    r = subprocess.run([cli, "check", "--spec", spec], capture_output=True, text=True, env=env)
    count += 1
    if r.returncode != 0:
        failures += 1
        print(f"FAIL {table} {key} = {example}\n{text}{r.stderr}", flush=True)
print(f"{count} examples checked, {failures} rejected")
sys.exit(1 if failures or count < 50 else 0)

#!/usr/bin/env python3
"""What the QEMU checks should find, from an independent reader (Python's tarfile, tomllib).

  tree.py tar ARCHIVE [--card]   one line per member:
        <type> <mode> <uid>:<gid> <size> <sha256|-> <path>[ -> <link target>]
      type is D, F or L; paths lose their leading "./"; the "." entry is left out.
      --card: as the FAT receives the Alpine tarball: root-level *.apkovl.tar.gz*
      files are left out (rpi-provision drops them).
  tree.py spec SPEC.toml         what the spec asks of the first card, one fact a line:
        hostname NAME | package NAME | service RUNLEVEL NAME | disable NAME |
        file PATH MODE OWNER
"""
import hashlib
import sys
import tarfile
import tomllib


def norm(name):
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/")


def tar_listing(path, card):
    with tarfile.open(path, "r:*") as tar:
        for m in tar:
            name = norm(m.name)
            if name in ("", "."):
                continue
            if card and "/" not in name and m.isfile() and ".apkovl.tar.gz" in name:
                continue
            owner = f"{m.uid}:{m.gid}"
            mode = f"{m.mode & 0o7777:o}"
            if m.isdir():
                print(f"D {mode} {owner} 0 - {name}")
            elif m.issym():
                print(f"L {mode} {owner} 0 - {name} -> {m.linkname}")
            elif m.isfile():
                data = tar.extractfile(m).read()
                print(f"F {mode} {owner} {len(data)} {hashlib.sha256(data).hexdigest()} {name}")
            else:
                print(f"O {mode} {owner} 0 - {name}")


def spec_facts(path):
    with open(path, "rb") as f:
        spec = tomllib.load(f)
    hosts = spec.get("hosts", [])
    first = hosts[0] if hosts else {}

    def pick(table, key, default=None):
        # A [[hosts]] entry overrides the top-level tables for its card.
        if table in first and key in first[table]:
            return first[table][key]
        return spec.get(table, {}).get(key, default)

    hostname = first.get("hostname") or pick("system", "hostname")
    if hostname:
        print(f"hostname {hostname.replace('{n:02}', '01').replace('{n}', '1')}")
    for p in pick("apk", "packages", []) or []:
        print(f"package {p}")
    for rl in ("sysinit", "boot", "default", "shutdown"):
        for s in pick("services", rl, []) or []:
            print(f"service {rl} {s}")
    for s in pick("services", "disable", []) or []:
        print(f"disable {s}")
    if pick("apk", "cache", False):
        print("carddir cache")  # the apk cache folder the engine creates on the FAT
    for f in spec.get("files", []) + first.get("files", []):
        print(f"file {f['path'].lstrip('/')} {f.get('mode', '0644').lstrip('0') or '0'} {f.get('owner', 'root:root')}")


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "tar":
        tar_listing(sys.argv[2], "--card" in sys.argv[3:])
    elif len(sys.argv) == 3 and sys.argv[1] == "spec":
        spec_facts(sys.argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()

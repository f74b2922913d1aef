#!/usr/bin/env python3
"""Builds an Alpine-like mirror tree around fixture tarballs (alpine-facts §3).

  make_mirror.py --root DIR --release 3.22.2=path/to/fixture.tar.gz [--release 3.22.1=other.tar.gz] [--arch aarch64]

The newest --release of each branch is listed in
<branch>/releases/<arch>/latest-releases.yaml (next to an .img.gz item sharing
flavor alpine-rpi and an unrelated flavor, as on the real mirrors); every
tarball gets .sha256 and .sha512 companions ("<hex>  <file>"). The newest
branch is also reachable as latest-stable/. Tarballs are hard-linked (copied
across file systems), so the tree is cheap for big fixtures.
"""
import argparse
import hashlib
import os
import shutil
import sys


def digests(path):
    h256, h512 = hashlib.sha256(), hashlib.sha512()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h256.update(b)
            h512.update(b)
    return h256.hexdigest(), h512.hexdigest()


def vkey(v):
    return [int(x) for x in v.split(".")]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--release", action="append", required=True, help="VERSION=TARBALL")
    ap.add_argument("--arch", default="aarch64")
    args = ap.parse_args()

    branches = {}
    for spec in args.release:
        version, _, src = spec.partition("=")
        branch = "v" + ".".join(version.split(".")[:2])
        d = os.path.join(args.root, branch, "releases", args.arch)
        os.makedirs(d, exist_ok=True)
        name = "alpine-rpi-%s-%s.tar.gz" % (version, args.arch)
        dst = os.path.join(d, name)
        if os.path.exists(dst):
            os.remove(dst)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
        s256, s512 = digests(dst)
        with open(dst + ".sha256", "w") as f:
            f.write("%s  %s\n" % (s256, name))
        with open(dst + ".sha512", "w") as f:
            f.write("%s  %s\n" % (s512, name))
        info = {"version": version, "file": name, "size": os.path.getsize(dst), "sha256": s256, "sha512": s512}
        if branch not in branches or vkey(version) > vkey(branches[branch]["version"]):
            branches[branch] = info

    for branch, r in branches.items():
        d = os.path.join(args.root, branch, "releases", args.arch)
        items = [
            ("Raspberry Pi Disk Image", "alpine-rpi", r["file"].replace(".tar.gz", ".img.gz"), 123456, "0" * 64, "0" * 128),
            ("Raspberry Pi", "alpine-rpi", r["file"], r["size"], r["sha256"], r["sha512"]),
            ("Generic U-Boot", "alpine-uboot", "alpine-uboot-%s-%s.tar.gz" % (r["version"], args.arch), 654321,
             "1" * 64, "1" * 128),
        ]
        with open(os.path.join(d, "latest-releases.yaml"), "w") as f:
            f.write("---\n")
            for title, flavor, file, size, s256, s512 in items:
                f.write('-\n  title: "%s"\n  desc: |\n    Built for the tests.\n    Two lines.\n' % title)
                f.write("  branch: %s\n  arch: %s\n  version: %s\n  flavor: %s\n" % (branch, args.arch, r["version"], flavor))
                f.write("  file: %s\n  iso: %s\n  date: 2025-10-10\n  time: 10:10:10\n" % (file, file))
                f.write("  size: %d\n  sha256: %s\n  sha512: %s\n" % (size, s256, s512))

    newest = max(branches, key=lambda b: vkey(b[1:]))
    link = os.path.join(args.root, "latest-stable")
    if os.path.lexists(link):
        os.remove(link)
    os.symlink(newest, link)
    return 0


if __name__ == "__main__":
    sys.exit(main())

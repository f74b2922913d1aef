#!/usr/bin/env python3
"""Builds an Alpine-like mirror tree around fixture tarballs (alpine-facts §3).

  make_mirror.py --root DIR --release 3.22.2=path/to/fixture.tar.gz [--release 3.22.1=other.tar.gz] [--arch aarch64]
                 [--apkindex]

The newest --release of each branch is listed in
<branch>/releases/<arch>/latest-releases.yaml (next to an .img.gz item sharing
flavor alpine-rpi and an unrelated flavor, as on the real mirrors); every
tarball gets .sha256 and .sha512 companions ("<hex>  <file>"). The newest
branch is also reachable as latest-stable/. A version without a dot (a date,
e.g. 20250108) is an edge snapshot: it goes to edge/. Tarballs are hard-linked (copied
across file systems), so the tree is cheap for big fixtures.

With --apkindex every branch also gets main/<arch>/APKINDEX.tar.gz and
community/<arch>/APKINDEX.tar.gz listing the small package universe below, in
Alpine's layout: a gzip member holding the signature tar (cut before its end
blocks, as abuild-tar --cut does), then one holding DESCRIPTION and APKINDEX.
"""
import argparse
import gzip
import hashlib
import io
import os
import shutil
import sys
import tarfile

LIBC = "so:libc.musl-%s.so.1"
# repository -> [(name, version, size, depends, provides)]; %s is the arch.
PACKAGES = {
    "main": [
        ("musl", "1.2.5-r10", 420000, [], [LIBC + "=1"]),
        ("busybox", "1.37.0-r19", 520000, [LIBC], ["cmd:busybox=1.37.0-r19", "cmd:sh=1.37.0-r19"]),
        ("ncurses-libs", "6.5_p20250503-r0", 300000, [LIBC], ["so:libncursesw.so.6=6.5"]),
        ("htop", "3.4.1-r0", 150000, [LIBC, "so:libncursesw.so.6"], ["cmd:htop=3.4.1-r0"]),
        ("python3", "3.12.11-r0", 20000000, [LIBC], ["cmd:python3=3.12.11-r0"]),
        ("py3-requests", "2.32.4-r0", 90000, ["python3"], []),
        ("eudev", "3.2.14-r5", 800000, [LIBC], ["cmd:udevadm=3.2.14-r5"]),
        ("seatd", "0.9.1-r0", 40000, [LIBC], ["so:libseat.so.1=1", "cmd:seatd=0.9.1-r0"]),
        ("mesa-dri-gallium", "25.1.4-r0", 15000000, [LIBC], []),
        ("font-dejavu", "2.37-r6", 2000000, [], []),
    ],
    "community": [
        ("cage", "0.2.0-r0", 30000, [LIBC, "so:libseat.so.1", "!cage-legacy"], ["cmd:cage=0.2.0-r0"]),
        ("chromium", "138.0.7204.157-r0", 300000000, [LIBC, "font-dejavu", "seatd>=0.8", "mesa-dri-gallium"],
         ["cmd:chromium=138.0.7204.157-r0"]),
    ],
}


def tar_bytes(members, cut):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1750000000
            t.addfile(info, io.BytesIO(data))
    data = buf.getvalue()
    if cut:  # no end-of-archive blocks: the next member's tar continues it
        while data.endswith(b"\0" * 512):
            data = data[:-512]
    return data


def write_apkindex(path, repo, arch):
    lines = []
    for name, version, size, depends, provides in PACKAGES[repo]:
        lines += ["C:Q1" + hashlib.sha1(name.encode()).hexdigest()[:27] + "=", "P:" + name, "V:" + version,
                  "A:" + arch, "S:%d" % size, "I:%d" % (size * 3), "T:%s for the tests" % name,
                  "U:https://example.org/" + name, "L:MIT", "o:" + name, "t:1750000000"]
        if depends:
            lines.append("D:" + " ".join(d.replace("%s", arch) for d in depends))
        if provides:
            lines.append("p:" + " ".join(p.replace("%s", arch) for p in provides))
        lines.append("")
    index = ("\n".join(lines) + "\n").encode()
    sig = tar_bytes([(".SIGN.RSA.test@example.org-00000000.rsa.pub", b"\x01" * 256)], cut=True)
    body = tar_bytes([("DESCRIPTION", b"v3.22.0-test"), ("APKINDEX", index)], cut=False)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(gzip.compress(sig, mtime=0) + gzip.compress(body, mtime=0))


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
    ap.add_argument("--apkindex", action="store_true", help="also main/ and community/ package indexes")
    args = ap.parse_args()

    branches = {}
    for spec in args.release:
        version, _, src = spec.partition("=")
        branch = "v" + ".".join(version.split(".")[:2]) if "." in version else "edge"
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

    if args.apkindex:
        for branch in branches:
            for repo in PACKAGES:
                write_apkindex(os.path.join(args.root, branch, repo, args.arch, "APKINDEX.tar.gz"), repo, args.arch)

    newest = max((b for b in branches if b != "edge"), key=lambda b: vkey(b[1:]))
    link = os.path.join(args.root, "latest-stable")
    if os.path.lexists(link):
        os.remove(link)
    os.symlink(newest, link)
    return 0


if __name__ == "__main__":
    sys.exit(main())

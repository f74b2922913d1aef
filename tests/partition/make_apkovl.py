#!/usr/bin/env python3
"""Writes small crafted apkovls for apkovl_check_test.cpp, with Python's own
tarfile and zlib (independent of the libarchive/zlib code under test).

usage: make_apkovl.py CASE OUTPUT [MIB]
usage: make_apkovl.py hostname OUTPUT TEXT
CASE: ok, plain-tar, hardlink, hardlink-absolute, hardlink-dotdot, chardev,
      blockdev, fifo, big (one MIB-MiB file of zeros, compressed at level 1),
      hostile (a hard link to /etc/shadow, a device node and a FIFO),
      fifos (N FIFOs), no-hostname, hostname (etc/hostname holds TEXT),
      hostname-twice (a second etc/hostname, "second", after the first),
      hostname-symlink (etc/hostname a symlink), dotdot-member (a member
      named etc/../../escape), dot-slash (names "./etc/...",
      as `tar -C DIR .` makes them)
"""
import gzip
import io
import sys
import tarfile
import zlib

MTIME = 1760000000


def info(name, kind=tarfile.REGTYPE, size=0, mode=0o644, **kw):
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.size = size
    ti.mode = mode
    ti.mtime = MTIME
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    for k, v in kw.items():
        setattr(ti, k, v)
    return ti


def base():
    """What `lbu package` makes: relative etc/... names, runlevel symlinks."""
    return [
        (info("etc", tarfile.DIRTYPE, mode=0o755), None),
        (info("etc/hostname", size=7), b"myhost\n"),
        (info("etc/apk", tarfile.DIRTYPE, mode=0o755), None),
        (info("etc/apk/world", size=20), b"alpine-base\nopenssh\n"),
        (info("etc/runlevels", tarfile.DIRTYPE, mode=0o755), None),
        (info("etc/runlevels/default", tarfile.DIRTYPE, mode=0o755), None),
        (info("etc/runlevels/default/sshd", tarfile.SYMTYPE, mode=0o777, linkname="/etc/init.d/sshd"), None),
    ]


def tar_bytes(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for ti, data in members:
            tar.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def big(out, mib):
    """One file of `mib` MiB of zeros, streamed through zlib (gzip wrapper)."""
    comp = zlib.compressobj(1, zlib.DEFLATED, 31)
    size = mib << 20
    head = b""
    for ti, data in base() + [(info("etc/big", size=size), None)]:
        head += ti.tobuf(tarfile.GNU_FORMAT)
        if data:
            head += data + b"\0" * (-len(data) % 512)
    with open(out, "wb") as f:
        f.write(comp.compress(head))
        zeros = bytes(1 << 20)
        for _ in range(mib):
            f.write(comp.compress(zeros))
        f.write(comp.compress(b"\0" * 1024))  # end-of-archive blocks
        f.write(comp.flush())


def main():
    case, out = sys.argv[1], sys.argv[2]
    m = base()
    if case == "big":
        big(out, int(sys.argv[3]))
        return
    if case == "plain-tar":
        with open(out, "wb") as f:
            f.write(tar_bytes(m))
        return
    if case == "hardlink":
        m.append((info("etc/hostname.bak", tarfile.LNKTYPE, linkname="etc/hostname"), None))
    elif case == "hardlink-absolute":
        m.append((info("etc/shadow.lnk", tarfile.LNKTYPE, linkname="/etc/shadow"), None))
    elif case == "hardlink-dotdot":
        m.append((info("etc/shadow.lnk", tarfile.LNKTYPE, linkname="etc/../../etc/shadow"), None))
    elif case == "dotdot-member":
        m.append((info("etc/../../escape", size=3), b"hi\n"))
    elif case == "chardev":
        m.append((info("etc/console", tarfile.CHRTYPE, devmajor=5, devminor=1), None))
    elif case == "blockdev":
        m.append((info("etc/disk", tarfile.BLKTYPE, devmajor=8, devminor=0), None))
    elif case == "fifo":
        m.append((info("etc/pipe", tarfile.FIFOTYPE), None))
    elif case == "hostile":
        m.append((info("etc/shadow.lnk", tarfile.LNKTYPE, linkname="/etc/shadow"), None))
        m.append((info("etc/console", tarfile.CHRTYPE, devmajor=5, devminor=1), None))
        m.append((info("etc/pipe", tarfile.FIFOTYPE), None))
    elif case == "fifos":
        m += [(info("etc/pipe%d" % i, tarfile.FIFOTYPE), None) for i in range(int(sys.argv[3]))]
    elif case == "no-hostname":
        m = [x for x in m if x[0].name != "etc/hostname"]
    elif case == "hostname":
        text = sys.argv[3].encode("utf-8", "surrogateescape")
        m = [(info("etc/hostname", size=len(text)), text) if ti.name == "etc/hostname" else (ti, d) for ti, d in m]
    elif case == "hostname-twice":
        m.append((info("etc/hostname", size=7), b"second\n"))
    elif case == "hostname-symlink":
        m = [(info("etc/hostname", tarfile.SYMTYPE, mode=0o777, linkname="/etc/other"), None)
             if ti.name == "etc/hostname" else (ti, d) for ti, d in m]
    elif case == "dot-slash":
        for ti, _ in m:
            ti.name = "./" + ti.name
    elif case != "ok":
        sys.exit("unknown case " + case)
    with open(out, "wb") as f:
        f.write(gzip.compress(tar_bytes(m), mtime=0))


if __name__ == "__main__":
    main()

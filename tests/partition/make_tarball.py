#!/usr/bin/env python3
"""Writes small crafted .tar.gz files for the image-engine tests.

usage: make_tarball.py CASE OUTPUT
Each CASE is an Alpine-like minimal boot tree plus (or minus) one twist.
"""
import gzip
import importlib.machinery
import importlib.util
import io
import os
import random
import sys
import tarfile
import zlib

MTIME = 1760000000


def info(name, size=0, kind=tarfile.REGTYPE, mode=0o644, **kw):
    ti = tarfile.TarInfo(name)
    ti.size = size
    ti.type = kind
    ti.mode = mode
    ti.mtime = kw.get("mtime", MTIME)
    ti.uid = ti.gid = 0
    for k, v in kw.items():
        if k != "mtime":
            setattr(ti, k, v)
    return ti


def base_members():
    return [
        ("./", None),
        ("./cmdline.txt", b"modules=loop,squashfs,sd-mod,usb-storage quiet console=tty1\n"),
        ("./config.txt", b"kernel=boot/vmlinuz-rpi\ninitramfs boot/initramfs-rpi\narm_64bit=1\ninclude usercfg.txt\n"),
        ("./boot/", None),
        ("./boot/vmlinuz-rpi", b"K" * 5000),
    ]


def write(path, members, raw_entries=(), fmt=tarfile.GNU_FORMAT):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in members:
            if data is None:
                tar.addfile(info(name.rstrip("/") or ".", kind=tarfile.DIRTYPE, mode=0o755))
            else:
                tar.addfile(info(name, len(data)), io.BytesIO(data))
        for ti, data in raw_entries:
            tar.addfile(ti, io.BytesIO(data) if data is not None else None)
    with open(path, "wb") as f:
        f.write(gzip.compress(buf.getvalue(), mtime=0))


def fixture_script():
    """scripts/make-fixture-tarball, whose kbd_bkeymaps_apk() makes a real-format apk."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts", "make-fixture-tarball")
    loader = importlib.machinery.SourceFileLoader("make_fixture_tarball", path)
    spec = importlib.util.spec_from_loader(loader.name, loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


KEYMAP_APK = "./apks/aarch64/kbd-bkeymaps-2.7.4-r0.apk"


def with_apk(members, apk):
    return members + [("./apks/", None), ("./apks/aarch64/", None), (KEYMAP_APK, apk)]


def main():
    case, out = sys.argv[1], sys.argv[2]
    m = base_members()
    rnd = random.Random(7)
    if case == "ok":
        write(out, m)
    elif case == "absolute":
        write(out, m + [("/etc/passwd", b"x")])
    elif case == "dotdot":
        write(out, m + [("../escape.txt", b"x")])
    elif case == "dotdot-middle":
        write(out, m + [("a/../../b.txt", b"x")])
    elif case == "colon":
        write(out, m + [("./bad:name.txt", b"x")])
    elif case == "control-char":
        write(out, m + [("./bad\x01name.txt", b"x")])
    elif case == "trailing-dot":
        write(out, m + [("./name.", b"x")])
    elif case == "case-collision":
        write(out, m + [("./Readme.txt", b"a"), ("./README.TXT", b"b")])
    elif case == "duplicate":
        write(out, m + [("./dup.txt", b"a"), ("./dup.txt", b"b")])
    elif case == "symlink":
        write(out, m, [(info("./link.txt", kind=tarfile.SYMTYPE, linkname="cmdline.txt"), None)])
    elif case == "symlink-dir":
        write(out, m, [(info("./dir", kind=tarfile.SYMTYPE, linkname="boot"), None)] + [(info("./dir/x", 1), b"x")])
    elif case == "hardlink":
        write(out, m, [(info("./boot/kernel-copy", kind=tarfile.LNKTYPE, linkname="./boot/vmlinuz-rpi"), None)])
    elif case == "hardlink-missing":
        write(out, m, [(info("./copy", kind=tarfile.LNKTYPE, linkname="./nothere"), None)])
    elif case == "device":
        write(out, m, [(info("./dev-null", kind=tarfile.CHRTYPE, devmajor=1, devminor=3), None)])
    elif case == "fifo":
        write(out, m, [(info("./pipe", kind=tarfile.FIFOTYPE), None)])
    elif case == "huge-entry":
        # A header that declares 5 GiB, with the data missing (GNU base-256 size).
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for name, data in m:
                if data is None:
                    tar.addfile(info(name.rstrip("/") or ".", kind=tarfile.DIRTYPE, mode=0o755))
                else:
                    tar.addfile(info(name, len(data)), io.BytesIO(data))
        raw = buf.getvalue().rstrip(b"\0")
        raw += b"\0" * (-len(raw) % 512)
        raw += info("./huge.bin", 5 << 30).tobuf(tarfile.GNU_FORMAT) + b"\0" * 4096
        with open(out, "wb") as f:
            f.write(gzip.compress(raw, mtime=0))
    elif case == "too-big":
        write(out, m + [("./big.bin", rnd.randbytes(48 << 20))])
    elif case == "release-last":
        # .alpine-release after 2 MB of data; one in a folder before it does not count.
        write(out, m + [("./boot/.alpine-release", b"alpine-rpi-9.9.9 1\n"), ("./data.bin", rnd.randbytes(2 << 20)),
                        ("./.alpine-release", b"alpine-rpi-3.21.4 251010\n")])
    elif case == "release-in-folder":
        write(out, m + [("./boot/.alpine-release", b"alpine-rpi-9.9.9 1\n")])
    elif case == "empty":
        write(out, [])
    elif case == "no-boot-files":
        write(out, [("./hello.txt", b"hello\n")])
    elif case == "not-tar":
        with open(out, "wb") as f:
            f.write(gzip.compress(b"this is not a tar archive\n" * 100, mtime=0))
    elif case == "random":
        with open(out, "wb") as f:
            f.write(rnd.randbytes(100000))
    elif case == "bad-utf8":
        write(out, m + [(b"./bad\xff\xfe.txt".decode("utf-8", "surrogateescape"), b"x")])
    elif case == "deep":
        write(out, m + [("./" + "/".join(["d"] * 40) + "/f.txt", b"x")])
    elif case == "names":
        # Long, mixed-case, non-ASCII and 8.3-colliding names; a directory of 5000 files.
        extra = [("./Mixed.TXT", b"mixed"), ("./UPPER.TXT", b"upper"), ("./longfilename_here.dat", b"long"),
                 ("./Grüße-ÄÖÜ.txt", "äöü".encode()), ("./日本語のファイル名.txt", b"jp"),
                 ("./a.b.c.d", b"dots"), ("./.hidden-file", b"h"), ("./name with spaces.txt", b"sp"),
                 ("./exactly13char", b"13"), ("./" + "x" * 200 + ".txt", b"long200"),
                 ("./con.txt", b"reserved"), ("./many/", None)]
        for i in range(5000):
            extra.append((f"./many/file-number-{i:05d}.dat", f"{i}\n".encode()))
        write(out, m + extra, fmt=tarfile.PAX_FORMAT)
    # Cases where --dry-run once judged the tarball otherwise than the build (tests/cli/plan_test.cpp).
    elif case in ("crc", "isize", "trailing-garbage"):
        write(out, m)
        with open(out, "r+b") as f:
            if case == "trailing-garbage":
                f.seek(0, 2)
                f.write(b"garbage after the gzip stream\n")
            else:
                f.seek(-8 if case == "crc" else -4, 2)  # the trailer: CRC-32, then the length
                byte = f.read(1)
                f.seek(-1, 1)
                f.write(bytes([byte[0] ^ 0xFF]))
    elif case == "truncated-gzip":
        write(out, m)
        with open(out, "r+b") as f:
            f.truncate(os.path.getsize(out) // 2)
    elif case == "folder":
        os.mkdir(out)
    elif case == "zero-bytes":
        open(out, "wb").close()
    elif case == "upper-cmdline":
        write(out, [(n.replace("cmdline.txt", "CMDLINE.TXT"), d) for n, d in m])
    elif case == "big-cmdline":
        write(out, [(n, b"quiet " * 200000 if n == "./cmdline.txt" else d) for n, d in m])
    elif case == "hardlink-cmdline":
        write(out, [(n, d) for n, d in m if n != "./cmdline.txt"] + [("./boot/cmdline.orig", b"quiet\n")],
              [(info("./cmdline.txt", kind=tarfile.LNKTYPE, linkname="./boot/cmdline.orig"), None)])
    elif case == "dir-cmdline":
        write(out, [(n if n != "./cmdline.txt" else "./cmdline.txt/", None if n == "./cmdline.txt" else d)
                    for n, d in m])
    elif case == "dir-usercfg":  # a folder where a card with [boot].config needs its file usercfg.txt
        write(out, m + [("./usercfg.txt/", None)])
    elif case == "in-usercfg":  # the same folder, made by its member alone (no entry of its own)
        write(out, m + [("./USERCFG.TXT/note", b"x")])
    elif case == "nested-apkovl":
        write(out, m + [(".//rpi.apkovl.tar.gz", b"old apkovl")])
    elif case == "nonascii-collision":
        write(out, m + [("./Ärger.txt", b"a"), ("./ärger.txt", b"b")], fmt=tarfile.PAX_FORMAT)
    # kbd-bkeymaps: the apk alone (apk-*), and boot tarballs that carry one (keymaps-*).
    elif case.startswith("apk-") or case.startswith("keymaps"):
        fx = fixture_script()
        keymaps = fx.KEYMAPS
        apk = fx.kbd_bkeymaps_apk(keymaps)
        if case == "apk-uncut":  # the signature and control tars keep their end blocks
            apk = b"".join(gzip.compress(fx.tar_members(part, True), mtime=0) for part in (
                [(".SIGN.RSA.key.rsa.pub", b"sig")], [(".PKGINFO", b"pkgname = kbd-bkeymaps\n")],
                [(f"usr/share/bkeymaps/{k}.bmap.gz", b"map") for k in keymaps]))
        elif case == "apk-other-package":
            apk = gzip.compress(fx.tar_members([("usr/bin/loadkeys", b"x"), ("usr/share/bkeymaps.txt", b"y")], True),
                                mtime=0)
        elif case == "apk-bomb":  # 64 KiB that unpack to 256 MiB
            ti = tarfile.TarInfo("usr/share/bkeymaps/us/us.bmap.gz")
            ti.size = 256 << 20
            z = zlib.compressobj(9, zlib.DEFLATED, 31)
            apk = z.compress(ti.tobuf(tarfile.GNU_FORMAT))
            for _ in range(256):
                apk += z.compress(b"\0" * (1 << 20))
            apk += z.flush()
        elif case in ("apk-truncated", "keymaps-truncated"):
            apk = apk[: len(apk) * 2 // 3]
        elif case in ("apk-random", "keymaps-random"):
            apk = rnd.randbytes(3000)
        elif case == "keymaps-huge":  # more than the 4 MiB that are buffered
            apk = apk + rnd.randbytes(5 << 20)
        elif case not in ("apk-keymaps", "keymaps"):
            sys.exit("unknown case " + case)
        if case.startswith("apk-"):
            with open(out, "wb") as f:
                f.write(apk)
        else:
            write(out, with_apk(m, apk))
    else:
        sys.exit("unknown case " + case)


if __name__ == "__main__":
    main()

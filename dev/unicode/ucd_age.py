"""Unicode version in which each code point was assigned, from the UCD's DerivedAge.txt.

Debian's unicode-data package installs it (apt-get install unicode-data puts it in
/usr/share/unicode/); set UCD_DIR to read another copy. Only the table generators in this folder
use it; neither the build nor the tests do.
"""
import os

UCD_DIR = os.environ.get("UCD_DIR", "/usr/share/unicode")


def load_ages():
    """{code point: (major, minor)} for every assigned code point DerivedAge.txt lists."""
    path = os.path.join(UCD_DIR, "DerivedAge.txt")
    if not os.path.exists(path):
        raise SystemExit(f"{path} not found: apt-get install unicode-data, or set UCD_DIR")
    ages = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            cps, version = (x.strip() for x in line.split(";"))
            first, _, last = cps.partition("..")
            major, minor = (int(x) for x in version.split("."))
            for cp in range(int(first, 16), int(last or first, 16) + 1):
                ages[cp] = (major, minor)
    return ages

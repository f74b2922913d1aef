#!/usr/bin/env python3
"""Validates rpi-provision TOML specs against docs/spec.schema.json.

usage: validate_spec.py SCHEMA [--fragment] [--markdown] FILE...
       validate_spec.py SCHEMA --doc-keys SPEC_MD

Each FILE is a TOML spec; with --markdown, each ```toml block of the Markdown FILE is
one spec. --doc-keys compares the key tables of docs/spec.md (a "## `[table]`" heading,
then rows "| `key` | ...") with the schema, both ways. --fragment drops the top-level "a hostname is required" rule, for
documentation snippets that show one table. Prints one line per problem and exits 1
when any spec does not parse or validate, 0 otherwise. Independent of our C++ loader:
Python's tomllib parses, the jsonschema package validates.
"""
import json
import re
import sys
import tomllib

import jsonschema

SECRET_KEYS = {"psk", "password", "content"}


def specs_in(path, markdown):
    with open(path, "rb") as f:
        data = f.read().decode("utf-8")
    if not markdown:
        yield path, data
        return
    for m in re.finditer(r"^```toml[^\n]*\n(.*?)^```", data, re.S | re.M):
        line = data.count("\n", 0, m.start()) + 1
        yield f"{path}:{line}", m.group(1)


def schema_tables(schema):
    """{"alpine": {keys}, "users": {keys}, "network.interfaces": {keys}, ...}"""
    defs = schema["$defs"]

    def props_of(node):
        if "$ref" in node:
            node = defs[node["$ref"].split("/")[-1]]
        if node.get("type") == "array":
            return props_of(node["items"])
        return node.get("properties", {})

    out = {}
    for name, node in schema["properties"].items():
        if name == "hosts":  # its other keys are the tables themselves
            out[name] = {"hostname", "mac"}
            continue
        props = props_of(node)
        # A nested table ([[network.interfaces]]) is documented under its own heading.
        out[name] = {k for k, v in props.items() if not props_of(v)}
        for sub, subnode in props.items():
            if props_of(subnode):
                out[f"{name}.{sub}"] = set(props_of(subnode))
    return out


def doc_keys(path):
    """{table: {keys}} from the Markdown key tables; rows "`[t].key`" name their table."""
    keys = {}
    table = None
    heading = re.compile(r"^## `\[{1,2}([a-z_.]+)\]{1,2}`")
    for line in open(path, encoding="utf-8"):
        m = heading.match(line)
        if m:
            table = m.group(1)
            continue
        if line.startswith("## "):
            table = None
        if table is None or not line.startswith("| `"):
            continue
        cell = line.split("|")[1]
        for key in re.findall(r"`([^`]+)`", cell):
            t, k = table, key
            qualified = re.match(r"^\[([a-z_.]+)\]\.([a-z_]+)$", key)
            if qualified:
                t, k = qualified.groups()
            elif table == "network":
                t = "network.interfaces"  # the unqualified rows of that section
            keys.setdefault(t, set()).add(k)
    return keys


def compare_doc_keys(schema, path):
    in_schema = schema_tables(schema)
    in_doc = doc_keys(path)
    bad = 0
    for table, keys in sorted(in_doc.items()):
        if table not in in_schema:
            print(f"{path}: table [{table}] is not in the schema")
            bad += 1
            continue
        for k in sorted(keys - in_schema[table]):
            print(f"{path}: [{table}].{k} is documented but not in the schema")
            bad += 1
    for table, keys in sorted(in_schema.items()):
        for k in sorted(keys - in_doc.get(table, set())):
            print(f"{path}: [{table}].{k} is in the schema but not documented")
            bad += 1
    print(f"{sum(len(k) for k in in_doc.values())} documented key(s), {bad} mismatch(es)")
    return 1 if bad else 0


def main(argv):
    if len(argv) == 4 and argv[2] == "--doc-keys":
        with open(argv[1], "rb") as f:
            return compare_doc_keys(json.load(f), argv[3])
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1], "rb") as f:
        schema = json.load(f)
    args = argv[2:]
    fragment = "--fragment" in args
    markdown = "--markdown" in args
    files = [a for a in args if not a.startswith("--")]
    if fragment:
        schema = dict(schema)
        schema.pop("anyOf", None)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    bad = 0
    count = 0
    for path in files:
        for name, text in specs_in(path, markdown):
            count += 1
            try:
                spec = tomllib.loads(text)
            except tomllib.TOMLDecodeError as e:
                print(f"{name}: TOML error: {e}")
                bad += 1
                continue
            errors = sorted(validator.iter_errors(spec), key=lambda e: list(e.absolute_path))
            for e in errors:
                where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
                # jsonschema quotes the offending value; never echo a secret.
                secret = any(p in SECRET_KEYS for p in e.absolute_path)
                message = f"invalid value (fails '{e.validator}')" if secret else e.message
                print(f"{name}: {where}: {message}")
            if errors:
                bad += 1
            else:
                print(f"{name}: OK")
    print(f"{count} spec(s), {bad} invalid")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

#!/usr/bin/env python3
"""Validates OCSF records (NDJSON) against the OCSF schema version each declares.

    ocsf-validate.py [FILE...]      (no FILE, or -: standard input)

Each record is checked against the JSON Schema of its class (`class_uid`), at
its `metadata.version`, with its `metadata.profiles`, as generated from the
OCSF schema exports that PyPI's ocsf-json-schema package carries (no network).
Prints one line per invalid record and a summary; exits 1 if any record is
invalid or there is none at all. What Gatehouse writes to Kafka and to its
NDJSON SIEM output is checked with this by tests/siem.rs.
"""

import json
import sys

import jsonschema
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema

_schemas = {}
_classes = {}


def validator(version, class_uid, profiles):
    key = (version, class_uid, tuple(sorted(profiles)))
    if key not in _schemas:
        if version not in _classes:
            _classes[version] = OcsfJsonSchemaEmbedded(get_ocsf_schema(version=version))
        ocsf = _classes[version]
        name = ocsf.lookup_class_name_from_uid(class_uid=class_uid)
        schema = ocsf.get_class_schema(class_name=name, profiles=list(profiles))
        _schemas[key] = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    return _schemas[key]


def main(paths):
    streams = [sys.stdin] if not paths or paths == ["-"] else [open(p, encoding="utf-8") for p in paths]
    total = bad = 0
    by_class = {}
    for stream in streams:
        for n, line in enumerate(stream, 1):
            if not line.strip():
                continue
            total += 1
            try:
                record = json.loads(line)
                meta = record["metadata"]
                v = validator(meta["version"], record["class_uid"], meta.get("profiles", []))
                errors = sorted(v.iter_errors(record), key=lambda e: list(e.path))
            except Exception as e:  # a record that is not even OCSF-shaped
                errors = [e]
            key = f"{record.get('class_uid')}/{record.get('activity_id')}" if isinstance(record, dict) else "?"
            by_class[key] = by_class.get(key, 0) + 1
            if errors:
                bad += 1
                for e in errors[:5]:
                    where = "/".join(str(p) for p in getattr(e, "path", []))
                    print(f"{getattr(stream, 'name', '-')}:{n}: /{where}: {getattr(e, 'message', e)}")
    print(f"{total} records, {bad} invalid; class/activity: {json.dumps(by_class, sort_keys=True)}")
    return 1 if bad or not total else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

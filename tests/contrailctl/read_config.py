#!/usr/bin/env python3
"""Reads a role file the way contrailctl does (ConfigParser, then eval of each
value) and prints {section: {key: value}} as JSON. Python 3's configparser with
these options, plus the two Python 2 rules re-implemented below (inline ';'
comments, %(name)s interpolation), reads as Python 2's ConfigParser.ConfigParser:
continuation lines stripped and joined with newlines, empty lines dropped.

`read_config.py FILE` reads one file. `read_config.py --serve` reads one JSON
document per line on stdin, {"content": "<a role file>"}, and answers each with
one line, {"ok": {section: {key: value}}} or {"error": "<why it cannot be
read>"}: the fuzzing tests read thousands of files through one process."""
import ast
import configparser
import io
import json
import re
import sys


def evaluate(value):
    # contrailctl config.py: literal_eval of lists/maps, yes/true/no/false as booleans.
    if value.startswith("[") or value.startswith("{"):
        return ast.literal_eval(value)
    if value.lower() in ("yes", "true"):
        return True
    if value.lower() in ("no", "false"):
        return False
    return value


def new_parser():
    return configparser.ConfigParser(
        inline_comment_prefixes=None,
        empty_lines_in_values=False,
        interpolation=None,
        strict=True,
    )


def py2_inline_comment(value):
    # Python 2 ConfigParser cuts the first line of a value at its first ';' when
    # the character before it (index pos-1, so the last one for pos 0) is white space.
    first, sep, rest = value.partition("\n")
    pos = first.find(";")
    if pos != -1 and first[pos - 1].isspace():
        first = first[:pos].strip()
    return first + sep + rest


def py2_interpolate(parser, section, value):
    # Python 2 ConfigParser.ConfigParser._interpolate: only a value containing
    # "%(" is interpolated (then "%%" stands for "%"); any other '%' is literal.
    depth = 10
    while depth and "%(" in value:
        value = re.sub(
            r"%\(([^)]*)\)s|.",
            lambda m: "%%(%s)s" % m.group(1).lower() if m.group(1) else m.group(),
            value,
        )
        value = value % dict(parser.items(section, raw=True))
        depth -= 1
    return value


def read(lines):
    parser = new_parser()
    parser.read_file(lines)
    return {
        s: {
            k: evaluate(py2_interpolate(parser, s, py2_inline_comment(parser.get(s, k))))
            for k in parser.options(s)
        }
        for s in parser.sections()
    }


if sys.argv[1] == "--serve":
    for request in sys.stdin:
        content = json.loads(request)["content"]
        try:
            # As a file reads it: universal newlines, then one line at a time.
            answer = {"ok": read(io.StringIO(content, newline=None))}
        except Exception as e:  # noqa: BLE001 -- any failure is an answer
            answer = {"error": "%s: %s" % (type(e).__name__, e)}
        sys.stdout.write(json.dumps(answer, ensure_ascii=False, sort_keys=True) + "\n")
        sys.stdout.flush()
else:
    with open(sys.argv[1], encoding="utf-8") as f:
        out = read(f)
    json.dump(out, sys.stdout, ensure_ascii=False, sort_keys=True)

#!/usr/bin/env python3
"""Prints an example's configuration file as JSON, read by a real parser, for
tests/examples.rs to check:

  *.hcl           python-hcl2 (labels and strings without their quotes,
                  blocks as lists of objects, heredocs as plain strings)
  *.yml, *.yaml   PyYAML, every document: a list

Exits 2 if the parser is missing, 1 if the file does not parse.
"""
import json
import sys


def main(path):
    try:
        if path.endswith(".hcl"):
            import hcl2

            options = hcl2.SerializationOptions(
                strip_string_quotes=True,
                explicit_blocks=False,
                preserve_heredocs=False,
                with_comments=False,
            )
            with open(path) as f:
                data = hcl2.load(f, serialization_options=options)
        elif path.endswith((".yml", ".yaml")):
            import yaml

            with open(path) as f:
                data = list(yaml.safe_load_all(f))
        else:
            sys.exit(f"{path}: neither HCL nor YAML")
    except ImportError as e:
        print(f"to-json.py: {e}", file=sys.stderr)
        sys.exit(2)
    except Exception as e:  # a parse error, whatever the parser calls it
        print(f"{path}: {e}", file=sys.stderr)
        sys.exit(1)
    json.dump(data, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])

"""Parses a Prometheus text exposition with prometheus_client's own parser (an independent
implementation of the format) and prints what it understood as JSON:
{"samples": [{"name", "labels", "value"}], "types": {family: type}, "sample_lines": N}.
Exits 1 with the parser's message when the text is rejected."""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families


def main():
    text = open(sys.argv[1], encoding="utf-8").read()
    try:
        families = list(text_string_to_metric_families(text))
    except Exception as error:  # the parser raises ValueError (and others) on malformed input
        print(f"rejected: {error!r}", file=sys.stderr)
        return 1
    samples = [{"name": s.name, "labels": s.labels, "value": s.value} for f in families for s in f.samples]
    sample_lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    print(json.dumps({"samples": samples, "types": {f.name: f.type for f in families},
                      "sample_lines": len(sample_lines)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

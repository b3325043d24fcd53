"""Fill in a deployment template (nginx.conf, systemd/*.service).

    python deploy/render.py nginx.conf [--set NAME=VALUE ...] > thumbnails.conf

``${NAME}`` (upper case, in braces) takes its value from deploy/defaults.env,
then from --set; nginx's own ``$variables`` are left alone. A name with no
value is an error, so nothing half-filled is written.
"""

import argparse
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")


def defaults() -> dict[str, str]:
    values = {}
    for line in (HERE / "defaults.env").read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and not name.startswith("#"):
            values[name.strip()] = value.strip()
    return values


def render(text: str, values: dict[str, str]) -> str:
    missing = sorted(set(PLACEHOLDER.findall(text)) - set(values))
    if missing:
        raise SystemExit(f"No value for {', '.join(missing)}: add --set NAME=VALUE.")
    return PLACEHOLDER.sub(lambda match: values[match.group(1)], text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("template", help="a path under deploy/, e.g. nginx.conf")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args(argv)
    values = defaults()
    for pair in args.set:
        name, sep, value = pair.partition("=")
        if not sep:
            parser.error(f"--set takes NAME=VALUE, not {pair!r}")
        values[name] = value
    sys.stdout.write(render((HERE / args.template).read_text(), values))


if __name__ == "__main__":
    main()

"""Read a Darknet `.cfg` file into plain dicts, with the line of every section kept for error messages.

The format: `[section]` headers, then `key=value` lines; `#` and `;` start comments. Values become an
int, a float, a list of numbers (`1,2,3`) or a string. Which keys a section needs is checked by the builder
(`yolo.models`), which reports problems as `file:line` through `CfgError`.
"""
from pathlib import Path

SECTIONS = ("net", "convolutional", "shortcut", "route", "upsample", "maxpool", "yolo")
BUNDLED_DIR = Path(__file__).resolve().parent / "cfg"


class CfgError(ValueError):
    """A malformed or inconsistent cfg; the message starts with `file:line:`."""

    def __init__(self, path, line, message):
        super().__init__(f"{path}:{line}: {message}")


def bundled_cfgs():
    """Names of the cfgs shipped in yolo/cfg (usable as `Darknet(name)`)."""
    return sorted(p.stem for p in BUNDLED_DIR.glob("*.cfg"))


def resolve_cfg(cfg):
    """Path of an existing .cfg file, else of a bundled cfg ("yolov3" or "yolov3.cfg");
    FileNotFoundError naming `cfg` otherwise."""
    path = Path(cfg)
    if path.is_file():
        return path
    bundled = BUNDLED_DIR / (path.name if path.suffix == ".cfg" else f"{path.name}.cfg")
    if path.name == str(cfg) and bundled.is_file():  # a bare name, not a path into some folder
        return bundled
    raise FileNotFoundError(
        f"model cfg {str(cfg)!r} not found: not a file and not a bundled cfg ({', '.join(bundled_cfgs())})")


def parse_value(text):
    """'3' -> 3, '.5' -> 0.5, '1,2, 3' -> [1, 2, 3], 'leaky' -> 'leaky'."""
    if "," in text:
        items = [t.strip() for t in text.split(",") if t.strip()]
        numbers = [_number(t) for t in items]
        return numbers if all(n is not None for n in numbers) else text
    number = _number(text)
    return text if number is None else number


def _number(text):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return None


def parse_cfg(path):
    """Parse the cfg at `path` -> (net_info dict, list of layer dicts).

    Every dict has "type" (the section name) and "_line" (1-based line of its header). Layer dicts are in
    file order, so index i in the list is layer i in `route`/`shortcut` references.
    """
    path = Path(path)
    with open(path) as f:
        lines = f.read().splitlines()
    sections = []
    for number, raw in enumerate(lines, start=1):
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            if not line.endswith("]") or len(line) < 3:
                raise CfgError(path, number, f"malformed section header {raw.strip()!r}")
            kind = line[1:-1].strip()
            if kind not in SECTIONS:
                raise CfgError(path, number, f"unsupported section [{kind}] (supported: {', '.join(SECTIONS)})")
            sections.append({"type": kind, "_line": number})
            continue
        key, sep, value = (s.strip() for s in line.partition("="))
        if not sep or not key or not value:
            raise CfgError(path, number, f"malformed line {raw.strip()!r} (expected key=value)")
        if not sections:
            raise CfgError(path, number, f"{key!r} appears before any [section]")
        if key in sections[-1]:
            raise CfgError(path, number, f"duplicate key {key!r} in [{sections[-1]['type']}]")
        sections[-1][key] = parse_value(value)
    net_info = {}
    if sections and sections[0]["type"] == "net":
        net_info = sections.pop(0)
    for section in sections:
        if section["type"] == "net":
            raise CfgError(path, section["_line"], "[net] must be the first section")
    if not sections:
        raise CfgError(path, len(lines), "no layers")
    return net_info, sections

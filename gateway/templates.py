"""google.api.http path templates: parsing and matching (pure, no I/O).

Grammar (google/api/http.proto)::

    Template = "/" Segments [ Verb ] ;
    Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;
    Verb     = ":" LITERAL ;

A template compiles to one anchored regular expression with a named group
per variable. ``{name}`` alone stands for ``{name=*}`` (one segment); a
variable may span several segments (``{name=projects/*/orders/**}``), in which
case its value keeps the slashes. Values are percent-decoded after matching,
so ``%2F`` inside a one-segment variable is data, not a separator.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

_LITERAL = re.compile(r"^[A-Za-z0-9._~!$&'()+,;=@%-]+$")
_FIELD_PATH = re.compile(r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*$", re.IGNORECASE)


class TemplateError(ValueError):
    """A path template that does not follow the google.api.http grammar."""


@dataclass(frozen=True, slots=True)
class Variable:
    """One ``{field.path=...}`` of a template."""

    field_path: str
    # The segments the variable spans, e.g. ("*",) or ("orders", "*").
    segments: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PathTemplate:
    """A compiled template; :meth:`match` returns the variables' values."""

    template: str
    regex: re.Pattern[str]
    variables: tuple[Variable, ...]
    verb: str
    # Number of literal segments: more literals means a more specific route.
    literal_count: int
    segment_count: int

    def match(self, path: str) -> dict[str, str] | None:
        """Variable values (percent-decoded) when ``path`` (raw, still
        percent-encoded) matches, else None."""
        m = self.regex.match(path)
        if m is None:
            return None
        return {var.field_path: unquote(m.group(f"v{i}")) for i, var in enumerate(self.variables)}

    @property
    def specificity(self) -> tuple[int, int, int]:
        """Sort key: verbs first, then more literal segments, then longer templates."""
        return (1 if self.verb else 0, self.literal_count, self.segment_count)


def _segment_regex(segment: str) -> str:
    if segment == "*":
        return r"[^/]+"
    if segment == "**":
        return r".+"
    if not _LITERAL.match(segment):
        raise TemplateError(f"bad literal segment {segment!r}")
    return re.escape(segment)


def _split_segments(text: str) -> list[str]:
    """Split on "/" outside braces."""
    parts: list[str] = []
    depth = 0
    current = ""
    for ch in text:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth < 0:
                raise TemplateError("unbalanced '}'")
        if ch == "/" and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    if depth != 0:
        raise TemplateError("unbalanced '{'")
    parts.append(current)
    return parts


def parse_template(template: str) -> PathTemplate:
    """Compile a google.api.http path template; raises :class:`TemplateError`."""
    if not template.startswith("/"):
        raise TemplateError(f"template must start with '/': {template!r}")
    body = template[1:]
    verb = ""
    # The verb is a ":" after the last "/" that is outside any variable.
    last = _split_segments(body)[-1]
    if not last.endswith("}") and ":" in last:
        head, verb = last.rsplit(":", 1)
        if not verb or not _LITERAL.match(verb):
            raise TemplateError(f"bad verb in {template!r}")
        body = body[: len(body) - len(last)] + head
    segments = _split_segments(body)
    if any(s == "" for s in segments):
        raise TemplateError(f"empty segment in {template!r}")
    pattern = ""
    variables: list[Variable] = []
    literals = 0
    count = 0
    for segment in segments:
        if segment.startswith("{"):
            if not segment.endswith("}"):
                raise TemplateError(f"bad variable {segment!r}")
            inner = segment[1:-1]
            name, eq, sub = inner.partition("=")
            if not _FIELD_PATH.match(name):
                raise TemplateError(f"bad field path {name!r}")
            if name in {v.field_path for v in variables}:
                raise TemplateError(f"variable {name!r} bound twice")
            sub_segments = tuple(sub.split("/")) if eq else ("*",)
            if any(s == "" or "{" in s for s in sub_segments):
                raise TemplateError(f"bad variable segments {sub!r}")
            regex = "/".join(_segment_regex(s) for s in sub_segments)
            pattern += f"/(?P<v{len(variables)}>{regex})"
            variables.append(Variable(name, sub_segments))
            count += len(sub_segments)
        else:
            pattern += "/" + _segment_regex(segment)
            if segment not in ("*", "**"):
                literals += 1
            count += 1
    if verb:
        pattern += ":" + re.escape(verb)
    return PathTemplate(
        template=template,
        regex=re.compile(f"^{pattern}$"),
        variables=tuple(variables),
        verb=verb,
        literal_count=literals,
        segment_count=count,
    )


def openapi_path(template: PathTemplate) -> str:
    """The OpenAPI form of a template: ``/v1/orders/{order_id}:cancel``.

    Multi-segment variables become one ``{name}`` parameter (OpenAPI has no
    multi-segment parameters; clients percent-encode the slashes)."""
    out = template.template
    for var in template.variables:
        out = re.sub(r"\{" + re.escape(var.field_path) + r"(=[^}]*)?\}", "{" + var.field_path + "}", out)
    return out

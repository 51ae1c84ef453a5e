"""Secrets by value: every string loadgen writes to disk or prints passes through `redact`, which replaces the
values of the run's secrets with `***` wherever they appear.

Looking for flag names (`--api-key`) misses the other ways a secret arrives: a URL's userinfo
(`http://user:key@host`), an engine's own key passed through `--engine-arg`, an environment variable inherited by
the engine, a key echoed inside an error message. Knowing the values instead covers every writer at once.

The secrets are those of this process's inputs: its command line (and any argv a caller hands to `remember_argv`,
as `loadgen.cli.main(argv)` does), values given to `remember`, and environment variables whose names say they are
secret (OPENAI_API_KEY, HF_TOKEN, ...). They are a property of the process, which is why they live in one
process-wide set rather than being passed to every writer (listeners, the locustfile, worker processes' records).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import quote, unquote, urlsplit

MASK = "***"
# a name is secret when one of its words (split at - _ . and spaces) is one of these, or it contains one of the
# longer ones: --api-key, --hf-token, HF_TOKEN, OPENAI_API_KEY, AWS_SECRET_ACCESS_KEY, --ssl-keyfile-password;
# not --max-num-batched-tokens or TOKENIZERS_PARALLELISM
SECRET_WORDS = frozenset({"key", "apikey", "token", "secret", "password", "passwd", "credential",
                          "credentials"})
SECRET_PARTS = ("apikey", "secret", "password", "passwd", "accesstoken", "authtoken")
# environment values shorter than this are flags (`SOME_TOKEN=1`), not secrets; values given on the command line
# are always secrets, whatever their length
MIN_ENV_SECRET = 6

_remembered: set[str] = set()


def secret_name(name: str) -> bool:
    words = [w for w in re.split(r"[-_.\s]+", name.lower().lstrip("-")) if w]
    return any(w in SECRET_WORDS for w in words) or any(p in name.lower().replace("-", "").replace("_", "")
                                                        for p in SECRET_PARTS)


_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]{0,15}://[^\s/?#'\"]+")


def url_secrets(text: str) -> set[str]:
    """The password of every URL in `text` (the user name when there is no password: a token as user)."""
    found: set[str] = set()
    if "@" not in text or "://" not in text:  # most text (PATH, every record) has no userinfo: skip the regex
        return found
    for match in _URL.finditer(text):
        try:
            parts = urlsplit(match.group(0))
        except ValueError:
            continue
        if "@" not in parts.netloc:
            continue
        userinfo = parts.netloc.rsplit("@", 1)[0]
        user, sep, password = userinfo.partition(":")
        value = password if sep else user
        if value:
            found.add(value)
    return found


def argv_secrets(argv: Iterable[str]) -> set[str]:
    """Values of secret-named flags (`--api-key X`, `--api-key=X`, also inside --engine-arg, in either of its
    forms) and URL passwords anywhere in the command line."""
    args = [str(a) for a in argv]
    flat: list[str] = []  # --engine-arg values are a command line of their own: unwrap them in order
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--engine-arg" and i + 1 < len(args):
            flat.extend(_split_engine_arg(args[i + 1]))
            i += 2
            continue
        if arg.startswith("--engine-arg="):
            flat.extend(_split_engine_arg(arg.split("=", 1)[1]))
        else:
            flat.append(arg)
        i += 1
    found: set[str] = set()
    for i, arg in enumerate(flat):
        found |= url_secrets(arg)
        if not arg.startswith("-"):
            continue
        name, eq, value = arg.partition("=")
        if "url" in name.lower() or "host" in name.lower():  # a URL typed without its scheme still has userinfo
            given = value if eq else (flat[i + 1] if i + 1 < len(flat) else "")
            if "://" not in given:
                found |= url_secrets("http://" + given)
        if not secret_name(name):
            continue
        if eq:
            if value:
                found.add(value)
        elif i + 1 < len(flat) and flat[i + 1]:
            found.add(flat[i + 1])
    return found


def _split_engine_arg(value: str) -> list[str]:
    # `--engine-arg "--api-key abc"` is one string holding a flag and its value
    return value.split() if " " in value.strip() else [value]


def env_secrets(env: Mapping[str, str]) -> set[str]:
    return {v for k, v in env.items() if secret_name(k) and len(v) >= MIN_ENV_SECRET} | {
        s for v in env.values() for s in url_secrets(v)}


def remember(*values: str | None) -> None:
    _remembered.update(v for v in values if v)


def remember_argv(argv: Iterable[str]) -> None:
    _remembered.update(argv_secrets(argv))


def remember_env(env: Mapping[str, str]) -> None:
    """An environment handed to an engine: its secret-named values, however short."""
    _remembered.update(v for k, v in env.items() if secret_name(k) and v)


@lru_cache(maxsize=4)
def _secret_keys(keys: frozenset[str]) -> tuple[str, ...]:
    return tuple(k for k in keys if secret_name(k))


@lru_cache(maxsize=4)
def _argv_secrets(argv: tuple[str, ...]) -> frozenset[str]:
    return frozenset(argv_secrets(argv))


def known() -> set[str]:
    """Called for every write: the environment's secret-named variables are found once per set of names."""
    env = {k: os.environ[k] for k in _secret_keys(frozenset(os.environ)) if k in os.environ}
    urls = {s for v in os.environ.values() if "://" in v for s in url_secrets(v)}
    return _remembered | _argv_secrets(tuple(sys.argv)) | env_secrets(env) | urls


@lru_cache(maxsize=8)
def _pattern(values: frozenset[str]) -> re.Pattern | None:
    forms = {f for v in values for f in (v, quote(v, safe=""), unquote(v), json.dumps(v)[1:-1]) if f}
    if not forms:
        return None
    # longest first, so a secret that contains another is masked whole; an alphanumeric edge must not continue
    # into a longer word ("abc" is not masked inside "abcdef")
    parts = []
    for f in sorted(forms, key=len, reverse=True):
        left = r"(?<![A-Za-z0-9])" if f[0].isalnum() else ""
        right = r"(?![A-Za-z0-9])" if f[-1].isalnum() else ""
        parts.append(left + re.escape(f) + right)
    return re.compile("|".join(parts))


def redact(data: Any, secrets: set[str] | None = None) -> Any:
    """`data` (a string, or lists and dicts of them, as written to JSON) with every secret value masked."""
    pattern = _pattern(frozenset(known() if secrets is None else secrets))
    return data if pattern is None else _apply(data, pattern)


def _apply(data: Any, pattern: re.Pattern) -> Any:
    if isinstance(data, str):
        return pattern.sub(MASK, data)
    if isinstance(data, dict):
        return {k: _apply(v, pattern) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_apply(v, pattern) for v in data]
    return data

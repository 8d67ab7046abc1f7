"""Product names and care tips per SKU (or SKU prefix) and locale, from ``tips.yaml``."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path

import yaml

from services.notifier.templates import DEFAULT_LOCALE, LOCALES, resolve_locale

DEFAULT_PATH = Path(__file__).with_name("tips.yaml")
CACHE_MAX = 100_000
_FIELDS = ("name", "tip")


class TipsError(Exception):
    """The tips file cannot be used; ``problems`` lists everything wrong with it."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("problems in the tips catalogue:\n"
                         + "\n".join(f"  {problem}" for problem in self.problems))


@dataclass(frozen=True)
class Tips:
    """Names and tips by SKU; ``entries`` keys are SKUs or prefixes ending in ``*``."""

    entries: Mapping[str, Mapping[str, Mapping[str, str]]]  # key -> field -> locale -> text
    default_locale: str = DEFAULT_LOCALE
    #: (sku, field, locale) -> text: every told change asks, and the prefix search is not free
    _seen: dict[tuple[str, str, str | None], str | None] = dataclass_field(
        default_factory=dict, init=False, repr=False, compare=False)

    def _lookup(self, sku: str, field: str, locale: str | None) -> str | None:
        key = (sku, field, locale)
        if key not in self._seen:
            if len(self._seen) > CACHE_MAX:
                self._seen.clear()
            self._seen[key] = self._search(sku, field, locale)
        return self._seen[key]

    def _search(self, sku: str, field: str, locale: str | None) -> str | None:
        # The SKU's own entry first, then prefixes, longest (most specific) first.
        prefixes = sorted((key for key in self.entries
                           if key.endswith("*") and sku.startswith(key[:-1])),
                          key=len, reverse=True)
        for key in ([sku] if sku in self.entries else []) + prefixes:
            texts = self.entries[key].get(field)
            if texts:
                return texts.get(resolve_locale(locale, texts, self.default_locale))
        return None

    def name_for(self, sku: str, locale: str | None) -> str:
        """The product's name in ``locale``, or the SKU itself when the catalogue has none."""
        return self._lookup(sku, "name", locale) or sku

    def tips_for(self, skus: Iterable[str], locale: str | None) -> list[str]:
        """The tips for an order's SKUs in ``locale``, each once, in the order of the SKUs."""
        found = (self._lookup(sku, "tip", locale) for sku in skus)
        return list(dict.fromkeys(tip for tip in found if tip))


def load_tips(path: str | Path | None = None, *, locales: Sequence[str] = LOCALES) -> Tips:
    """Read and check the tips file (default: the shipped one): every name and tip must be
    given in every one of ``locales``; raise :class:`TipsError` listing every problem."""
    source = Path(path) if path is not None else DEFAULT_PATH
    try:
        document = yaml.safe_load(source.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise TipsError([f"{source.name}: cannot read: {exc}".replace("\n", " ")]) from exc
    products = document.get("products") if isinstance(document, dict) else None
    if not isinstance(products, dict):
        raise TipsError([f"{source.name}: must be a mapping with 'products'"])
    problems: list[str] = []
    entries: dict[str, dict[str, dict[str, str]]] = {}
    for key, entry in products.items():
        problems += [f"{source.name}: {key}: {what}" for what in _check(entry, locales)]
        if isinstance(entry, dict):
            entries[str(key)] = {field: {str(tag): str(text) for tag, text in entry[field].items()}
                                 for field in _FIELDS if isinstance(entry.get(field), dict)}
    if problems:
        raise TipsError(problems)
    return Tips(entries)


def _check(entry: object, locales: Sequence[str]) -> list[str]:
    if not isinstance(entry, dict) or not entry:
        return ["must have a name and/or a tip"]
    whats = [f"unknown key {key!r} (an entry has name and tip)"
             for key in sorted(set(entry) - set(_FIELDS))]
    for field in _FIELDS:
        texts = entry.get(field)
        if texts is None:
            continue
        if not isinstance(texts, dict):
            whats.append(f"{field} must map locale -> text")
            continue
        whats += [f"{field} has no {locale} text" for locale in locales
                  if not (isinstance(texts.get(locale), str) and texts[locale].strip())]
    return whats


@functools.cache
def default_tips() -> Tips:
    """The shipped tips, loaded and checked once per process."""
    return load_tips()


def tips_for(skus: Iterable[str], locale: str | None) -> list[str]:
    return default_tips().tips_for(skus, locale)


def name_for(sku: str, locale: str | None) -> str:
    return default_tips().name_for(sku, locale)

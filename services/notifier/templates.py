"""Customer-message templates: load the catalogue, check every template once, render per send.

The catalogue is ``templates/*.yaml`` beside this module, one file per locale (layout in
``templates/zh-CN.yaml``). Everything that can be wrong with a template — YAML, Jinja syntax,
a name that is not one of :data:`VARIABLES`, a missing (trigger, channel, locale), a rule of
a provider — is found by :func:`load_catalogue`, which raises one :class:`CatalogueError`
listing every problem; :meth:`Catalogue.render` then only clamps real values to the hard
limits, because real values can be longer than the samples the lint saw.

Provider facts the rules rely on (re-check them when a provider changes its rules):

- SMS length. Aliyun "短信发送规则" (help.aliyun.com/document_detail/44335.html) and Tencent
  Cloud (tencentcloud.com/document/product/382/34671): the signature counts, its 【】 or []
  included; each character counts one; at most 70 is one SMS and a longer one is a long SMS
  billed in parts of 67; a pure GSM-7 message (international) takes 160, parts of 153, with
  ``^{}\\[~]|€`` counting two; the whole message is at most 500 characters.
- SMS variables. Aliyun notification templates: 1-35 characters per variable
  (help.aliyun.com/document_detail/44357.html, "单个变量的长度限制为1~35个字符"; the API
  answers isv.PARAM_LENGTH_LIMIT "参数超过长度限制:35"); each variable once in the text, no two
  variables side by side, no 【】 in the text (document_detail/463270). Tencent Cloud: 12
  characters for personal accounts, no limit for verified companies (tencentcloud.com/zh/
  document/product/382/40653). Neither takes a link in a variable (Aliyun
  isv.PARAM_NOT_SUPPORT_URL; Tencent FAQ 382/13301): a link must be fixed, approved text.
- WeChat template messages since 2023-05-04 (developers.weixin.qq.com/community/develop/doc/
  000a2ae286cdc0f41a8face4c51801): the first line and the remark are dropped, colours and
  emoji are removed, a field shows at most 20 characters and no line break.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import jinja2
import yaml
from jinja2 import StrictUndefined, meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

TRIGGERS = ("confirmation", "shipped", "out_for_delivery", "delivered", "rejected", "cancelled")
CHANNELS = ("inapp", "email", "sms", "wechat")
VARIABLES = frozenset({
    "nickname", "order_no", "channel", "status", "items", "ship_by", "tips", "after_sales_url",
    "carrier", "tracking_number", "out_of_stock", "refund",
})
DEFAULT_DIR = Path(__file__).with_name("templates")
DEFAULT_LOCALE = "zh-CN"
LOCALES = ("zh-CN", "en")

BANNED_WORDS = (
    "限时抢购", "最后机会", "秒杀", "清仓", "错过再等一年", "抢购", "大促", "特价", "优惠券",
    "limited time", "last chance", "flash sale", "clearance", "act now", "don't miss",
)
# What each trigger's message must say, whatever the channel: which order, and the specifics.
REQUIRED_VARIABLES: Mapping[str, frozenset[str]] = {
    "confirmation": frozenset({"order_no", "items", "ship_by"}),
    "shipped": frozenset({"order_no", "carrier", "tracking_number"}),
    "out_for_delivery": frozenset({"order_no"}),
    "delivered": frozenset({"order_no"}),
    "rejected": frozenset({"order_no", "out_of_stock"}),
    "cancelled": frozenset({"order_no", "refund"}),
}
SMS_SINGLE, SMS_PART = 70, 67
SMS_SINGLE_GSM7, SMS_PART_GSM7 = 160, 153
SMS_MAX_CHARS = 500
SMS_PARAM_LIMITS: Mapping[str, int | None] = {"aliyun": 35, "tencent": None}
WECHAT_FIELD_LIMIT = 20
WECHAT_DROPPED_FIELDS = ("first", "remark")

_GSM7 = frozenset("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡"
                  "ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
_GSM7_EXTENDED = frozenset("^{}\\[~]|€\f")
# Pictographs, dingbats, flags, keycaps and the joiners that build emoji sequences: what
# WeChat strips, and what SMS gateways garble.
EMOJI = re.compile("[\U0001F000-\U0001FAFF\u2600-\u27BF\u2B00-\u2BFF\u2190-\u21FF"
                   "\u3030\u303D\u3297\u3299\uFE0E\uFE0F\u200D\u20E3\U000E0020-\U000E007F]")
# A link as SMS gateways see one: a scheme, www., or a bare domain (its edges are ASCII
# lookarounds, not \b, which does not split "访问shop.cn").
URL = re.compile(r"(?i)(?:https?://|www\.)\S+"
                 r"|(?<![a-z0-9-])[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:com|cn|net|org|io|cc|co|me"
                 r"|top|shop|xyz|info|vip|link|ly)(?![a-z0-9-])(?:/\S*)?")
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NONE = re.compile(r"\bNone\b")
_ALIYUN_CODE = re.compile(r"^SMS_\d+$")
_TENCENT_ID = re.compile(r"^\d+$")

# channel -> (required keys, optional keys) of one catalogue entry
_SHAPES: Mapping[str, tuple[frozenset[str], frozenset[str]]] = {
    "inapp": (frozenset({"title", "body"}), frozenset({"url"})),
    "email": (frozenset({"subject", "body"}), frozenset()),
    "sms": (frozenset({"codes", "params", "text"}), frozenset()),
    "wechat": (frozenset({"template_id", "data"}), frozenset({"url"})),
}


# --- results and errors --------------------------------------------------------------------


@dataclass(frozen=True)
class Rendered:
    """One message, ready for its channel. ``params`` are the SMS parameters (in the order
    Tencent's TemplateParamSet takes them) or the WeChat data fields; ``text`` is the body,
    the SMS as the customer reads it (without the signature) or the WeChat values joined."""

    locale: str
    title: str | None = None
    subject: str | None = None
    text: str = ""
    params: dict[str, str] = field(default_factory=dict)
    template_codes: dict[str, str] = field(default_factory=dict)
    url: str | None = None


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the catalogue, and where."""

    file: str
    what: str
    trigger: str = ""
    channel: str = ""
    locale: str = ""

    def __str__(self) -> str:
        where = "/".join(part for part in (self.trigger, self.channel, self.locale) if part)
        return f"{self.file}: {where}: {self.what}" if where else f"{self.file}: {self.what}"


class CatalogueError(Exception):
    """The catalogue cannot be used; ``problems`` lists everything wrong with it."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        # By place, so a file's problems read together; a stable sort keeps each one's order.
        self.problems = tuple(sorted(problems, key=lambda p: (p.file, p.trigger, p.channel,
                                                               p.locale)))
        lines = "\n".join(f"  {problem}" for problem in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in the template catalogue:\n{lines}")


class TemplateError(Exception):
    """A render request the catalogue cannot serve: unknown trigger or channel, bad variables."""


@dataclass(frozen=True)
class Rules:
    """The lint's settings; :func:`load_catalogue` takes each as a keyword."""

    banned_words: tuple[str, ...] = BANNED_WORDS
    sms_signature: str = "orderstream"
    sms_max_parts: int = 1
    sms_param_limits: Mapping[str, int | None] = field(
        default_factory=lambda: dict(SMS_PARAM_LIMITS))
    wechat_field_limit: int = WECHAT_FIELD_LIMIT
    required_variables: Mapping[str, frozenset[str]] = field(
        default_factory=lambda: dict(REQUIRED_VARIABLES))


# --- locales -------------------------------------------------------------------------------


def resolve_locale(locale: str | None, available: Iterable[str],
                   default: str = DEFAULT_LOCALE) -> str:
    """The best of ``available`` for a customer's ``locale``: the same tag, else the same
    language (``en-US`` -> ``en``, ``zh-TW`` -> ``zh-CN``), else ``default``."""
    by_tag = {tag.lower(): tag for tag in available}
    if not locale:
        return default
    wanted = locale.strip().replace("_", "-").lower()
    if wanted in by_tag:
        return by_tag[wanted]
    language = wanted.split("-")[0]
    if language in by_tag:
        return by_tag[language]
    same_language = sorted(tag for low, tag in by_tag.items() if low.split("-")[0] == language)
    return same_language[0] if same_language else default


# --- samples the lint renders every template with ------------------------------------------

_ZH_ITEMS = [
    {"sku": "TEA-LJ-250G", "name": "西湖龙井 明前特级 250克礼盒装", "quantity": 2},
    {"sku": "CUP-QC-01", "name": "青瓷品茗杯", "quantity": 1},
    {"sku": "DY-YOGURT-1L", "name": "原味酸奶 1升", "quantity": 3},
]
_EN_ITEMS = [
    {"sku": "TEA-LJ-250G", "name": "West Lake Longjing green tea, 250 g gift box", "quantity": 2},
    {"sku": "CUP-QC-01", "name": "Celadon tea cup", "quantity": 1},
    {"sku": "DY-YOGURT-1L", "name": "Plain yoghurt, 1 litre", "quantity": 3},
]
# Per locale: a full context (every optional value present, long-ish) and a sparse one (None,
# empty lists, refund False), so both sides of every {% if %} are linted.
SAMPLES: Mapping[str, tuple[Mapping[str, Any], ...]] = {
    "zh-CN": (
        {"nickname": "一只爱喝明前龙井的猫", "order_no": "4012345678901234567", "channel": "tmall",
         "status": "PAID", "items": _ZH_ITEMS, "ship_by": "6月18日（周二）17:00",
         "tips": ["茶叶请密封、避光、防潮保存", "酸奶收到后请冷藏保存（2-6℃）"],
         "after_sales_url": "https://shop.example.com/after-sales/4012345678901234567",
         "carrier": "顺丰速运", "tracking_number": "SF1234567890123",
         "out_of_stock": [_ZH_ITEMS[0]["name"], _ZH_ITEMS[1]["name"]], "refund": True},
        {"nickname": "顾客", "order_no": "240618-09", "channel": "pos", "status": "RESERVED",
         "items": _ZH_ITEMS[1:2], "ship_by": "今天17:00", "tips": [],
         "after_sales_url": "https://shop.example.com/after-sales", "carrier": None,
         "tracking_number": None, "out_of_stock": [], "refund": False},
    ),
    "en": (
        {"nickname": "Alexandra Montgomery-Smith", "order_no": "4012345678901234567",
         "channel": "shopify", "status": "PAID", "items": _EN_ITEMS,
         "ship_by": "Tue 18 Jun at 17:00",
         "tips": ["Keep the tea sealed, dry and away from light.",
                  "Keep the yoghurt refrigerated (2-6 °C) once it arrives."],
         "after_sales_url": "https://shop.example.com/after-sales/4012345678901234567",
         "carrier": "SF Express", "tracking_number": "SF1234567890123",
         "out_of_stock": [_EN_ITEMS[0]["name"], _EN_ITEMS[1]["name"]], "refund": True},
        {"nickname": "customer", "order_no": "1042", "channel": "web", "status": "RESERVED",
         "items": _EN_ITEMS[1:2], "ship_by": "today at 17:00", "tips": [],
         "after_sales_url": "https://shop.example.com/after-sales", "carrier": None,
         "tracking_number": None, "out_of_stock": [], "refund": False},
    ),
}


# --- the engine ----------------------------------------------------------------------------


def environment() -> ImmutableSandboxedEnvironment:
    """The Jinja engine: sandboxed (no unsafe attributes, and the immutable variant cannot
    modify the lists it is given), undefined names fail, no HTML escaping for plain text, and
    no globals (range, lipsum, namespace...): a template sees the variables and nothing else."""
    env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False,
                                        trim_blocks=True, lstrip_blocks=True)
    env.globals.clear()
    return env


@dataclass(frozen=True)
class _Entry:
    """One compiled template: the Jinja parts of one (trigger, channel, locale)."""

    trigger: str
    channel: str
    locale: str
    file: str
    fields: Mapping[str, jinja2.Template]  # title/subject/body/url, as the channel has them
    params: Mapping[str, jinja2.Template]  # SMS parameters or WeChat data, in order
    text: str = ""  # the approved SMS text, ${name} per parameter
    codes: Mapping[str, str] = field(default_factory=dict)
    used: frozenset[str] = frozenset()  # every variable name the templates mention


def _render_raw(entry: _Entry, context: Mapping[str, Any]) -> Rendered:
    """The templates' output as written, before any hard limit."""
    def out(template: jinja2.Template) -> str:
        return template.render(context).strip()

    fields = {name: out(template) for name, template in entry.fields.items()}
    params = {name: out(template) for name, template in entry.params.items()}
    if entry.channel == "sms":
        text = _fill(entry.text, params)
    elif entry.channel == "wechat":
        text = "\n".join(params.values())
    else:
        text = fields["body"]
    return Rendered(locale=entry.locale, title=fields.get("title"), subject=fields.get("subject"),
                    text=text, params=params, template_codes=dict(entry.codes),
                    url=fields.get("url") or None)


def _fill(text: str, params: Mapping[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: params.get(m.group(1), m.group(0)), text)


def _shorten(value: str, limit: int) -> str:
    if len(value) <= limit:
        return value
    ellipsis = "..." if all(ch.isascii() for ch in value) else "…"
    return value[:max(limit - len(ellipsis), 0)] + ellipsis


def _one_line(value: str) -> str:
    return " ".join(EMOJI.sub("", value).split())


def _without_links(value: str) -> str:
    # Until none is left: removing one link can join its neighbours into another ("a.co" +
    # "m"). A space replaces each, and each pass shortens the value, so this ends.
    while URL.search(value):
        value = URL.sub(" ", value)
    return _one_line(value)


def _sms_value(value: str, limit: int | None) -> str:
    """A parameter the providers accept: no link (isv.PARAM_NOT_SUPPORT_URL), one line, at
    most ``limit`` characters, never empty (an empty variable is refused too)."""
    value = _without_links(value)
    if limit is not None:
        # Shortening can cut a word into a domain ("x.comedy" -> "x.co…"): clean it again.
        value = _without_links(_shorten(value, limit))
    return value or "-"


def sms_param_limit(codes: Iterable[str], limits: Mapping[str, int | None]) -> int | None:
    """The tightest per-variable limit of the providers an SMS template is approved with."""
    known = [limit for provider in codes if (limit := limits.get(provider)) is not None]
    return min(known) if known else None


def _enforce(entry: _Entry, rendered: Rendered, rules: Rules) -> Rendered:
    """Clamp real values to what the provider takes: WeChat fields on one line, no emoji, at
    most 20 characters; SMS parameters without links, never empty, within the variable limit."""
    if entry.channel == "wechat":
        fields = {name: _shorten(_one_line(value), rules.wechat_field_limit)
                  for name, value in rendered.params.items()}
        return replace(rendered, params=fields, text="\n".join(fields.values()))
    if entry.channel == "sms":
        limit = sms_param_limit(entry.codes, rules.sms_param_limits)
        params = {name: _sms_value(value, limit) for name, value in rendered.params.items()}
        return replace(rendered, params=params, text=_fill(entry.text, params))
    return rendered


# --- SMS length ----------------------------------------------------------------------------


def sms_length(message: str) -> tuple[int, bool]:
    """(characters as billed, whether the message is pure GSM-7)."""
    if all(ch in _GSM7 or ch in _GSM7_EXTENDED for ch in message):
        return len(message) + sum(ch in _GSM7_EXTENDED for ch in message), True
    return len(message), False


def sms_message(text: str, signature: str) -> str:
    """The message as the phone shows it: the provider puts the signature in front, in [] for
    a pure GSM-7 text and in 【】 otherwise."""
    plain = f"[{signature}]{text}"
    return plain if sms_length(plain)[1] else f"【{signature}】{text}"


def sms_parts(message: str) -> int:
    """How many SMS the providers bill ``message`` as."""
    length, gsm7 = sms_length(message)
    single, part = (SMS_SINGLE_GSM7, SMS_PART_GSM7) if gsm7 else (SMS_SINGLE, SMS_PART)
    return 1 if length <= single else math.ceil(length / part)


# --- the catalogue -------------------------------------------------------------------------


@dataclass(frozen=True)
class Catalogue:
    """Every checked template, by (trigger, channel, locale)."""

    entries: Mapping[tuple[str, str, str], _Entry]
    rules: Rules
    default_locale: str = DEFAULT_LOCALE
    directory: str = ""

    @property
    def locales(self) -> tuple[str, ...]:
        return tuple(sorted({locale for _, _, locale in self.entries}))

    def resolve_locale(self, locale: str | None) -> str:
        return resolve_locale(locale, self.locales, self.default_locale)

    def render(self, trigger: str, channel: str, locale: str | None,
               variables: Mapping[str, Any]) -> Rendered:
        """The message for ``trigger`` on ``channel`` in the customer's locale (or its
        fallback), with the real values clamped to the channel's hard limits."""
        if trigger not in TRIGGERS:
            raise TemplateError(f"unknown trigger {trigger!r}; known: {', '.join(TRIGGERS)}")
        if channel not in CHANNELS:
            raise TemplateError(f"unknown channel {channel!r}; known: {', '.join(CHANNELS)}")
        chosen = self.resolve_locale(locale)
        # A locale file may cover only some channels: the rest speak the default locale.
        entry = (self.entries.get((trigger, channel, chosen))
                 or self.entries.get((trigger, channel, self.default_locale)))
        if entry is None:
            raise TemplateError(f"no template for {trigger}/{channel}/{chosen}")
        missing = VARIABLES - variables.keys()
        if missing:
            raise TemplateError(f"{trigger}/{channel}: variables missing: {sorted(missing)}")
        context = {name: variables[name] for name in VARIABLES}
        try:
            rendered = _render_raw(entry, context)
        except jinja2.TemplateError as exc:
            raise TemplateError(f"{trigger}/{channel}/{chosen}: {exc}") from exc
        return _enforce(entry, rendered, self.rules)

    def summary(self) -> str:
        return (f"{len(self.entries)} templates, no problems: {len(TRIGGERS)} triggers x "
                f"{len(CHANNELS)} channels x locales {', '.join(self.locales)}"
                + (f" ({self.directory})" if self.directory else ""))


def load_catalogue(directory: str | Path | None = None, *,
                   locales: Sequence[str] = LOCALES,
                   default_locale: str = DEFAULT_LOCALE,
                   banned_words: Sequence[str] = BANNED_WORDS,
                   sms_signature: str = "orderstream",
                   sms_max_parts: int = 1,
                   sms_param_limits: Mapping[str, int | None] = SMS_PARAM_LIMITS,
                   wechat_field_limit: int = WECHAT_FIELD_LIMIT,
                   required_variables: Mapping[str, frozenset[str]] = REQUIRED_VARIABLES,
                   samples: Mapping[str, Sequence[Mapping[str, Any]]] = SAMPLES) -> Catalogue:
    """Read ``directory/*.yaml`` (default: the shipped catalogue), compile and lint every
    template against ``samples``; raise :class:`CatalogueError` listing every problem.

    ``locales`` must each be covered, ``default_locale`` is the fallback of every unknown
    locale; ``sms_signature`` is the bare signature name (its brackets are counted);
    ``sms_max_parts`` is how many billed parts one SMS may take (1: one plain SMS)."""
    rules = Rules(banned_words=tuple(banned_words), sms_signature=sms_signature,
                  sms_max_parts=sms_max_parts, sms_param_limits=dict(sms_param_limits),
                  wechat_field_limit=wechat_field_limit,
                  required_variables=dict(required_variables))
    folder = Path(directory) if directory is not None else DEFAULT_DIR
    problems: list[Problem] = []
    entries: dict[tuple[str, str, str], _Entry] = {}
    claims: dict[tuple[str, str, str], str] = {}
    env = environment()
    files = sorted(folder.glob("*.yaml")) if folder.is_dir() else []
    if not files:
        problems.append(Problem(str(folder), "no *.yaml template files"))
    for path in files:
        _load_file(path, env, rules, entries, claims, problems)
    for (trigger, channel, locale), file in claims.items():
        if (trigger, channel, locale) not in entries and not _has_problem(
                problems, file, trigger, channel, locale):
            problems.append(Problem(file, "missing template", trigger, channel, locale))
    covered = {locale for _, _, locale in claims}
    for locale in dict.fromkeys([*locales, default_locale]):
        if locale not in covered:
            problems.append(Problem(folder.name, f"no templates for locale {locale}"))
    for entry in entries.values():
        problems.extend(_lint_entry(entry, rules, samples, default_locale))
    if problems:
        raise CatalogueError(problems)
    return Catalogue(entries=entries, rules=rules, default_locale=default_locale,
                     directory=str(folder))


def _has_problem(problems: Sequence[Problem], file: str, trigger: str, channel: str,
                 locale: str) -> bool:
    return any((p.file, p.trigger, p.channel, p.locale) == (file, trigger, channel, locale)
               for p in problems)


def _load_file(path: Path, env: jinja2.Environment, rules: Rules,
               entries: dict[tuple[str, str, str], _Entry], claims: dict[tuple[str, str, str], str],
               problems: list[Problem]) -> None:
    """Compile one locale file into ``entries``; note what it claims to cover in ``claims``."""
    file = path.name
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        problems.append(Problem(file, f"not valid YAML: {exc}".replace("\n", " ")))
        return
    if not isinstance(document, dict):
        problems.append(Problem(file, "must be a mapping with locale, channels and templates"))
        return
    for key in sorted(set(document) - {"locale", "channels", "templates"}):
        problems.append(Problem(file, f"unknown key {key!r}"))
    locale = document.get("locale")
    channels = document.get("channels", list(CHANNELS))
    templates = document.get("templates")
    if not isinstance(locale, str) or not locale:
        problems.append(Problem(file, "locale must be a locale tag such as zh-CN"))
        return
    if not isinstance(channels, list) or not set(channels) <= set(CHANNELS):
        problems.append(Problem(file, f"channels must be a list of {', '.join(CHANNELS)}"))
        return
    if not isinstance(templates, dict):
        problems.append(Problem(file, "templates must map trigger -> channel -> template"))
        return
    for trigger in TRIGGERS:
        for channel in channels:
            claims.setdefault((trigger, channel, locale), file)
    for trigger, by_channel in templates.items():
        if trigger not in TRIGGERS:
            problems.append(Problem(file, f"unknown trigger (known: {', '.join(TRIGGERS)})",
                                    str(trigger), locale=locale))
            continue
        if not isinstance(by_channel, dict):
            problems.append(Problem(file, "must map channel -> template", trigger, locale=locale))
            continue
        for channel, spec in by_channel.items():
            where = (file, trigger, str(channel), locale)
            if channel not in channels:
                problems.append(Problem(file, f"channel not in this file's channels {channels}",
                                        trigger, str(channel), locale))
            elif (trigger, channel, locale) in entries:
                problems.append(Problem(file, "defined twice (also in "
                                        f"{entries[trigger, channel, locale].file})",
                                        trigger, channel, locale))
            else:
                entry, whats = _compile(env, rules, where, spec)
                problems.extend(Problem(file, what, trigger, channel, locale) for what in whats)
                if entry is not None:
                    entries[trigger, channel, locale] = entry


def _compile(env: jinja2.Environment, rules: Rules, where: tuple[str, str, str, str],
             spec: Any) -> tuple[_Entry | None, list[str]]:
    """One YAML entry -> a compiled entry, or None and what is wrong with it."""
    file, trigger, channel, locale = where
    if not isinstance(spec, dict):
        return None, ["must be a mapping"]
    required, optional = _SHAPES[channel]
    whats = [f"missing {key!r}" for key in sorted(required - spec.keys())]
    allowed = ", ".join(sorted(required | optional))
    whats += [f"unknown key {key!r} (a {channel} template has {allowed})"
              for key in sorted(spec.keys() - required - optional)]
    if whats:
        return None, whats
    sources: dict[str, Any] = {key: spec[key] for key in ("title", "subject", "body", "url")
                               if key in spec}
    params: dict[str, Any] = {}
    codes: dict[str, str] = {}
    text = ""
    if channel == "sms":
        params, codes, text, more = _sms_shape(spec, rules)
        whats += more
    elif channel == "wechat":
        params, more = _wechat_shape(spec)
        codes = {"wechat": str(spec["template_id"])}
        whats += more
        if not isinstance(spec["template_id"], str) or not spec["template_id"]:
            whats.append("template_id must be the WeChat template id")
    compiled: dict[str, dict[str, jinja2.Template]] = {"fields": {}, "params": {}}
    used: set[str] = set()
    for group, named in (("fields", sources), ("params", params)):
        for name, source in named.items():
            if not isinstance(source, str):
                whats.append(f"{name!r} must be a string (a Jinja template)")
                continue
            try:
                used |= meta.find_undeclared_variables(env.parse(source))
                compiled[group][name] = env.from_string(source)
            except jinja2.TemplateSyntaxError as exc:
                whats.append(f"{name!r}: Jinja syntax error, line {exc.lineno}: {exc.message}")
    if whats:  # what an unparsed template uses is unknown: no guessing at variables
        return None, whats
    whats += [f"unknown variable {name!r} (a template sees only: {', '.join(sorted(VARIABLES))})"
              for name in sorted(used - VARIABLES)]
    whats += [f"does not use {name!r}: a {trigger} message must name it"
              for name in sorted(rules.required_variables.get(trigger, frozenset()) - used)]
    if whats:
        return None, whats
    return _Entry(trigger=trigger, channel=channel, locale=locale, file=file,
                  fields=compiled["fields"], params=compiled["params"], text=text, codes=codes,
                  used=frozenset(used)), []


def _sms_shape(spec: Mapping[str, Any], rules: Rules
               ) -> tuple[dict[str, Any], dict[str, str], str, list[str]]:
    """The parts of an SMS entry, and what the providers would refuse in them."""
    whats: list[str] = []
    codes_in, params, text = spec["codes"], spec["params"], spec["text"]
    codes: dict[str, str] = {}
    if not isinstance(codes_in, dict) or not codes_in:
        whats.append("codes must map provider -> template code")
    else:
        for provider, code in codes_in.items():
            code = str(code)
            if provider not in rules.sms_param_limits:
                whats.append(f"unknown SMS provider {provider!r}")
            elif provider == "aliyun" and not _ALIYUN_CODE.match(code):
                whats.append(f"Aliyun template code {code!r} is not SMS_<digits>")
            elif provider == "tencent" and not _TENCENT_ID.match(code):
                whats.append(f"Tencent template id {code!r} is not digits")
            codes[str(provider)] = code
    if not isinstance(params, dict) or not isinstance(text, str):
        return {}, codes, "", [*whats, "params must be a mapping and text a string"]
    placeholders = _PLACEHOLDER.findall(text)
    for name in params:
        count = placeholders.count(name)
        if count != 1:
            whats.append(f"parameter {name!r} appears {count} times in text (exactly once)")
    whats += [f"text uses ${{{name}}}, which is not a parameter"
              for name in dict.fromkeys(placeholders) if name not in params]
    if re.search(r"\}\s*\$\{", text):
        whats.append("two parameters side by side in text (providers refuse adjacent variables)")
    if "【" in text or "】" in text:
        whats.append("text contains 【】: only the signature may (the provider adds it)")
    return params, codes, text, whats


def _wechat_shape(spec: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The data fields of a WeChat entry (name -> template), and the rules they break."""
    data = spec["data"]
    if not isinstance(data, dict) or not data:
        return {}, ["data must map field name -> value template"]
    whats: list[str] = []
    fields: dict[str, Any] = {}
    for name, value in data.items():
        if name in WECHAT_DROPPED_FIELDS:
            whats.append(f"field {name!r}: WeChat drops 'first' and 'remark' since 2023-05-04; "
                         "put what it says in a keyword field")
            continue
        if isinstance(value, dict):
            extra = sorted(set(value) - {"value"})
            if extra:
                whats.append(f"field {name!r}: {', '.join(extra)} not allowed (WeChat drops "
                             "colour settings since 2023-05-04)")
            value = value.get("value")
        fields[str(name)] = value
    return fields, whats


# --- the lint: every template rendered with every sample -----------------------------------


def _lint_entry(entry: _Entry, rules: Rules,
                samples: Mapping[str, Sequence[Mapping[str, Any]]],
                default_locale: str) -> Iterator[Problem]:
    whats: dict[str, None] = {}  # ordered set: two samples often find the same problem
    chosen = samples.get(resolve_locale(entry.locale, samples, default_locale))
    for sample in chosen if chosen is not None else next(iter(samples.values())):
        try:
            raw = _render_raw(entry, sample)
        except jinja2.TemplateError as exc:
            whats[f"fails on the sample values: {type(exc).__name__}: {exc}"] = None
            continue
        for what in _lint_rendered(entry, raw, _enforce(entry, raw, rules), rules):
            whats[what] = None
    for what in whats:
        yield Problem(entry.file, what, entry.trigger, entry.channel, entry.locale)


def _texts(rendered: Rendered) -> Iterator[tuple[str, str]]:
    for name in ("title", "subject", "text", "url"):
        value = getattr(rendered, name)
        if value:
            yield name, value
    for name, value in rendered.params.items():
        yield name, value


def _lint_rendered(entry: _Entry, raw: Rendered, sent: Rendered, rules: Rules) -> Iterator[str]:
    for name, value in _texts(raw):
        folded = value.casefold()
        found = [word for word in rules.banned_words if word.casefold() in folded]
        for word in found:
            # "限时抢购" is one finding, not also "抢购".
            if not any(word != other and word.casefold() in other.casefold() for other in found):
                yield f"{name!r} contains the marketing word {word!r}"
        if _NONE.search(value):
            yield f"{name!r} renders None: guard the optional variable (e.g. `or`/`if`)"
    if entry.channel == "sms":
        yield from _lint_sms(raw, sent, rules)
    elif entry.channel == "wechat":
        yield from _lint_wechat(raw, rules)


def _lint_sms(raw: Rendered, sent: Rendered, rules: Rules) -> Iterator[str]:
    for name, value in raw.params.items():
        if URL.search(value):
            yield (f"parameter {name!r} holds a link ({value!r}): providers refuse links in "
                   "variables (Aliyun isv.PARAM_NOT_SUPPORT_URL); put a fixed link in text")
        if not value:
            yield f"parameter {name!r} renders empty: providers refuse empty variables"
    # The length is checked as sent: real parameters are clamped to the variable limit.
    message = sms_message(sent.text, rules.sms_signature)
    length, gsm7 = sms_length(message)
    parts = sms_parts(message)
    if parts > rules.sms_max_parts or length > SMS_MAX_CHARS:
        single = SMS_SINGLE_GSM7 if gsm7 else SMS_SINGLE
        yield (f"SMS is {length} characters with the signature, {parts} billed parts "
               f"(one SMS: {single}; allowed parts: {rules.sms_max_parts}; "
               f"ceiling {SMS_MAX_CHARS}): {message!r}")


def _lint_wechat(raw: Rendered, rules: Rules) -> Iterator[str]:
    for name, value in raw.params.items():
        if len(value) > rules.wechat_field_limit:
            yield (f"field {name!r} is {len(value)} characters, WeChat shows "
                   f"{rules.wechat_field_limit}: {value!r}")
        if "\n" in value or "\r" in value:
            yield f"field {name!r} has a line break (WeChat shows one line)"
        if EMOJI.search(value):
            yield f"field {name!r} has emoji (WeChat removes them)"


# --- the shipped catalogue -----------------------------------------------------------------


@functools.cache
def default_catalogue() -> Catalogue:
    """The shipped catalogue, loaded and checked once per process."""
    return load_catalogue()


def render(trigger: str, channel: str, locale: str | None,
           variables: Mapping[str, Any]) -> Rendered:
    """Render with the shipped catalogue (see :meth:`Catalogue.render`)."""
    return default_catalogue().render(trigger, channel, locale, variables)

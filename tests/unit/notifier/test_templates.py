"""Customer-message templates: checked once at load, rendered within every provider's limits."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from services import cli
from services.notifier import templates as t
from services.notifier import tips as tips_module
from services.notifier.templates import (
    CHANNELS,
    DEFAULT_DIR,
    EMOJI,
    SAMPLES,
    TRIGGERS,
    URL,
    VARIABLES,
    CatalogueError,
    TemplateError,
    load_catalogue,
    resolve_locale,
    sms_length,
    sms_message,
    sms_parts,
)
from services.notifier.tips import TipsError, load_tips

Docs = dict[str, dict[str, Any]]


# --- factories -----------------------------------------------------------------------------


@cache
def catalogue() -> t.Catalogue:
    return load_catalogue()


def order(**changes: Any) -> dict[str, Any]:
    """The variables the notifier passes, for one realistic order."""
    variables: dict[str, Any] = {
        "nickname": "小王", "order_no": "TM20260120-0042", "channel": "tmall", "status": "PAID",
        "items": [{"sku": "TEA-LJ-250G", "name": "西湖龙井 250克", "quantity": 2},
                  {"sku": "CUP-QC-01", "name": "青瓷品茗杯", "quantity": 1}],
        "ship_by": "今天17:00", "tips": ["茶叶请密封保存"],
        "after_sales_url": "https://shop.example.com/after-sales/TM20260120-0042",
        "carrier": "顺丰速运", "tracking_number": "SF1402024012345",
        "out_of_stock": ["青瓷品茗杯"], "refund": True,
    }
    variables.update(changes)
    return variables


def order_en(**changes: Any) -> dict[str, Any]:
    return order(**{
        "nickname": "Sam", "ship_by": "today at 17:00", "tips": ["Keep the tea sealed."],
        "items": [{"sku": "TEA-LJ-250G", "name": "Longjing green tea, 250 g", "quantity": 2},
                  {"sku": "CUP-QC-01", "name": "Celadon tea cup", "quantity": 1}],
        "carrier": "SF Express", "out_of_stock": ["Celadon tea cup"], **changes})


def shipped_docs() -> Docs:
    return {path.name: yaml.safe_load(path.read_text(encoding="utf-8"))
            for path in sorted(DEFAULT_DIR.glob("*.yaml"))}


def entry(docs: Docs, locale: str, trigger: str, channel: str) -> dict[str, Any]:
    return docs[f"{locale}.yaml"]["templates"][trigger][channel]


def write(directory: Path, docs: Docs) -> Path:
    for name, document in docs.items():
        text = yaml.safe_dump(document, allow_unicode=True, sort_keys=False)
        (directory / name).write_text(text, encoding="utf-8")
    return directory


def problems(directory: Path, edit: Callable[[Docs], None], **rules: Any) -> list[str]:
    """The problems load_catalogue reports for the shipped catalogue changed by ``edit``."""
    docs = copy.deepcopy(shipped_docs())
    edit(docs)
    with pytest.raises(CatalogueError) as raised:
        load_catalogue(write(directory, docs), **rules)
    return [str(problem) for problem in raised.value.problems]


def loads(directory: Path, edit: Callable[[Docs], None], **rules: Any) -> t.Catalogue:
    docs = copy.deepcopy(shipped_docs())
    edit(docs)
    return load_catalogue(write(directory, docs), **rules)


def setter(locale: str, trigger: str, channel: str, **fields: Any) -> Callable[[Docs], None]:
    def edit(docs: Docs) -> None:
        entry(docs, locale, trigger, channel).update(fields)
    return edit


# --- the shipped catalogue -----------------------------------------------------------------


def test_shipped_catalogue_loads_clean_with_every_trigger_channel_and_locale() -> None:
    loaded = catalogue()
    assert set(loaded.entries) == {(trigger, channel, locale) for trigger in TRIGGERS
                                   for channel in CHANNELS for locale in ("zh-CN", "en")}


def test_samples_hold_exactly_the_variables_the_notifier_passes() -> None:
    for samples in SAMPLES.values():
        for sample in samples:
            assert set(sample) == VARIABLES


@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("trigger", TRIGGERS)
@pytest.mark.parametrize("locale", ["zh-CN", "en"])
def test_every_shipped_template_names_the_order_and_holds_no_marketing_word(
    locale: str, trigger: str, channel: str,
) -> None:
    rendered = catalogue().render(trigger, channel, locale,
                                  order() if locale == "zh-CN" else order_en())
    assert "TM20260120-0042" in rendered.text
    for word in t.BANNED_WORDS:
        assert word.casefold() not in rendered.text.casefold()


# --- rendering, both locales ---------------------------------------------------------------


def test_confirmation_in_the_app_names_items_ship_by_and_tip_in_chinese() -> None:
    rendered = catalogue().render("confirmation", "inapp", "zh-CN", order())
    assert rendered.title == "订单已确认"
    assert "小王" in rendered.text
    assert "西湖龙井 250克 × 2" in rendered.text and "青瓷品茗杯 × 1" in rendered.text
    assert "我们将在今天17:00前为您发出" in rendered.text
    assert "茶叶请密封保存" in rendered.text


def test_confirmation_email_names_items_ship_by_and_tip_in_english() -> None:
    rendered = catalogue().render("confirmation", "email", "en", order_en())
    assert rendered.subject == "Your order TM20260120-0042 is confirmed"
    assert "Hello Sam," in rendered.text
    assert "- Longjing green tea, 250 g x 2" in rendered.text
    assert "We will ship it by today at 17:00" in rendered.text
    assert "A tip for your order:\n- Keep the tea sealed." in rendered.text


def test_confirmation_without_tips_says_nothing_about_tips() -> None:
    zh = catalogue().render("confirmation", "inapp", "zh-CN", order(tips=[]))
    en = catalogue().render("confirmation", "email", "en", order_en(tips=[]))
    assert "提示" not in zh.text and "tip" not in en.text.lower()


def test_shipped_sms_carries_the_codes_and_ordered_parameters() -> None:
    rendered = catalogue().render("shipped", "sms", "zh-CN", order())
    assert rendered.template_codes == {"aliyun": "SMS_900000102", "tencent": "2000102"}
    assert list(rendered.params.items()) == [
        ("order", "TM20260120-0042"), ("carrier", "顺丰速运"), ("tracking", "SF1402024012345")]
    assert rendered.text == "您的订单TM20260120-0042已由顺丰速运发出，运单号SF1402024012345。"


def test_shipped_wechat_names_carrier_and_tracking_number() -> None:
    rendered = catalogue().render("shipped", "wechat", "en", order_en())
    assert rendered.template_codes == {"wechat": "OS_EN_ORDER_SHIPPED"}
    assert rendered.params == {"keyword1": "TM20260120-0042", "keyword2": "SF Express",
                               "keyword3": "SF1402024012345"}


@pytest.mark.parametrize(("locale", "variables", "sorry"), [
    ("zh-CN", order(), "抱歉"), ("en", order_en(), "sorry")])
@pytest.mark.parametrize("channel", ["inapp", "email", "sms"])
def test_rejected_apologises_and_names_what_ran_out(
    locale: str, variables: dict[str, Any], sorry: str, channel: str,
) -> None:
    rendered = catalogue().render("rejected", channel, locale, variables)
    said = " ".join(filter(None, [rendered.title, rendered.subject, rendered.text]))
    assert sorry in said.lower()
    assert variables["out_of_stock"][0] in rendered.text


def test_the_module_level_render_uses_the_shipped_catalogue() -> None:
    assert t.render("delivered", "inapp", "en-GB", order_en()).title == "Order delivered"


@pytest.mark.parametrize(("locale", "variables", "refund_words"), [
    ("zh-CN", order(), "退款"), ("en", order_en(), "refund")])
@pytest.mark.parametrize("channel", CHANNELS)
def test_cancelled_promises_a_refund_only_when_the_order_was_paid(
    locale: str, variables: dict[str, Any], refund_words: str, channel: str,
) -> None:
    paid = catalogue().render("cancelled", channel, locale, {**variables, "refund": True})
    unpaid = catalogue().render("cancelled", channel, locale, {**variables, "refund": False})
    assert refund_words in paid.text.lower()
    assert refund_words not in unpaid.text.lower()


# --- locale fallback -----------------------------------------------------------------------


@pytest.mark.parametrize(("asked", "chosen"), [
    ("en", "en"), ("en-US", "en"), ("en_GB", "en"), ("EN-au", "en"), ("zh-CN", "zh-CN"),
    ("zh", "zh-CN"), ("zh-TW", "zh-CN"), ("zh_cn", "zh-CN"), ("fr-FR", "zh-CN"), ("", "zh-CN"),
    (None, "zh-CN")])
def test_a_customer_locale_falls_back_to_its_language_then_to_chinese(
    asked: str | None, chosen: str,
) -> None:
    rendered = catalogue().render("delivered", "inapp", asked, order())
    assert rendered.locale == chosen
    assert rendered.title == ("Order delivered" if chosen == "en" else "订单已签收")


def test_a_channel_a_locale_does_not_cover_speaks_the_default_locale(tmp_path: Path) -> None:
    def add_japanese_inbox(docs: Docs) -> None:
        docs["ja.yaml"] = {"locale": "ja", "channels": ["inapp"], "templates": {
            trigger: {"inapp": {"title": "ご注文 {{ order_no }}", "body": body}}
            for trigger, body in zip(TRIGGERS, [
                "{{ items | length }} {{ ship_by }}",
                "{{ carrier or '-' }} {{ tracking_number or '-' }}",
                "-", "-", "{{ out_of_stock | join(', ') }}", "{{ refund }}"], strict=True)}}
    loaded = loads(tmp_path, add_japanese_inbox, required_variables={})
    assert loaded.render("delivered", "inapp", "ja-JP", order()).title == "ご注文 TM20260120-0042"
    assert loaded.render("delivered", "sms", "ja-JP", order()).locale == "zh-CN"


def test_resolve_locale_prefers_the_bare_language_then_any_regional_tag() -> None:
    assert resolve_locale("pt-BR", ["pt", "pt-PT"]) == "pt"
    assert resolve_locale("pt-BR", ["en", "pt-PT"]) == "pt-PT"
    assert resolve_locale("ja", ["en", "zh-CN"], default="en") == "en"


# --- errors at render time -----------------------------------------------------------------


@pytest.mark.parametrize(("trigger", "channel", "what"), [
    ("refunded", "sms", "unknown trigger 'refunded'"),
    ("shipped", "fax", "unknown channel 'fax'")])
def test_an_unknown_trigger_or_channel_is_a_clear_error(
    trigger: str, channel: str, what: str,
) -> None:
    with pytest.raises(TemplateError, match=what):
        catalogue().render(trigger, channel, "zh-CN", order())


def test_variables_missing_at_render_are_named() -> None:
    variables = order()
    del variables["ship_by"]
    with pytest.raises(TemplateError, match="ship_by"):
        catalogue().render("confirmation", "inapp", "zh-CN", variables)


def test_extra_variables_are_not_visible_to_templates() -> None:
    rendered = catalogue().render("delivered", "inapp", "en", order_en(secret="s3cret"))
    assert "s3cret" not in rendered.text


def test_rendered_messages_are_frozen() -> None:
    rendered = catalogue().render("delivered", "inapp", "en", order_en())
    with pytest.raises(dataclasses.FrozenInstanceError):
        rendered.text = "changed"  # type: ignore[misc]


# --- problems found at load ----------------------------------------------------------------


def test_an_unknown_variable_is_reported_with_file_trigger_channel_and_locale(
    tmp_path: Path,
) -> None:
    found = problems(tmp_path, setter("zh-CN", "shipped", "inapp", title="{{ nick_name }}您好"))
    assert len(found) == 1
    assert found[0].startswith("zh-CN.yaml: shipped/inapp/zh-CN: unknown variable 'nick_name'")


def test_an_unknown_variable_in_a_branch_no_sample_takes_is_still_found(tmp_path: Path) -> None:
    body = "{% if refund and not refund %}{{ refund_amount }}{% endif %}{{ order_no }} {{ refund }}"
    found = problems(tmp_path, setter("en", "cancelled", "email", body=body))
    assert any("unknown variable 'refund_amount'" in problem for problem in found)


def test_a_jinja_syntax_error_is_reported_with_its_line(tmp_path: Path) -> None:
    body = "Hello {{ nickname }},\nyour order {{ order_no }\nis confirmed."
    found = problems(tmp_path, setter("en", "confirmation", "email", body=body))
    assert found == ["en.yaml: confirmation/email/en: 'body': Jinja syntax error, line 2: "
                     "unexpected '}'"]


def test_a_template_missing_a_variable_its_trigger_must_name_is_reported(tmp_path: Path) -> None:
    def drop_tracking(docs: Docs) -> None:
        sms = entry(docs, "zh-CN", "shipped", "sms")
        del sms["params"]["tracking"]
        sms["text"] = "您的订单${order}已由${carrier}发出。"
    found = problems(tmp_path, drop_tracking)
    assert found == ["zh-CN.yaml: shipped/sms/zh-CN: does not use 'tracking_number': "
                     "a shipped message must name it"]


def test_a_missing_template_is_reported(tmp_path: Path) -> None:
    def drop(docs: Docs) -> None:
        del docs["en.yaml"]["templates"]["delivered"]["wechat"]
    assert problems(tmp_path, drop) == ["en.yaml: delivered/wechat/en: missing template"]


def test_a_missing_locale_is_reported(tmp_path: Path) -> None:
    def drop(docs: Docs) -> None:
        del docs["en.yaml"]
    assert problems(tmp_path, drop) == [f"{tmp_path.name}: no templates for locale en"]


def test_a_template_failing_on_the_sample_values_is_reported(tmp_path: Path) -> None:
    found = problems(tmp_path, setter("en", "confirmation", "inapp",
                                      title="{{ items[0].title }} for {{ order_no }}"))
    assert len(found) == 1
    assert "confirmation/inapp/en: fails on the sample values: UndefinedError" in found[0]


def test_a_template_rendering_none_is_reported(tmp_path: Path) -> None:
    found = problems(tmp_path, setter("en", "shipped", "inapp",
                                      title="Shipped with {{ carrier }} {{ tracking_number }}"))
    assert "en.yaml: shipped/inapp/en: 'title' renders None: guard the optional variable " \
           "(e.g. `or`/`if`)" in found


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    def break_three(docs: Docs) -> None:
        entry(docs, "zh-CN", "shipped", "inapp")["title"] = "{{ nick_name }}"
        entry(docs, "en", "delivered", "email")["body"] = "{% if %}"
        del docs["en.yaml"]["templates"]["rejected"]["sms"]
    found = problems(tmp_path, break_three)
    assert [problem.split(": ")[1] for problem in found] == [
        "delivered/email/en", "rejected/sms/en", "shipped/inapp/zh-CN"]


def test_the_sandbox_refuses_python_internals(tmp_path: Path) -> None:
    found = problems(tmp_path, setter("en", "delivered", "inapp",
                                      title="{{ order_no.__class__.__mro__ }}"))
    assert "fails on the sample values: SecurityError" in found[0]


def test_templates_cannot_change_the_values_they_are_given(tmp_path: Path) -> None:
    found = problems(tmp_path, setter("en", "delivered", "inapp",
                                      title="{{ items.append(1) }}{{ order_no }}"))
    assert "fails on the sample values: SecurityError" in found[0]


def test_templates_see_no_globals(tmp_path: Path) -> None:
    found = problems(tmp_path, setter("en", "delivered", "inapp",
                                      title="{% for i in range(2) %}{{ order_no }}{% endfor %}"))
    assert "unknown variable 'range'" in found[0]


@pytest.mark.parametrize(("text", "what"), [
    ("[[[", "not valid YAML"),
    ("- just\n- a list\n", "must be a mapping with locale, channels and templates"),
    ("locale: en\ntemplates: {}\nowner: me\n", "unknown key 'owner'")])
def test_a_broken_file_is_reported(tmp_path: Path, text: str, what: str) -> None:
    write(tmp_path, shipped_docs())
    (tmp_path / "broken.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(CatalogueError) as raised:
        load_catalogue(tmp_path)
    assert any(str(p).startswith(f"broken.yaml: {what}") for p in raised.value.problems)


def test_a_template_defined_twice_is_reported(tmp_path: Path) -> None:
    def duplicate(docs: Docs) -> None:
        docs["en-extra.yaml"] = {"locale": "en", "channels": ["sms"], "templates": {
            "shipped": {"sms": entry(docs, "en", "shipped", "sms")}}}
    found = problems(tmp_path, duplicate)
    assert "en.yaml: shipped/sms/en: defined twice (also in en-extra.yaml)" in found


def test_a_missing_field_is_reported(tmp_path: Path) -> None:
    def drop_subject(docs: Docs) -> None:
        del entry(docs, "en", "shipped", "email")["subject"]
    assert problems(tmp_path, drop_subject) == ["en.yaml: shipped/email/en: missing 'subject'"]


# --- lint: banned marketing words ----------------------------------------------------------


def test_a_banned_marketing_word_is_reported(tmp_path: Path) -> None:
    body = "{{ nickname }}您好，您的订单{{ order_no }}已签收。限时抢购进行中！"
    found = problems(tmp_path, setter("zh-CN", "delivered", "inapp", body=body))
    assert found == ["zh-CN.yaml: delivered/inapp/zh-CN: 'text' contains the marketing word "
                     "'限时抢购'"]


def test_banned_words_match_whatever_the_case(tmp_path: Path) -> None:
    found = problems(tmp_path, setter("en", "delivered", "email",
                                      subject="LAST CHANCE: order {{ order_no }}"))
    assert any("'subject' contains the marketing word 'last chance'" in p for p in found)


def test_banned_words_are_configurable(tmp_path: Path) -> None:
    edit = setter("zh-CN", "delivered", "inapp", title="订单已签收，全场包邮")
    assert any("'包邮'" in p for p in problems(tmp_path, edit, banned_words=["包邮"]))
    loads(tmp_path, edit)  # not in the default list


# --- lint: SMS -----------------------------------------------------------------------------


def test_an_sms_longer_than_one_message_is_reported(tmp_path: Path) -> None:
    text = ("您的订单${order}已签收，感谢您一直以来的支持与信任。"
            "如商品有任何问题，请在订单详情页申请售后服务。")
    edit = setter("zh-CN", "delivered", "sms", text=text)
    found = problems(tmp_path, edit)
    assert len(found) == 1
    assert "delivered/sms/zh-CN: SMS is 77 characters with the signature, 2 billed parts " \
           "(one SMS: 70; allowed parts: 1; ceiling 500)" in found[0]
    loads(tmp_path, edit, sms_max_parts=2)  # a long SMS, knowingly billed twice


def test_the_signature_counts_towards_the_sms_length(tmp_path: Path) -> None:
    assert problems(tmp_path, lambda docs: None, sms_signature="一个特别特别长的店铺签名")


@pytest.mark.parametrize(("message", "length", "parts"), [
    ("中" * 70, 70, 1), ("中" * 71, 71, 2), ("中" * 134, 134, 2), ("中" * 135, 135, 3),
    ("a" * 160, 160, 1), ("a" * 161, 161, 2), ("a" * 306, 306, 2), ("a" * 307, 307, 3),
    ("{" * 80, 160, 1), ("{" * 81, 162, 2), ("a" * 159 + "中", 160, 3)])
def test_sms_parts_follow_the_providers_counting(message: str, length: int, parts: int) -> None:
    assert sms_length(message)[0] == length
    assert sms_parts(message) == parts


def test_the_signature_is_bracketed_as_the_provider_does() -> None:
    assert sms_message("Your order 1 is here.", "shop") == "[shop]Your order 1 is here."
    assert sms_message("您的订单1已签收。", "shop") == "【shop】您的订单1已签收。"


def test_a_link_in_an_sms_parameter_is_reported(tmp_path: Path) -> None:
    edit = setter("en", "delivered", "sms",
                  params={"order": "{{ order_no }}", "link": "{{ after_sales_url }}"},
                  text="Your order ${order} has been delivered. After-sales: ${link}")
    found = problems(tmp_path, edit)
    assert any("parameter 'link' holds a link" in p and "isv.PARAM_NOT_SUPPORT_URL" in p
               for p in found)


@pytest.mark.parametrize(("params", "text", "what"), [
    ({"order": "{{ order_no }}"}, "Order ${order} or ${order} delivered.",
     "parameter 'order' appears 2 times in text (exactly once)"),
    ({"order": "{{ order_no }}", "x": "{{ nickname }}"}, "Order ${order} delivered.",
     "parameter 'x' appears 0 times in text (exactly once)"),
    ({"order": "{{ order_no }}"}, "Order ${order} delivered to ${name}.",
     "text uses ${name}, which is not a parameter"),
    ({"order": "{{ order_no }}", "who": "{{ nickname }}"}, "Order ${order}${who} delivered.",
     "two parameters side by side in text"),
    ({"order": "{{ order_no }}"}, "【orderstream】Order ${order} delivered.",
     "text contains 【】"),
])
def test_sms_texts_the_providers_would_not_approve_are_reported(
    tmp_path: Path, params: dict[str, str], text: str, what: str,
) -> None:
    found = problems(tmp_path, setter("en", "delivered", "sms", params=params, text=text))
    assert any(what in p for p in found), found


def test_an_sms_parameter_rendering_empty_is_reported(tmp_path: Path) -> None:
    edit = setter("en", "shipped", "sms", params={
        "order": "{{ order_no }}", "carrier": "{{ carrier or '' }}",
        "tracking": "{{ tracking_number or 'to follow' }}"})
    assert any("parameter 'carrier' renders empty" in p for p in problems(tmp_path, edit))


@pytest.mark.parametrize(("codes", "what"), [
    ({"aliyun": "12345"}, "Aliyun template code '12345' is not SMS_<digits>"),
    ({"tencent": "T-1"}, "Tencent template id 'T-1' is not digits"),
    ({"twilio": "1"}, "unknown SMS provider 'twilio'")])
def test_bad_sms_template_codes_are_reported(
    tmp_path: Path, codes: dict[str, str], what: str,
) -> None:
    assert any(what in p for p in problems(tmp_path, setter("en", "shipped", "sms", codes=codes)))


# --- lint: WeChat (rules since 2023-05-04) -------------------------------------------------


def wechat_data(**fields: Any) -> Callable[[Docs], None]:
    def edit(docs: Docs) -> None:
        entry(docs, "zh-CN", "delivered", "wechat")["data"].update(fields)
    return edit


@pytest.mark.parametrize(("fields", "what"), [
    ({"keyword3": "感谢您一直以来对本店的信任与支持，欢迎再次光临"},
     "field 'keyword3' is 23 characters, WeChat shows 20"),
    ({"keyword3": "已签收\n感谢支持"}, "field 'keyword3' has a line break"),
    ({"keyword3": "已签收🎉"}, "field 'keyword3' has emoji"),
    ({"keyword2": {"value": "已签收", "color": "#FF0000"}},
     "field 'keyword2': color not allowed (WeChat drops colour settings"),
    ({"first": "您的订单已签收"}, "field 'first': WeChat drops 'first' and 'remark'"),
    ({"remark": "感谢您的支持"}, "field 'remark': WeChat drops 'first' and 'remark'"),
])
def test_wechat_rules_are_enforced_at_load(
    tmp_path: Path, fields: dict[str, Any], what: str,
) -> None:
    found = problems(tmp_path, wechat_data(**fields))
    assert any(p.startswith(f"zh-CN.yaml: delivered/wechat/zh-CN: {what}") for p in found), found


def test_a_wechat_field_given_as_value_mapping_without_colour_is_fine(tmp_path: Path) -> None:
    loaded = loads(tmp_path, wechat_data(keyword2={"value": "已签收"}))
    assert loaded.render("delivered", "wechat", "zh-CN", order()).params["keyword2"] == "已签收"


# --- hard limits at render, on real values -------------------------------------------------


def test_a_long_wechat_field_is_shortened_to_twenty_with_an_ellipsis() -> None:
    name = "西湖龙井 明前特级 250克礼盒装（送青瓷杯一只）"
    rendered = catalogue().render("rejected", "wechat", "zh-CN", order(out_of_stock=[name]))
    assert rendered.params["keyword2"] == name[:19] + "…"


def test_wechat_fields_lose_line_breaks_and_emoji() -> None:
    rendered = catalogue().render("shipped", "wechat", "en",
                                  order_en(carrier="SF\nExpress 🚚", tracking_number="SF1\r\n2"))
    assert rendered.params["keyword2"] == "SF Express"
    assert rendered.params["keyword3"] == "SF1 2"


SOLD_OUT = ["西湖龙井 明前特级 250克礼盒装", "青瓷品茗杯", "锡制茶叶罐（小号）", "安溪铁观音"]


def test_an_sms_parameter_is_shortened_to_the_aliyun_variable_limit() -> None:
    names = SOLD_OUT
    rendered = catalogue().render("rejected", "sms", "zh-CN", order(out_of_stock=names))
    assert len(rendered.params["items"]) == 35
    assert rendered.params["items"].endswith("…")
    assert rendered.text == f"抱歉，{rendered.params['items']}已售罄，订单TM20260120-0042无法发货。"


def test_a_tencent_only_sms_is_not_shortened(tmp_path: Path) -> None:
    loaded = loads(tmp_path, setter("zh-CN", "rejected", "sms", codes={"tencent": "2000105"}))
    names = SOLD_OUT
    rendered = loaded.render("rejected", "sms", "zh-CN", order(out_of_stock=names))
    assert rendered.params["items"] == "、".join(names)


def test_links_are_removed_from_sms_parameters_and_an_empty_one_becomes_a_dash() -> None:
    rendered = catalogue().render("shipped", "sms", "en", order_en(
        carrier="SF Express www.sf-express.com", tracking_number="https://t.cn/abc"))
    assert rendered.params["carrier"] == "SF Express"
    assert rendered.params["tracking"] == "-"


def test_a_link_hidden_in_chinese_text_is_still_a_link() -> None:
    assert URL.search("访问shop.cn领取")
    assert not URL.search("西湖龙井 250克") and not URL.search("Tue 18 Jun at 17:00")


# --- any real values stay within the providers' limits -------------------------------------

_CHARS = st.one_of(st.sampled_from(list("ab 中文\n\r\t🎉❤️👍🏻…【】.:/")), st.characters())
_TEXT = st.text(alphabet=_CHARS, max_size=60)
_VARIABLES = st.fixed_dictionaries({
    "nickname": st.text(alphabet=_CHARS, min_size=1, max_size=60),
    "order_no": st.text(alphabet=_CHARS, min_size=1, max_size=40),
    "channel": st.sampled_from(["tmall", "jd", "pinduoduo", "douyin", "shopify", "web", "pos"]),
    "status": _TEXT,
    "items": st.lists(st.fixed_dictionaries({"sku": _TEXT, "name": _TEXT,
                                             "quantity": st.integers(1, 10_000)}),
                      min_size=1, max_size=4),
    "ship_by": _TEXT,
    "tips": st.lists(_TEXT, max_size=3),
    "after_sales_url": st.one_of(_TEXT, st.just("https://shop.example.com/as/1")),
    "carrier": st.none() | _TEXT,
    "tracking_number": st.none() | _TEXT,
    "out_of_stock": st.lists(_TEXT, max_size=4),
    "refund": st.booleans(),
})


@settings(max_examples=150, deadline=None)
@given(variables=_VARIABLES, trigger=st.sampled_from(TRIGGERS),
       locale=st.sampled_from(["zh-CN", "en"]))
def test_any_wechat_field_is_one_line_of_at_most_twenty_characters_without_emoji(
    variables: dict[str, Any], trigger: str, locale: str,
) -> None:
    rendered = catalogue().render(trigger, "wechat", locale, variables)
    for value in rendered.params.values():
        assert len(value) <= 20
        assert not any(ch.isspace() and ch != " " for ch in value)
        assert not EMOJI.search(value)


@settings(max_examples=150, deadline=None)
@given(variables=_VARIABLES, trigger=st.sampled_from(TRIGGERS),
       locale=st.sampled_from(["zh-CN", "en"]))
def test_any_sms_parameter_is_a_short_non_empty_line_without_links(
    variables: dict[str, Any], trigger: str, locale: str,
) -> None:
    rendered = catalogue().render(trigger, "sms", locale, variables)
    for value in rendered.params.values():
        assert 1 <= len(value) <= 35
        assert not URL.search(value)
        assert not any(ch.isspace() and ch != " " for ch in value)
    assert "${" not in rendered.text


# --- tips ----------------------------------------------------------------------------------


def test_a_sku_gets_its_own_name_and_its_prefix_tip() -> None:
    assert tips_module.name_for("DY-YOGURT-1L", "zh-CN") == "原味酸奶 1升"
    assert tips_module.name_for("DY-YOGURT-1L", "en-US") == "plain yoghurt, 1 litre"
    assert tips_module.tips_for(["DY-YOGURT-1L"], "zh-CN") == [
        "酸奶属于生鲜商品，收到后请冷藏保存（2-6℃），并在保质期内饮用"]


def test_an_unlisted_sku_of_a_known_family_gets_the_family_name() -> None:
    assert tips_module.name_for("DY-YOGURT-500ML", "en") == "yoghurt"


def test_an_unknown_sku_is_named_by_itself_and_has_no_tip() -> None:
    assert tips_module.name_for("ZZ-UNKNOWN-1", "zh-CN") == "ZZ-UNKNOWN-1"
    assert tips_module.tips_for(["ZZ-UNKNOWN-1"], "zh-CN") == []


def test_tips_for_an_order_come_once_each_in_sku_order() -> None:
    tips = tips_module.tips_for(["CUP-QC-01", "TEA-LJ-250G", "TEA-LJ-100G-CAN", "CUP-QC-01"], "en")
    assert tips == ["Porcelain is fragile - unpack it with care and check that it arrived intact.",
                    "Keep the tea sealed, dry and away from light and strong smells."]


def test_tips_fall_back_like_templates_do() -> None:
    assert tips_module.tips_for(["TEA-LJ-250G"], "fr") == ["茶叶请密封、避光、防潮保存，远离异味"]


def test_the_longest_prefix_wins(tmp_path: Path) -> None:
    path = tmp_path / "tips.yaml"
    path.write_text(yaml.safe_dump({"products": {
        "TEA-*": {"tip": {"zh-CN": "茶", "en": "tea"}},
        "TEA-LJ-*": {"tip": {"zh-CN": "龙井", "en": "longjing"}}}}, allow_unicode=True),
        encoding="utf-8")
    assert load_tips(path).tips_for(["TEA-LJ-1", "TEA-X"], "en") == ["longjing", "tea"]


def test_a_tips_entry_missing_a_locale_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "tips.yaml"
    path.write_text(yaml.safe_dump({"products": {"TEA-*": {"tip": {"zh-CN": "茶"}, "colour": 1}}},
                                   allow_unicode=True), encoding="utf-8")
    with pytest.raises(TipsError) as raised:
        load_tips(path)
    assert raised.value.problems == (
        "tips.yaml: TEA-*: unknown key 'colour' (an entry has name and tip)",
        "tips.yaml: TEA-*: tip has no en text")


# --- orderstream templates check -----------------------------------------------------------


def test_the_cli_accepts_the_shipped_catalogue(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["templates", "check"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("48 templates, no problems")


def test_the_cli_lists_each_problem_and_fails_on_a_broken_catalogue(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    docs = copy.deepcopy(shipped_docs())
    entry(docs, "zh-CN", "delivered", "inapp")["title"] = "清仓大甩卖"
    del docs["en.yaml"]["templates"]["shipped"]["sms"]
    assert cli.main(["templates", "check", "--dir", str(write(tmp_path, docs))]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "en.yaml: shipped/sms/en: missing template",
        "zh-CN.yaml: delivered/inapp/zh-CN: 'title' contains the marketing word '清仓'",
    ]


def test_the_cli_explains_itself(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["templates", "--help"])
    assert exited.value.code == 0
    assert "--dir DIR" in capsys.readouterr().out

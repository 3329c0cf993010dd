"""WCAG AA contrast (issue 21): the import refuses a background no text colour can read on; for every theme
it accepts, the page's inks reach 4.5:1 on every surface text can sit on (render/colour.py), buttons on the
accent included; and in Chromium, axe's colour-contrast rule agrees on hard themes in every template."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.wcag import AA_TEXT, contrast, relative_luminance, worst_contrast
from render.colour import page_inks, surfaces, text_family
from render.page import theme_css
from store.import_validation import validate_document
from store.theme import DEFAULT_ACCENT, DEFAULT_BACKGROUND, parse_theme, theme_errors

from conftest import CHROMIUM, ROOT, base_document, launch_chromium


def test_wcag_reference_values():
    assert contrast("#ffffff", "#000000") == pytest.approx(21.0)
    assert contrast("#777777", "#ffffff") == pytest.approx(4.48, abs=0.01)  # the famous near miss
    assert contrast("#767676", "#ffffff") == pytest.approx(4.54, abs=0.01)
    assert relative_luminance("#808080") == pytest.approx(0.2159, abs=1e-4)


def test_a_gradient_no_text_can_read_on_is_refused_naming_the_field():
    document = base_document(theme={"accent": "#7c3aed", "background": {"from": "#0b0b10", "to": "#9a9aa8"}})
    _, _, errors = validate_document(document)
    assert len(errors) == 1
    assert "theme.background is too light in one place and too dark in another" in errors[0]
    assert "best: white text at 2." in errors[0] and "WCAG AA needs 4.5:1" in errors[0]
    assert errors[0].startswith("profiles[0] (p1): ")
    # Between the ends counts too, and a stored theme that slipped past the importer is read as the default.
    assert theme_errors({"background": {"from": "#ff0000", "to": "#0000ff"}})  # 4.0:1 at best
    fallback = parse_theme({"background": {"from": "#000000", "to": "#ffffff"}})
    assert (fallback.accent, fallback.background_from) == (DEFAULT_ACCENT, DEFAULT_BACKGROUND)


@pytest.mark.parametrize("colour", ["#777777", "#767676", "#ff0000", "#00ff00", "#0000ff", "#ffff00", "#808080"])
def test_any_flat_colour_and_any_accent_is_accepted(colour):
    # Every colour has 4.58:1 or more with white or with black: the page picks the one that reads.
    assert theme_errors({"background": colour, "accent": colour}) == []
    inks = page_inks(parse_theme({"background": colour, "accent": colour}))
    assert inks.worst >= AA_TEXT and contrast(inks.on_accent, colour) >= AA_TEXT


colours = st.integers(0, 0xFFFFFF).map(lambda n: f"#{n:06x}")
themes = st.fixed_dictionaries(
    {
        "accent": colours,
        "background": st.one_of(colours, st.fixed_dictionaries({"from": colours, "to": colours})),
    }
).filter(lambda theme: not theme_errors(theme))


@pytest.mark.slow  # hypothesis: 300 themes, each searched for inks (4-6 s)
@settings(max_examples=300, derandomize=True, deadline=None)
@given(themes, st.booleans())
def test_every_accepted_theme_gets_inks_that_reach_aa_on_every_surface(raw, backdrop):
    theme = parse_theme(raw)
    inks = page_inks(theme, backdrop)
    family = text_family(theme)
    on = surfaces(theme, family, inks.fg, inks.decoration, inks.backdrop)
    for name in ("fg", "muted", "ok", "error", "warn", "accent_text"):
        assert worst_contrast(getattr(inks, name), on) >= AA_TEXT, (raw, name, inks)
    # Labels on accent fills (send, the open contact tab, play, the initials), and the fill's far end.
    assert contrast(inks.on_accent, theme.accent) >= AA_TEXT
    assert contrast(inks.on_accent, inks.accent_deep) >= contrast(inks.on_accent, theme.accent)
    css = theme_css(theme, backdrop)
    for value in (inks.fg, inks.muted, inks.on_accent, inks.accent_text, inks.ok, inks.error, inks.warn):
        assert value in css


def test_decoration_gives_way_before_the_text_does():
    # Mid-grey: the glows and tints would pull white or black text under 4.5:1, so they are switched off.
    grey = page_inks(parse_theme({"background": "#777777"}))
    assert grey.decoration == 0.0 and grey.fg == "#000000" and grey.worst >= AA_TEXT
    demo = page_inks(parse_theme({"background": {"from": "#0b0b10", "to": "#24123f"}}))
    assert demo.decoration == 1.0 and demo.fg == "#f4f4f7"  # the designed look where it reads
    # An owner's background image is shown dimmer the closer the theme is to the limit, or not at all.
    assert page_inks(parse_theme({}), backdrop=True).backdrop == 0.35
    assert page_inks(parse_theme({"background": "#777777"}), backdrop=True).backdrop == 0.0


# Themes near every edge: mid grey, a light gradient, a light accent on white, a saturated red, a blue whose
# light accent glows strongly; each in every template, with a form open (its send button) and a tab pressed.
HARD_THEMES = {
    "grey": {"accent": "#767676", "background": "#777777"},
    "peach": {"accent": "#fbbf24", "background": {"from": "#fde68a", "to": "#f472b6", "angle": 90}},
    "white": {"accent": "#fde047", "background": "#ffffff"},
    "red": {"accent": "#111111", "background": "#ff0000"},
    "blue": {"accent": "#60a5fa", "background": "#1e3a8a", "font": "Serif"},
}


@pytest.mark.browser
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs /usr/bin/chromium")
@pytest.mark.timeout(600)
async def test_axe_finds_no_contrast_violation_on_hard_themes(make_server):
    from playwright.async_api import async_playwright

    axe = ROOT / "tools" / "page-audit" / "node_modules" / "axe-core" / "axe.min.js"
    if not axe.exists():
        pytest.skip("needs tools/page-audit (scripts/install.sh --test runs npm ci there)")
    server = await make_server(turnstile_sitekey="")
    document = base_document()
    document["users"][0]["slots"] = [{"expires_at": "2099-01-01T00:00:00Z"}] * 20
    profile = document["profiles"][0]
    document["profiles"] = []
    for name, theme in HARD_THEMES.items():
        for template in ("classic", "minimal", "spotlight"):
            document["profiles"].append(
                {**profile, "id": f"{name}-{template}", "domain": f"{name}-{template}.hep.gg", "template": template}
                | {"theme": theme}
            )
    await server.load(document)
    async with async_playwright() as playwright:
        browser = await launch_chromium(playwright)
        try:
            # Reduced motion: contrast is judged on final frames, not halfway through a form's fade-in.
            context = await browser.new_context(
                viewport={"width": 390, "height": 844}, bypass_csp=True, reduced_motion="reduce"
            )
            page = await context.new_page()
            for entry in document["profiles"]:
                await page.goto(f"http://{entry['domain']}:{server.port}/", wait_until="load")
                await page.add_script_tag(content=axe.read_text())
                await page.locator("#contact-tab-email").click()  # the pressed tab and the send button show
                result = await page.evaluate(
                    "() => axe.run(document, { runOnly: ['color-contrast'], resultTypes: ['violations'] })"
                )
                violations = [(n["target"], n["failureSummary"]) for v in result["violations"] for n in v["nodes"]]
                assert violations == [], (entry["id"], violations[:3])
                # Every text's colour is one of the theme's inks (none hard-coded past render/colour.py).
                inks = page_inks(parse_theme(entry["theme"]))
                allowed = {inks.fg, inks.muted, inks.on_accent, inks.accent_text}
                used = await page.evaluate(
                    """() => [...document.querySelectorAll('body *')]
                        .filter(e => e.offsetParent && [...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim()))
                        .map(e => getComputedStyle(e).color)"""
                )
                hexes = {"#%02x%02x%02x" % tuple(int(x) for x in c[4:-1].split(",")[:3]) for c in used}
                assert hexes <= allowed, (entry["id"], hexes - allowed)
            await context.close()
        finally:
            await browser.close()

//! python-slugify 9.x compatible slug functions (spec §3.7), in its legacy pipeline, as
//! prefect-kubernetes uses them for job names, label keys/values and annotation keys.
//!
//! Transliteration uses the `deunicode` crate in place of `text-unidecode` (see
//! `transliterate` for where they differ).

use unicode_normalization::UnicodeNormalization;

/// Options for [`slugify`], the subset of python-slugify's arguments Prefect uses.
#[derive(Debug, Clone, Copy)]
pub struct SlugOptions {
    /// Lowercase the text (python-slugify's default).
    pub lowercase: bool,
    /// Cut the slug to this many characters; `0` means unlimited.
    pub max_length: usize,
    /// Which characters survive; every run of other characters becomes `-`.
    pub allowed: fn(char) -> bool,
}

/// python-slugify `slugify(text, max_length, regex_pattern, lowercase)` (legacy pipeline).
#[must_use]
pub fn slugify(text: &str, opts: SlugOptions) -> String {
    // Plain ASCII without apostrophes or `&` (the labels and names Prefect generates) is
    // left unchanged by steps 1-4 and 6 and lowercases the ASCII way: skip them (the
    // Unicode normalisations were 4 % of the worker's CPU in the churn benchmark: eight
    // labels per Job, up to three slugs each).
    if text.is_ascii() && !text.contains(['\'', '&']) {
        let text = if opts.lowercase {
            text.to_ascii_lowercase()
        } else {
            text.to_owned()
        };
        return finish_slug(&text, opts);
    }
    slugify_unicode(text, opts)
}

/// [`slugify`] for any text: every step.
fn slugify_unicode(text: &str, opts: SlugOptions) -> String {
    // 1. Runs of apostrophes become a dash.
    let text = replace_quote_runs(text, "-");
    // 2. NFKD, then transliterate to ASCII.
    let nfkd: String = text.nfkd().collect();
    let text = if nfkd.is_ascii() {
        nfkd
    } else {
        transliterate(&nfkd)
    };
    // 3. HTML entities, then decimal and hexadecimal references.
    let text = decode_entities(&text);
    // 4. NFKD again (entities may have produced non-ASCII text).
    let mut text: String = text.nfkd().collect();
    // 5. Lowercase.
    if opts.lowercase {
        text = text.to_lowercase();
    }
    // 6. Apostrophes produced by entities are dropped.
    let text = replace_quote_runs(&text, "");
    finish_slug(&text, opts)
}

/// Steps 7-9 of [`slugify`].
fn finish_slug(text: &str, opts: SlugOptions) -> String {
    // 7. Thousands separators between digits go.
    let text = remove_digit_commas(text);
    // 8. Disallowed runs become `-`, dash runs collapse, dashes are stripped.
    let mut slug = String::with_capacity(text.len());
    let mut in_bad_run = false;
    for c in text.chars() {
        if (opts.allowed)(c) {
            slug.push(c);
            in_bad_run = false;
        } else if !in_bad_run {
            slug.push('-');
            in_bad_run = true;
        }
    }
    let slug = collapse_dashes(&slug);
    let slug = slug.trim_matches('-');
    // 9. Truncate, then strip dashes again.
    if opts.max_length > 0 && slug.chars().count() >= opts.max_length {
        let cut: String = slug.chars().take(opts.max_length).collect();
        cut.trim_matches('-').to_owned()
    } else {
        slug.to_owned()
    }
}

/// ASCII transliteration close to text-unidecode: `deunicode` per character, except where
/// text-unidecode has no data and yields nothing: outside the Basic Multilingual Plane
/// (emoji) and in the Miscellaneous Symbols and Dingbats blocks, which deunicode spells
/// out as emoji names. Other per-character differences remain (rare scripts, CJK
/// extension A); the common Latin, Greek, Cyrillic and CJK tables agree.
fn transliterate(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let cp = u32::from(c);
        if c.is_ascii() {
            out.push(c);
        } else if cp > 0xFFFF || (0x2600..=0x27BF).contains(&cp) {
            continue;
        } else {
            out.push_str(deunicode::deunicode_char(c).unwrap_or(""));
        }
    }
    out
}

fn replace_quote_runs(text: &str, with: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_run = false;
    for c in text.chars() {
        if c == '\'' {
            if !in_run {
                out.push_str(with);
            }
            in_run = true;
        } else {
            out.push(c);
            in_run = false;
        }
    }
    out
}

fn remove_digit_commas(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    for (i, &c) in chars.iter().enumerate() {
        let between_digits = c == ','
            && i > 0
            && chars[i - 1].is_ascii_digit()
            && chars.get(i + 1).is_some_and(char::is_ascii_digit);
        if !between_digits {
            out.push(c);
        }
    }
    out
}

fn collapse_dashes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '-' && out.ends_with('-') {
            continue;
        }
        out.push(c);
    }
    out
}

/// Decodes `&name;` (HTML 4 names), then `&#NN;`, then `&#xNN;`, each as a separate pass
/// over the previous result, like python-slugify. A numeric pass that meets a code point
/// Python's `chr` rejects is skipped entirely (python-slugify swallows the error).
fn decode_entities(text: &str) -> String {
    let text = replace_refs(text, "&", |name| {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Some(None);
        }
        // htmlescape's named table is exactly Python's `html.entities.name2codepoint`.
        Some(htmlescape::decode_html(&format!("&{name};")).ok())
    })
    .unwrap_or_else(|| text.to_owned());
    let text = replace_refs(&text, "&#", |digits| {
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
            return Some(None);
        }
        // Too many digits for any code point: Python's `chr` overflows and the pass is skipped.
        let cp = match digits.trim_start_matches('0') {
            "" => 0,
            significant => significant.parse::<u64>().ok()?,
        };
        python_chr(cp).map(Some)
    })
    .unwrap_or(text);
    replace_refs(&text, "&#x", |hex| {
        if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Some(None);
        }
        let trimmed = hex.trim_start_matches('0');
        let cp = if trimmed.is_empty() {
            0
        } else {
            u64::from_str_radix(trimmed, 16).ok()?
        };
        python_chr(cp).map(Some)
    })
    .unwrap_or(text)
}

/// Python `chr(cp)`: `None` beyond U+10FFFF. Lone surrogates, which Rust strings cannot
/// hold, become U+FFFD; every slug pattern turns both into `-` the same way.
fn python_chr(cp: u64) -> Option<String> {
    if cp > 0x10FFFF {
        return None;
    }
    let c = u32::try_from(cp)
        .ok()
        .and_then(char::from_u32)
        .unwrap_or('\u{FFFD}');
    Some(c.to_string())
}

/// Replaces every `<opener><body>;` whose body `decode` accepts. `decode` returns
/// `Some(Some(text))` to replace, `Some(None)` to leave the text, `None` to abort the
/// whole pass.
fn replace_refs<F>(text: &str, opener: &str, decode: F) -> Option<String>
where
    F: Fn(&str) -> Option<Option<String>>,
{
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find(opener) {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + opener.len()..];
        let body_len = after
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(after.len());
        if after[body_len..].starts_with(';')
            && let Some(replacement) = decode(&after[..body_len])?
        {
            out.push_str(&replacement);
            rest = &after[body_len + 1..];
            continue;
        }
        // No reference here: keep the first byte of the opener and scan on from the next.
        out.push_str(&rest[pos..pos + 1]);
        rest = &rest[pos + 1..];
    }
    out.push_str(rest);
    Some(out)
}

fn name_chars(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-'
}

fn label_chars(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

fn prefix_chars(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.')
}

fn strip_label(s: &str) -> &str {
    s.trim_matches(|c| matches!(c, '_' | '-' | '.'))
}

/// python-slugify's `slugify(text)` with its defaults (lowercase, `[a-z0-9-]`, no length
/// limit), as Prefect's `get_name_slug` uses it for worker resource ids in events.
#[must_use]
pub fn slugify_default(text: &str) -> String {
    slugify(
        text,
        SlugOptions {
            lowercase: true,
            max_length: 0,
            allowed: name_chars,
        },
    )
}

/// `_slugify_name`: a lowercase RFC 1123-ish slug of at most 45 characters (room for
/// `generateName`'s suffix), or `None` if nothing is left.
#[must_use]
pub fn slug_name(name: &str) -> Option<String> {
    let slug = slugify(
        name,
        SlugOptions {
            lowercase: true,
            max_length: 45,
            allowed: name_chars,
        },
    );
    (!slug.is_empty()).then_some(slug)
}

/// `_slugify_label_value`: case kept, `[A-Za-z0-9-_.]`, at most 63 characters, `_-.`
/// stripped; falls back to the original value when nothing is left.
#[must_use]
pub fn slug_label_value(value: &str) -> String {
    let slug = slugify(
        value,
        SlugOptions {
            lowercase: false,
            max_length: 63,
            allowed: label_chars,
        },
    );
    let stripped = strip_label(&slug);
    if stripped.is_empty() {
        value.to_owned()
    } else {
        stripped.to_owned()
    }
}

/// `_slugify_label_key`: an optional `prefix/` (`[A-Za-z0-9-.]`, at most 253) and a name
/// slugged like a label value (at most 63). Each part falls back to its original text when
/// it slugs to nothing; an empty prefix drops the slash.
#[must_use]
pub fn slug_label_key(key: &str) -> String {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let name_slug = slugify(
        name,
        SlugOptions {
            lowercase: false,
            max_length: 63,
            allowed: label_chars,
        },
    );
    let name_slug = match strip_label(&name_slug) {
        "" => name.to_owned(),
        s => s.to_owned(),
    };
    match prefix {
        Some(p) if !p.is_empty() => {
            let prefix_slug = slugify(
                p,
                SlugOptions {
                    lowercase: false,
                    max_length: 253,
                    allowed: prefix_chars,
                },
            );
            let prefix_slug = match strip_label(&prefix_slug) {
                "" => p.to_owned(),
                s => s.to_owned(),
            };
            format!("{prefix_slug}/{name_slug}")
        }
        _ => name_slug,
    }
}

/// The default image tag python-slugify produces in `get_prefect_image_name`:
/// `<prefect version>-python<python version>`, case kept, `[A-Za-z0-9_.-]`, at most 128.
#[must_use]
pub fn slug_image_tag(tag: &str) -> String {
    slugify(
        tag,
        SlugOptions {
            lowercase: false,
            max_length: 128,
            allowed: |c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_match_spec_table() {
        let cases = [
            ("data eng!", "data-eng"),
            ("My Flow_Name", "My-Flow_Name"),
            (
                "2026-11-29T02:32:31.729879+00:00",
                "2026-11-29T02-32-31.729879-00-00",
            ),
            ("Ünïcode välue", "Unicode-value"),
            ("日本語", "Ri-Ben-Yu"),
            ("1,000", "1000"),
            ("it's", "it-s"),
            ("__x__", "x"),
            ("...", "..."),
            ("-----", "-----"),
            ("--v--", "v"),
            ("R&D / Analytics", "R-D-Analytics"),
            ("3.9.1", "3.9.1"),
        ];
        for (input, want) in cases {
            assert_eq!(slug_label_value(input), want, "slugV({input:?})");
        }
        assert_eq!(slug_label_value(&"a".repeat(70)), "a".repeat(63));
        assert_eq!(
            slug_label_value(&format!("{}-b", "a".repeat(62))),
            "a".repeat(62)
        );
    }

    #[test]
    fn label_keys_match_spec_table() {
        let cases = [
            ("My Flow_Name", "My-Flow_Name"),
            ("Some/Weird Key", "Some/Weird-Key"),
            ("a/b c", "a/b-c"),
            ("Plain Key!", "Plain-Key"),
            ("ex@mple.com/k", "ex-mple.com/k"),
            ("a_b/c", "a-b/c"),
            ("-pre-/-n-", "pre/n"),
            ("a/b/c", "a/b-c"),
            ("x/", "x/"),
            ("/x", "x"),
            ("prefect.io/flow-run-id", "prefect.io/flow-run-id"),
        ];
        for (input, want) in cases {
            assert_eq!(slug_label_key(input), want, "slugK({input:?})");
        }
    }

    #[test]
    fn names_match_spec_table() {
        let cases = [
            ("My Flow_Name", Some("my-flow-name")),
            (
                "2026-11-29T02:32:31.729879+00:00",
                Some("2026-11-29t02-32-31-729879-00-00"),
            ),
            ("Ünïcode välue", Some("unicode-value")),
            ("日本語", Some("ri-ben-yu")),
            ("...", None),
            ("-----", None),
        ];
        for (input, want) in cases {
            assert_eq!(slug_name(input).as_deref(), want, "slugName({input:?})");
        }
        assert_eq!(slug_name(&"a".repeat(70)), Some("a".repeat(45)));
        assert_eq!(
            slug_name(&"hello-".repeat(10)).as_deref(),
            Some("hello-hello-hello-hello-hello-hello-hello-hel")
        );
    }

    #[test]
    fn entities_and_quotes() {
        assert_eq!(slug_label_value("foo &amp; bar"), "foo-bar");
        assert_eq!(slug_label_value("&#381;ivot"), "Z-ivot");
        assert_eq!(slug_label_value("&#x17D;ivot"), "Z-ivot");
        assert_eq!(slug_label_value("rock&#39;n"), "rockn");
        assert_eq!(slug_label_value("&amp;#65;"), "A");
        assert_eq!(slug_label_value("&nosuch; x"), "nosuch-x");
        assert_eq!(slug_label_value("&#99999999; &#65;"), "99999999-65");
    }

    #[test]
    fn the_ascii_shortcut_slugs_like_every_step() {
        for text in [
            "prefect.io/flow-run-name",
            "My Flow__Run--1,000,000 x",
            "UPPER.lower_Mixed-09",
            "  spaces and\ttabs\n",
            "--..__--",
            "a".repeat(300).as_str(),
            "",
        ] {
            for allowed in [name_chars, label_chars, prefix_chars] {
                for (lowercase, max_length) in [(true, 45), (false, 63), (false, 0)] {
                    let opts = SlugOptions {
                        lowercase,
                        max_length,
                        allowed,
                    };
                    assert_eq!(slugify(text, opts), slugify_unicode(text, opts), "{text:?}");
                }
            }
        }
    }

    #[test]
    fn image_tag() {
        assert_eq!(slug_image_tag("3.9.1-python3.11"), "3.9.1-python3.11");
    }

    /// Outputs of python-slugify 9.2.0 with text-unidecode 1.3 through prefect-kubernetes'
    /// three wrappers (value, key, name).
    #[test]
    fn transliteration_matches_python_slugify() {
        let cases: &[(&str, &str, &str, Option<&str>)] = &[
            (
                "Ünïcode välue",
                "Unicode-value",
                "Unicode-value",
                Some("unicode-value"),
            ),
            ("日本語", "Ri-Ben-Yu", "Ri-Ben-Yu", Some("ri-ben-yu")),
            (
                "Ελληνικά Привет",
                "Ellenika-Privet",
                "Ellenika-Privet",
                Some("ellenika-privet"),
            ),
            (
                "straße ﬁ ½ ①",
                "strasse-fi-1-2-1",
                "strasse-fi-1-2-1",
                Some("strasse-fi-1-2-1"),
            ),
            ("🎉 party", "party", "party", Some("party")),
            (
                "Œuvre Æsir",
                "OEuvre-AEsir",
                "OEuvre-AEsir",
                Some("oeuvre-aesir"),
            ),
            ("ǅemal", "Dzemal", "Dzemal", Some("dzemal")),
            ("Đuro ł ø", "Duro-l-o", "Duro-l-o", Some("duro-l-o")),
            (
                "Café ☕ «quoted» — dash",
                "Cafe-quoted-dash",
                "Cafe-quoted-dash",
                Some("cafe-quoted-dash"),
            ),
            (
                "Ñandú's \"nest\"",
                "Nandu-s-nest",
                "Nandu-s-nest",
                Some("nandu-s-nest"),
            ),
            (
                "ＦＵＬＬ　ｗｉｄｔｈ",
                "FULL-width",
                "FULL-width",
                Some("full-width"),
            ),
            (
                "naïve_résumé.v2",
                "naive_resume.v2",
                "naive_resume.v2",
                Some("naive-resume-v2"),
            ),
            (
                "北京 2026",
                "Bei-Jing-2026",
                "Bei-Jing-2026",
                Some("bei-jing-2026"),
            ),
            (
                "한국어 텍스트",
                "hangugeo-tegseuteu",
                "hangugeo-tegseuteu",
                Some("hangugeo-tegseuteu"),
            ),
            ("עברית", "bryt", "bryt", Some("bryt")),
            ("العربية", "l-rby", "l-rby", Some("l-rby")),
            ("ไทย", "aithy", "aithy", Some("aithy")),
            ("Ø/æ key", "O-ae-key", "O/ae-key", Some("o-ae-key")),
            ("x y z", "x-y-z", "x-y-z", Some("x-y-z")),
            (
                "İstanbul ıi",
                "Istanbul-ii",
                "Istanbul-ii",
                Some("istanbul-ii"),
            ),
            ("ß/ẞ", "ss-Ss", "ss/Ss", Some("ss-ss")),
            (
                "tab\tnew\nline",
                "tab-new-line",
                "tab-new-line",
                Some("tab-new-line"),
            ),
            ("Sigma ΣΣ ς", "Sigma-SS-s", "Sigma-SS-s", Some("sigma-ss-s")),
        ];
        let mut bad = Vec::new();
        for &(input, v, k, n) in cases {
            let got = (
                slug_label_value(input),
                slug_label_key(input),
                slug_name(input),
            );
            if got != (v.to_owned(), k.to_owned(), n.map(str::to_owned)) {
                bad.push(format!(
                    "{input:?}: got {got:?}, want ({v:?}, {k:?}, {n:?})"
                ));
            }
        }
        assert!(bad.is_empty(), "{}", bad.join("\n"));
    }
}

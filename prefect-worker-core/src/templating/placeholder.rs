//! The placeholder grammar: Python's `({{\s*([\w\.\-\[\]$]+)\s*}})` with Unicode `\w` and `\s`.
//!
//! Written as a scanner rather than with a regex crate: the grammar is tiny, the scanner
//! matches leftmost and non-overlapping exactly like `re.findall`/`re.sub`, and it keeps
//! the Unicode classes under our control (Python's `\w`/`\s` are not Rust's regex classes).

/// The prefix of block-document placeholders (`{{ prefect.blocks.<slug>.<name> }}`).
pub const BLOCK_DOCUMENT_PREFIX: &str = "prefect.blocks.";
/// The prefix of Prefect Variable placeholders (`{{ prefect.variables.<name> }}`).
pub const VARIABLE_PREFIX: &str = "prefect.variables.";
/// The prefix of worker-environment placeholders (`{{ $NAME }}`).
pub const ENV_VAR_PREFIX: char = '$';

/// What a placeholder refers to, decided by the prefix of its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PlaceholderType {
    /// A job variable (or `ctx.*` when rendering names).
    Standard,
    /// `prefect.blocks.*`: resolved by the block pass.
    BlockDocument,
    /// `prefect.variables.*`: resolved by the variable pass.
    Variable,
    /// `$NAME`: the worker process environment.
    EnvVar,
}

impl PlaceholderType {
    /// The type of a placeholder called `name`.
    #[must_use]
    pub fn of(name: &str) -> Self {
        if name.starts_with(BLOCK_DOCUMENT_PREFIX) {
            Self::BlockDocument
        } else if name.starts_with(VARIABLE_PREFIX) {
            Self::Variable
        } else if name.starts_with(ENV_VAR_PREFIX) {
            Self::EnvVar
        } else {
            Self::Standard
        }
    }
}

/// One placeholder occurrence.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Placeholder {
    /// The whole `{{ ... }}` text, spaces included.
    pub full_match: String,
    /// The name between the braces.
    pub name: String,
    /// What the name refers to.
    pub kind: PlaceholderType,
}

/// A match: byte range of the full placeholder and of its name.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
    name_start: usize,
    name_end: usize,
}

/// Python's `\s` for `str` patterns: `str.isspace()`. Rust's `is_whitespace` lacks the
/// information separators U+001C..U+001F, which Python counts as whitespace.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `\w` for `str` patterns (alphanumeric or `_`). Rust's `is_alphanumeric` is the
/// closest available classification; it differs only for rare combining marks.
fn is_py_word(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

fn is_name_char(c: char) -> bool {
    is_py_word(c) || matches!(c, '.' | '-' | '[' | ']' | '$')
}

/// Tries to match a placeholder starting exactly at byte `start`.
fn match_at(s: &str, start: usize) -> Option<Span> {
    let rest = s.get(start..)?;
    if !rest.starts_with("{{") {
        return None;
    }
    let mut pos = start + 2;
    let skip = |pos: &mut usize, pred: fn(char) -> bool| {
        while let Some(c) = s.get(*pos..).and_then(|r| r.chars().next()) {
            if !pred(c) {
                break;
            }
            *pos += c.len_utf8();
        }
    };
    skip(&mut pos, is_py_space);
    let name_start = pos;
    skip(&mut pos, is_name_char);
    let name_end = pos;
    if name_end == name_start {
        return None;
    }
    skip(&mut pos, is_py_space);
    if s.get(pos..)?.starts_with("}}") {
        Some(Span {
            start,
            end: pos + 2,
            name_start,
            name_end,
        })
    } else {
        None
    }
}

/// All matches, leftmost first and non-overlapping (as `re.finditer`).
fn spans(s: &str) -> Vec<Span> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        match s[i..].find("{{") {
            None => break,
            Some(off) => {
                let at = i + off;
                if let Some(span) = match_at(s, at) {
                    out.push(span);
                    i = span.end;
                } else {
                    // A failed match at `{{` may still succeed one byte later (`{{{ x }}`).
                    i = at + 1;
                }
            }
        }
    }
    out
}

/// The distinct placeholders of `template`, in first-occurrence order.
///
/// Python collects them into a set; callers that ask "is there exactly one placeholder"
/// need the de-duplication, and the order only matters for the deterministic order in
/// which the later passes read variables.
#[must_use]
pub fn find_placeholders(template: &str) -> Vec<Placeholder> {
    let mut out: Vec<Placeholder> = Vec::new();
    for sp in spans(template) {
        let name = &template[sp.name_start..sp.name_end];
        let p = Placeholder {
            full_match: template[sp.start..sp.end].to_owned(),
            name: name.to_owned(),
            kind: PlaceholderType::of(name),
        };
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// If `template` is exactly one placeholder (nothing around it, and no other
/// placeholder), returns it.
#[must_use]
pub fn sole_placeholder(template: &str) -> Option<Placeholder> {
    let mut found = find_placeholders(template);
    if found.len() == 1 && found[0].full_match == template {
        found.pop()
    } else {
        None
    }
}

/// Replaces every placeholder in one pass over `template`. `replace` gets the full match
/// and name and returns the text to insert, or `None` to keep the placeholder as is.
/// Inserted text is never scanned again.
pub fn replace_placeholders<F>(template: &str, mut replace: F) -> String
where
    F: FnMut(&str, &str) -> Option<String>,
{
    let mut out = String::with_capacity(template.len());
    let mut last = 0;
    for sp in spans(template) {
        out.push_str(&template[last..sp.start]);
        let full = &template[sp.start..sp.end];
        match replace(full, &template[sp.name_start..sp.name_end]) {
            Some(text) => out.push_str(&text),
            None => out.push_str(full),
        }
        last = sp.end;
    }
    out.push_str(&template[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(s: &str) -> Vec<String> {
        find_placeholders(s).into_iter().map(|p| p.name).collect()
    }

    #[test]
    fn grammar_matches_python_regex() {
        assert_eq!(names("{{ a }}"), ["a"]);
        assert_eq!(names("{{a}}"), ["a"]);
        assert_eq!(names("{{\t a.b[0].c-d \n}}"), ["a.b[0].c-d"]);
        assert_eq!(names("{{ $HOME }}"), ["$HOME"]);
        assert_eq!(names("{{ a b }}"), Vec::<String>::new());
        assert_eq!(names("{{ }}"), Vec::<String>::new());
        assert_eq!(names("{{{ x }}}"), ["x"]);
        assert_eq!(names("{{ ünï }}"), ["ünï"]);
        assert_eq!(names("x{{ a }}y{{ b }}{{ a }}"), ["a", "b"]);
        assert_eq!(names("{{ a:b }}"), Vec::<String>::new());
    }

    #[test]
    fn types_by_prefix() {
        assert_eq!(
            PlaceholderType::of("prefect.blocks.x.y"),
            PlaceholderType::BlockDocument
        );
        assert_eq!(
            PlaceholderType::of("prefect.variables.x"),
            PlaceholderType::Variable
        );
        assert_eq!(PlaceholderType::of("$X"), PlaceholderType::EnvVar);
        assert_eq!(
            PlaceholderType::of("prefect.other"),
            PlaceholderType::Standard
        );
    }

    #[test]
    fn sole_placeholder_requires_whole_string() {
        assert!(sole_placeholder("{{ a }}").is_some());
        assert!(sole_placeholder(" {{ a }}").is_none());
        assert!(sole_placeholder("{{ a }}{{ a }}").is_none());
    }

    #[test]
    fn single_pass_replacement() {
        let out = replace_placeholders("{{ a }}-{{ b }}", |_, n| {
            (n == "a").then(|| "{{ b }}".to_owned())
        });
        assert_eq!(out, "{{ b }}-{{ b }}");
    }
}

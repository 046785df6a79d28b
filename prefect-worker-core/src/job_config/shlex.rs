//! Python `shlex.split(s, posix=True)`, exactly: how the worker turns a command string
//! into container `args`.
//!
//! It differs from a POSIX shell and from the `shlex` crate: there is no comment handling
//! (`#` is a word), inside double quotes a backslash escapes only `"` and `\` (so
//! `"\$HOME"` keeps the backslash), a backslash-newline outside quotes yields a newline,
//! `''` is an empty word, and an empty or blank string gives no words at all.

/// Why a command string could not be split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShlexError {
    /// A quote was opened and never closed.
    #[error("No closing quotation")]
    NoClosingQuotation,
    /// The string ends with a lone backslash.
    #[error("No escaped character")]
    NoEscapedCharacter,
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between words.
    Space,
    /// Inside a word, outside quotes.
    Word,
    /// Inside single or double quotes.
    Quote(char),
    /// After a backslash; remembers where it appeared (`Word` or `Quote('"')`).
    Escape(EscapedIn),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum EscapedIn {
    Word,
    DoubleQuote,
}

/// Splits `s` like Python's `shlex.split(s)` (POSIX mode, no comments).
pub fn split(s: &str) -> Result<Vec<String>, ShlexError> {
    let mut words = Vec::new();
    let mut token = String::new();
    // Whether the current word had quotes: `''` makes an empty word.
    let mut quoted = false;
    let mut state = State::Space;
    for c in s.chars() {
        match state {
            State::Space | State::Word => {
                if is_space(c) {
                    if state == State::Word || quoted || !token.is_empty() {
                        words.push(std::mem::take(&mut token));
                        quoted = false;
                    }
                    state = State::Space;
                } else if c == '\\' {
                    state = State::Escape(EscapedIn::Word);
                } else if c == '\'' || c == '"' {
                    state = State::Quote(c);
                } else {
                    token.push(c);
                    state = State::Word;
                }
            }
            State::Quote(q) => {
                quoted = true;
                if c == q {
                    state = State::Word;
                } else if c == '\\' && q == '"' {
                    state = State::Escape(EscapedIn::DoubleQuote);
                } else {
                    token.push(c);
                }
            }
            State::Escape(EscapedIn::Word) => {
                token.push(c);
                state = State::Word;
            }
            State::Escape(EscapedIn::DoubleQuote) => {
                // Only the quote itself and the backslash can be escaped inside quotes.
                if c != '"' && c != '\\' {
                    token.push('\\');
                }
                token.push(c);
                state = State::Quote('"');
            }
        }
    }
    match state {
        State::Quote(_) => Err(ShlexError::NoClosingQuotation),
        State::Escape(_) => Err(ShlexError::NoEscapedCharacter),
        State::Word => {
            words.push(token);
            Ok(words)
        }
        State::Space => {
            if quoted || !token.is_empty() {
                words.push(token);
            }
            Ok(words)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(s: &str) -> Vec<String> {
        split(s).unwrap()
    }

    #[test]
    fn splits_like_python_shlex() {
        assert_eq!(
            sp("prefect flow-run execute"),
            ["prefect", "flow-run", "execute"]
        );
        assert_eq!(
            sp(r#"python -c 'print(1)' --flag="a b""#),
            ["python", "-c", "print(1)", "--flag=a b"]
        );
        assert_eq!(
            sp(
                r#"python -c 'import sys; print(sys.argv)' --greeting="hello world" plain\ escaped"#
            ),
            [
                "python",
                "-c",
                "import sys; print(sys.argv)",
                "--greeting=hello world",
                "plain escaped"
            ]
        );
        assert_eq!(sp("a # b"), ["a", "#", "b"]);
        assert_eq!(sp(r#""\$HOME" "\"q\"" "\\""#), [r"\$HOME", "\"q\"", "\\"]);
        assert_eq!(sp(r"'\n'"), [r"\n"]);
        assert_eq!(sp("''"), [""]);
        assert_eq!(sp("a '' b"), ["a", "", "b"]);
        assert_eq!(sp("a''b"), ["ab"]);
        assert_eq!(sp(""), Vec::<String>::new());
        assert_eq!(sp("   \t\n "), Vec::<String>::new());
        assert_eq!(sp("  a  "), ["a"]);
        assert_eq!(sp("a\\\nb"), ["a\nb"]);
        assert_eq!(sp("ünï côdé"), ["ünï", "côdé"]);
    }

    #[test]
    fn errors_like_python_shlex() {
        assert_eq!(
            split("echo 'unterminated"),
            Err(ShlexError::NoClosingQuotation)
        );
        assert_eq!(split("echo \"x\\"), Err(ShlexError::NoEscapedCharacter));
        assert_eq!(split("echo x\\"), Err(ShlexError::NoEscapedCharacter));
    }
}

//! Shell-pattern matching with the behaviour of glibc's `fnmatch(pattern, name, 0)` in the
//! C locale, which is what kmod uses for aliases (runtime-tools §1.7, §3.4).
//!
//! Supported: `*`, `?`, backslash escapes, and bracket expressions with `!`/`^` negation,
//! ranges, POSIX character classes (`[:digit:]` …), and the C-locale forms of collating
//! symbols (`[.x.]`) and equivalence classes (`[=x=]`). No flag is set, so `/` and a leading
//! `.` are ordinary characters.
//!
//! Malformed patterns behave as in glibc 2.36 (Debian 12, checked by differential testing
//! against its `fnmatch`): an unterminated `[` stands for a literal `[`, a trailing backslash
//! never matches, an unknown class name never matches, and a few odder cases (an unterminated
//! `[.`, a range with no end) make the match fail.
//!
//! Both strings are treated like C strings: they end at their first NUL byte, if any.
//!
//! The matcher uses the classic "remember the last star" backtracking: every token other than
//! `*` consumes exactly one character, so backtracking to the most recent star is enough. The
//! work is at most proportional to `pattern.len() * name.len()` (times the length of one
//! bracket expression), never exponential.

/// The longest character-class name glibc accepts (`CHARCLASS_NAME_MAX`).
const CLASS_NAME_MAX: usize = 2048;

/// Does `name` match the shell pattern `pattern` (glibc `fnmatch(pattern, name, 0) == 0`)?
pub fn fnmatch(pattern: &[u8], name: &[u8]) -> bool {
    let pat = Pat(until_nul(pattern));
    let name = until_nul(name);
    let mut p = 0usize;
    let mut n = 0usize;
    // Pattern position just after the most recent `*`, and the name position it was tried at.
    let mut star: Option<(usize, usize)> = None;
    loop {
        let step = if p < pat.len() {
            if pat.at(p) == b'*' {
                p += 1;
                star = Some((p, n));
                continue;
            }
            match name.get(n) {
                Some(&c) => pat.match_one(p, c),
                None => None,
            }
        } else if n == name.len() {
            return true;
        } else {
            None
        };
        match step {
            Some(next) => {
                p = next;
                n += 1;
            }
            None => match star {
                Some((sp, sn)) if sn < name.len() => {
                    star = Some((sp, sn + 1));
                    p = sp;
                    n = sn + 1;
                }
                _ => return false,
            },
        }
    }
}

/// Does the byte string contain a character that makes it a pattern for kmod's wildcard search
/// (`*`, `?` or `[`)?
pub fn has_wildcard(s: &[u8]) -> bool {
    s.iter().any(|&b| is_wildcard(b))
}

/// Is `b` one of the bytes at which kmod's wildcard search switches to pattern matching?
pub fn is_wildcard(b: u8) -> bool {
    matches!(b, b'*' | b'?' | b'[')
}

fn until_nul(s: &[u8]) -> &[u8] {
    match s.iter().position(|&b| b == 0) {
        Some(i) => &s[..i],
        None => s,
    }
}

/// A pattern that reads as NUL past its end, like a C string.
#[derive(Clone, Copy)]
struct Pat<'a>(&'a [u8]);

/// What happened while scanning one member of a bracket expression.
enum Member {
    /// The character is matched; continue skipping from this position.
    Matched(usize),
    /// Not matched by this member; `c` is the next pattern byte, `p` the position after it.
    Next { c: u8, p: usize },
    /// The pattern is ill-formed in a way that makes the whole match fail.
    Fail,
}

impl<'a> Pat<'a> {
    fn len(self) -> usize {
        self.0.len()
    }

    fn at(self, i: usize) -> u8 {
        self.0.get(i).copied().unwrap_or(0)
    }

    /// Match the single-character token at `p` (not `*`) against `c`.
    /// Returns the position after the token, or `None` when it does not match.
    fn match_one(self, p: usize, c: u8) -> Option<usize> {
        match self.at(p) {
            b'?' => Some(p + 1),
            b'\\' => {
                let e = self.at(p + 1);
                (e != 0 && e == c).then_some(p + 2)
            }
            b'[' => self.bracket(p + 1, c),
            lit => (lit == c).then_some(p + 1),
        }
    }

    /// Match a bracket expression whose `[` is just before `start`.
    fn bracket(self, start: usize, ch: u8) -> Option<usize> {
        let mut p = start;
        let negate = matches!(self.at(p), b'!' | b'^');
        if negate {
            p += 1;
        }
        let mut c = self.at(p);
        p += 1;
        loop {
            let member = if c == b'\\' {
                let e = self.at(p);
                if e == 0 {
                    return None;
                }
                self.plain_member(e, p + 1, ch)
            } else if c == b'[' && self.at(p) == b':' {
                self.class_member(p, ch)
            } else if c == b'[' && self.at(p) == b'=' {
                self.equivalence_member(p, ch)
            } else if c == 0 {
                // Unterminated: the `[` is an ordinary character.
                return (ch == b'[').then_some(start);
            } else if c == b'[' && self.at(p) == b'.' {
                self.collating_member(p, ch)
            } else {
                self.plain_member(c, p, ch)
            };
            match member {
                Member::Matched(q) => return self.skip_rest(q, negate, start, ch),
                Member::Fail => return None,
                Member::Next { c: nc, p: np } => {
                    c = nc;
                    p = np;
                }
            }
            if c == b']' {
                return negate.then_some(p);
            }
        }
    }

    /// A member that is a plain byte `m` (possibly the start of a range); `p` is the position
    /// after it.
    fn plain_member(self, m: u8, p: usize, ch: u8) -> Member {
        let is_range = self.at(p) == b'-' && self.at(p + 1) != 0 && self.at(p + 1) != b']';
        if !is_range && m == ch {
            return Member::Matched(p);
        }
        self.range_tail(m, p, ch)
    }

    /// After a member whose value is `low`, read the next byte and, if it starts a range,
    /// the range's end. `p` is the position after the member.
    fn range_tail(self, low: u8, mut p: usize, ch: u8) -> Member {
        let c = self.at(p);
        p += 1;
        if c == b'-' && self.at(p) != b']' {
            let mut high = self.at(p);
            p += 1;
            if high == b'[' && self.at(p) == b'.' {
                match self.collating_symbol(p) {
                    Some((sym, after)) => {
                        high = sym;
                        p = after;
                    }
                    None => return Member::Fail,
                }
            } else {
                if high == b'\\' {
                    high = self.at(p);
                    p += 1;
                }
                if high == 0 {
                    return Member::Fail;
                }
            }
            if low <= ch && ch <= high {
                return Member::Matched(p);
            }
            let c = self.at(p);
            return Member::Next { c, p: p + 1 };
        }
        Member::Next { c, p }
    }

    /// `[:name:]`; `p` points at the `:`.
    fn class_member(self, p: usize, ch: u8) -> Member {
        let mut q = p;
        let mut len = 0usize;
        loop {
            if len == CLASS_NAME_MAX {
                return Member::Fail;
            }
            q += 1;
            let x = self.at(q);
            if x == b':' && self.at(q + 1) == b']' {
                break;
            }
            if !(b'a'..=b'y').contains(&x) {
                // Not a class name after all: the `[` is an ordinary member.
                return self.plain_member(b'[', p, ch);
            }
            len += 1;
        }
        let name = self.0.get(p + 1..p + 1 + len).unwrap_or(&[]);
        let after = q + 2;
        match class_contains(name, ch) {
            None => Member::Fail,
            Some(true) => Member::Matched(after),
            Some(false) => Member::Next {
                c: self.at(after),
                p: after + 1,
            },
        }
    }

    /// `[=x=]`; `p` points at the first `=`.
    fn equivalence_member(self, p: usize, ch: u8) -> Member {
        let x = self.at(p + 1);
        if x == 0 || self.at(p + 2) != b'=' || self.at(p + 3) != b']' {
            return self.plain_member(b'[', p, ch);
        }
        let after = p + 4;
        if ch == x {
            return Member::Matched(after);
        }
        Member::Next {
            c: self.at(after),
            p: after + 1,
        }
    }

    /// `[.x.]` as a member; `p` points at the first `.`.
    fn collating_member(self, p: usize, ch: u8) -> Member {
        let Some((sym, after)) = self.collating_symbol(p) else {
            return Member::Fail;
        };
        // Here a following `-` makes it a range start even before a `]`.
        let is_range = self.at(after) == b'-' && self.at(after + 1) != 0;
        if !is_range && ch == sym {
            return Member::Matched(after);
        }
        self.range_tail(sym, after, ch)
    }

    /// Parse `.x.]` starting at the `.` at `p`. In the C locale only one-character symbols are
    /// valid. Returns the symbol and the position after `]`, or `None` for a failing pattern.
    fn collating_symbol(self, p: usize) -> Option<(u8, usize)> {
        let mut q = p;
        let mut count = 0usize;
        loop {
            q += 1;
            let x = self.at(q);
            if x == b'.' && self.at(q + 1) == b']' {
                break;
            }
            if x == 0 {
                return None;
            }
            count += 1;
        }
        (count == 1).then(|| (self.at(p + 1), q + 2))
    }

    /// The character matched a member: skip to the closing `]`. If there is none, the `[`
    /// was an ordinary character after all (glibc 2.36 behaviour).
    fn skip_rest(self, mut p: usize, negate: bool, start: usize, ch: u8) -> Option<usize> {
        loop {
            let c = self.at(p);
            p += 1;
            match c {
                b']' => break,
                0 => return (ch == b'[').then_some(start),
                b'\\' => {
                    if self.at(p) == 0 {
                        return None;
                    }
                    p += 1;
                }
                b'[' if self.at(p) == b':' => {
                    let startp = p;
                    let mut count = 0usize;
                    loop {
                        p += 1;
                        let x = self.at(p);
                        count += 1;
                        if count == CLASS_NAME_MAX {
                            return None;
                        }
                        if x == b':' && self.at(p + 1) == b']' {
                            p += 2;
                            break;
                        }
                        if !(b'a'..=b'y').contains(&x) {
                            p = startp;
                            break;
                        }
                    }
                }
                b'[' if self.at(p) == b'=' => {
                    if self.at(p + 1) == 0 || self.at(p + 2) != b'=' || self.at(p + 3) != b']' {
                        return None;
                    }
                    p += 4;
                }
                b'[' if self.at(p) == b'.' => loop {
                    p += 1;
                    let x = self.at(p);
                    if x == 0 {
                        return None;
                    }
                    if x == b'.' && self.at(p + 1) == b']' {
                        p += 2;
                        break;
                    }
                },
                _ => {}
            }
        }
        (!negate).then_some(p)
    }
}

/// Is `c` in the C-locale character class `name`? `None` for an unknown class.
fn class_contains(name: &[u8], c: u8) -> Option<bool> {
    let r = match name {
        b"alnum" => c.is_ascii_alphanumeric(),
        b"alpha" => c.is_ascii_alphabetic(),
        b"blank" => c == b' ' || c == b'\t',
        b"cntrl" => c.is_ascii_control(),
        b"digit" => c.is_ascii_digit(),
        b"graph" => c.is_ascii_graphic(),
        b"lower" => c.is_ascii_lowercase(),
        b"print" => c.is_ascii_graphic() || c == b' ',
        b"punct" => c.is_ascii_punctuation(),
        b"space" => matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'),
        b"upper" => c.is_ascii_uppercase(),
        b"xdigit" => c.is_ascii_hexdigit(),
        _ => return None,
    };
    Some(r)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::fnmatch;

    fn m(p: &str, n: &str) -> bool {
        fnmatch(p.as_bytes(), n.as_bytes())
    }

    #[test]
    fn basics() {
        assert!(m("", ""));
        assert!(!m("", "a"));
        assert!(m("*", ""));
        assert!(m("*", "anything/at.all"));
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "ac"));
        assert!(m("pci:v*d*sv*", "pci:v00008086d00001234sv0000"));
        assert!(m(
            "usb:v0BDAp8153d*dc*dsc*dp*ic02isc06ip00in*",
            "usb:v0BDAp8153d3100dc00dsc00dp00ic02isc06ip00in00"
        ));
        assert!(!m("abc", "abcd"));
        assert!(m("a*", "a"));
        assert!(m("*a", "a"));
        assert!(!m("*a", "ab"));
    }

    #[test]
    fn brackets() {
        assert!(m("[0-9]", "5"));
        assert!(!m("[0-9]", "a"));
        assert!(m("[!0-9]", "a"));
        assert!(m("[^0-9]", "a"));
        assert!(!m("[^0-9]", "3"));
        assert!(m("[]]", "]"));
        assert!(m("[!]]", "a"));
        assert!(m("[a-]", "-"));
        assert!(m("[[:digit:]]x", "7x"));
        assert!(!m("[[:bogus:]]", "a"));
        assert!(m("[[.a.]]", "a"));
        assert!(m("[[=a=]]", "a"));
        // Unterminated bracket: literal `[`.
        assert!(m("[ab", "[ab"));
        assert!(!m("[ab", "a"));
        assert!(m("[[", "[["));
        assert!(m("[[=", "[[="));
        assert!(!m("[a-", "[a-"));
        assert!(!m("[[[=xy]", "[["));
    }

    #[test]
    fn escapes() {
        assert!(m("\\*", "*"));
        assert!(!m("\\*", "a"));
        assert!(!m("a\\", "a"));
        assert!(!m("a\\", "a\\"));
        assert!(m("[\\]]", "]"));
    }

    #[test]
    fn no_exponential_backtracking() {
        let pat = "a*".repeat(40) + "b";
        let name = "a".repeat(5000);
        assert!(!m(&pat, &name));
        let name2 = "a".repeat(5000) + "b";
        assert!(m(&pat, &name2));
    }

    #[test]
    fn nul_ends_strings() {
        assert!(fnmatch(b"ab\0cd", b"ab"));
        assert!(fnmatch(b"ab", b"ab\0zz"));
    }
}

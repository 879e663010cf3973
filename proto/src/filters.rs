//! containerd's filter language for `List` calls.
//!
//! A filter is a comma-separated list of selectors, all of which must match:
//! `<fieldpath>[<op><value>]` with operators `==`, `!=`, `~=` (regular
//! expression) or none (field present). Field path components are separated
//! by `.` and may be double-quoted (`labels."containerd.io/gc.root"`). Values
//! may be bare (up to the next comma or space) or double-quoted; regular
//! expressions may also be delimited by `/…/` or `|…|`. A request's several
//! filters are alternatives: an object matches if any of them matches.

use regex::Regex;
use std::collections::HashMap;

/// A malformed filter; its text points at the offending position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("filter {input:?} is invalid at position {pos}: {msg}")]
pub struct ParseError {
    input: String,
    pos: usize,
    msg: String,
}

impl crate::errdefs::HasKind for ParseError {
    fn kind(&self) -> crate::errdefs::Kind {
        crate::errdefs::Kind::InvalidArgument
    }
}

/// Gives a filter access to an object's fields.
pub trait Adaptor {
    /// The value at `path` (already split on `.`), or `None` when absent.
    fn field(&self, path: &[String]) -> Option<String>;
}

/// Looks `rest` (the path after `labels`) up in a label map; label keys
/// contain dots, so the remaining components are joined back together.
pub fn label_field(labels: &HashMap<String, String>, rest: &[String]) -> Option<String> {
    if rest.is_empty() {
        return None;
    }
    labels.get(&rest.join(".")).cloned()
}

#[derive(Debug, Clone)]
enum Op {
    Present,
    Equal(String),
    NotEqual(String),
    Matches(Regex),
}

#[derive(Debug, Clone)]
struct Selector {
    path: Vec<String>,
    op: Op,
}

impl Selector {
    fn matches(&self, a: &dyn Adaptor) -> bool {
        let v = a.field(&self.path);
        match &self.op {
            Op::Present => v.is_some(),
            Op::Equal(want) => v.as_deref() == Some(want.as_str()),
            Op::NotEqual(want) => v.as_deref() != Some(want.as_str()),
            // As containerd: an absent field is matched as the empty string.
            Op::Matches(re) => re.is_match(v.as_deref().unwrap_or("")),
        }
    }
}

/// A parsed set of filters; matches everything when built from none.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    any: Vec<Vec<Selector>>,
}

impl Filter {
    /// Parses several filters, any of which may match.
    pub fn parse_all<S: AsRef<str>>(filters: &[S]) -> Result<Filter, ParseError> {
        let mut any = Vec::new();
        for f in filters {
            let f = f.as_ref();
            if f.is_empty() {
                // An empty filter matches everything, which makes the set match all.
                return Ok(Filter::default());
            }
            any.push(Parser::new(f).selectors()?);
        }
        Ok(Filter { any })
    }

    /// Parses one filter.
    pub fn parse(filter: &str) -> Result<Filter, ParseError> {
        Self::parse_all(&[filter])
    }

    /// True if the object behind `a` passes.
    pub fn matches(&self, a: &dyn Adaptor) -> bool {
        self.any.is_empty() || self.any.iter().any(|all| all.iter().all(|s| s.matches(a)))
    }
}

struct Parser<'a> {
    input: &'a str,
    chars: Vec<char>,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Self {
        Self {
            input,
            chars: input.chars().collect(),
            pos: 0,
        }
    }

    fn err(&self, msg: impl Into<String>) -> ParseError {
        ParseError {
            input: self.input.to_string(),
            pos: self.pos,
            msg: msg.into(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn selectors(&mut self) -> Result<Vec<Selector>, ParseError> {
        let mut out = vec![self.selector()?];
        loop {
            self.skip_ws();
            match self.peek() {
                None => return Ok(out),
                Some(',') => {
                    self.pos += 1;
                    out.push(self.selector()?);
                }
                Some(c) => return Err(self.err(format!("unexpected input {c:?}"))),
            }
        }
    }

    fn selector(&mut self) -> Result<Selector, ParseError> {
        let mut path = vec![self.field()?];
        while self.peek() == Some('.') {
            self.pos += 1;
            path.push(self.field()?);
        }
        self.skip_ws();
        let op = match self.peek() {
            None | Some(',') => Op::Present,
            Some(_) => {
                let op: String = self.chars[self.pos..].iter().take(2).collect();
                let regex = match op.as_str() {
                    "==" | "!=" => false,
                    "~=" => true,
                    _ => {
                        return Err(self.err(r#"expected an operator ("=="|"!="|"~=")"#));
                    }
                };
                self.pos += 2;
                let value = self.value(regex)?;
                match op.as_str() {
                    "==" => Op::Equal(value),
                    "!=" => Op::NotEqual(value),
                    _ => Op::Matches(
                        Regex::new(&value)
                            .map_err(|e| self.err(format!("bad regular expression: {e}")))?,
                    ),
                }
            }
        };
        Ok(Selector { path, op })
    }

    fn field(&mut self) -> Result<String, ParseError> {
        self.skip_ws();
        if self.peek() == Some('"') {
            return self.quoted('"');
        }
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c == '_' || c.is_ascii_alphanumeric())
        {
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.err("expected a field name or a quoted field"));
        }
        Ok(self.chars[start..self.pos].iter().collect())
    }

    fn value(&mut self, regex: bool) -> Result<String, ParseError> {
        self.skip_ws();
        match self.peek() {
            Some('"') => return self.quoted('"'),
            Some(q @ ('/' | '|')) if regex => return self.quoted(q),
            _ => {}
        }
        let start = self.pos;
        while self.peek().is_some_and(|c| c != ',' && !c.is_whitespace()) {
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.err("expected a value"));
        }
        Ok(self.chars[start..self.pos].iter().collect())
    }

    fn quoted(&mut self, quote: char) -> Result<String, ParseError> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None | Some('\n') => return Err(self.err("quoted literal not terminated")),
                Some(c) if c == quote => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some('\\') => {
                    self.pos += 1;
                    let c = self
                        .peek()
                        .ok_or_else(|| self.err("quoted literal not terminated"))?;
                    match c {
                        'n' => out.push('\n'),
                        't' => out.push('\t'),
                        'r' => out.push('\r'),
                        '\\' => out.push('\\'),
                        c if c == quote => out.push(c),
                        // Keep unknown escapes verbatim: regexes rely on them.
                        c => {
                            out.push('\\');
                            out.push(c);
                        }
                    }
                    self.pos += 1;
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Obj {
        name: String,
        labels: HashMap<String, String>,
    }

    impl Adaptor for Obj {
        fn field(&self, path: &[String]) -> Option<String> {
            match path.first().map(String::as_str) {
                Some("name") if path.len() == 1 => Some(self.name.clone()),
                Some("labels") => label_field(&self.labels, &path[1..]),
                _ => None,
            }
        }
    }

    fn obj() -> Obj {
        Obj {
            name: "docker.io/library/busybox:latest".into(),
            labels: HashMap::from([
                ("foo".into(), "bar".into()),
                ("containerd.io/gc.root".into(), "x".into()),
            ]),
        }
    }

    fn m(f: &[&str]) -> bool {
        Filter::parse_all(f).unwrap().matches(&obj())
    }

    #[test]
    fn selectors() {
        assert!(m(&[]));
        assert!(m(&[""]));
        assert!(m(&["name==docker.io/library/busybox:latest"]));
        assert!(!m(&["name==other"]));
        assert!(m(&["name!=other"]));
        assert!(m(&["name~=busybox"]));
        assert!(m(&["name~=/^docker\\.io/"]));
        assert!(m(&["labels.foo"]));
        assert!(m(&["labels.foo==bar,name~=busy"]));
        assert!(!m(&["labels.foo==bar,name~=^x"]));
        assert!(m(&["labels.\"containerd.io/gc.root\""]));
        assert!(!m(&["labels.containerd.io"]));
        assert!(m(&["labels.nope", "labels.foo == \"bar\""]));
        assert!(!m(&["labels.nope"]));
        // containerd matches a regexp against an absent field's "" value.
        assert!(m(&["labels.nope~=^$"]));
        assert!(!m(&["labels.nope~=."]));
    }

    #[test]
    fn errors_point_at_position() {
        for bad in [
            "name=",
            "name==",
            ".x",
            "name==a b",
            "labels.\"x",
            "name~=(",
        ] {
            let e = Filter::parse(bad).unwrap_err();
            assert!(e.to_string().contains("position"), "{bad}: {e}");
        }
    }
}
